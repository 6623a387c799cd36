"""What ops read: outcomes of tasks per minute, and every scheduled run with its counts."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, Float, Integer, String, Text
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
    # Moved on by every committed batch; a `running` row whose heartbeat stopped long ago
    # belongs to a worker that died.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
