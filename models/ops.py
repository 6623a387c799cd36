"""What ops read: outcomes of tasks per minute, and every scheduled run with its counts and
the chunks it was split into."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class TaskStat(Base):
    """Task outcomes counted per minute and task name, so any worker can add to them and
    `clientflow ops status` can sum the last hour without a metrics server."""

    __tablename__ = "task_stats"

    bucket: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    task_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # succeeded | failed | retried
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    runtime_total: Mapped[float] = mapped_column(Float, default=0.0)


class ScheduledRun(Base):
    """One run of a scheduled job (e.g. the invoice run): when, how it ended, what it did."""

    __tablename__ = "scheduled_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    run_date: Mapped[date | None] = mapped_column(Date)
    # running | succeeded | failed | abandoned (no progress for long: its worker was lost)
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Moved on by the run's start and by every chunk that ends (its chunks' own heartbeats
    # move with every batch); a `running` row whose heartbeats all stopped long ago lost its
    # workers.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class ScheduledRunChunk(Base):
    """One part of a run that any worker takes as a task of its own: a keyset range of ids in
    one pass of the run, and what its batches did there.

    The key (run, phase, seq) makes a chunk's record one row however often its task is
    delivered: each batch adds its counts to this row in the batch's own transaction, so a
    redelivered or retried chunk adds only what it did itself. The run's counts are the sum
    of its chunks', added to the run as each chunk ends (services/invoice_run/fan_in.py).
    """

    __tablename__ = "scheduled_run_chunks"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("scheduled_runs.id", ondelete="CASCADE"), primary_key=True
    )
    # The pass the range belongs to: generate (service ids) | notify (invoice ids).
    phase: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The range: ids above after_id ("" for the first chunk) up to through_id included (None
    # for the last, which takes whatever lies beyond the plan's last id).
    after_id: Mapped[str] = mapped_column(String(96))
    through_id: Mapped[str | None] = mapped_column(String(96))
    # pending | done | failed (its task gave up: error says why)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What its batches added to `counts` that its run's counts do not have yet: each batch
    # adds to both, and the chunk's end moves this into the run's counts and empties it, so a
    # run is added to once per chunk end instead of summed again from all its chunks.
    unfolded: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Moved on by every committed batch of the chunk.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
