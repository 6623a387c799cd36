"""The one picture of the system that `ops status` prints and `ops status --json` emits.

These models are the documented JSON contract (docs/operations.md, "ops status --json"): add
fields only with a new `version`, never rename one.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION: Literal[1] = 1


class Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class QueueState(Part):
    name: str
    # Messages waiting in the broker; None when the broker could not be asked.
    depth: int | None
    # Age of the oldest waiting message; None when the queue is empty, the broker could not be
    # asked, or the message carries no publish time (see queues.PUBLISHED_AT_HEADER).
    oldest_age_seconds: float | None
    # Delivered to a worker and not yet acknowledged: running, prefetched, or held until its
    # ETA. None where the transport does not say (the filesystem broker).
    unacked: int | None
    # Held by a worker until their ETA/countdown (retries with backoff); None without workers.
    scheduled: int | None


class ActiveTask(Part):
    id: str
    name: str
    event_id: str | None
    started_at: datetime | None


class WorkerState(Part):
    name: str
    queues: list[str]
    active: list[ActiveTask]
    scheduled: int


class TaskOutcomes(Part):
    task_name: str
    succeeded: int
    rejected: int
    failed: int
    retried: int
    runtime_avg_seconds: float | None


class ReasonCount(Part):
    reason: str
    count: int
    last_at: datetime


class DeadLetterSummary(Part):
    total: int
    not_replayed: int
    by_reason: list[ReasonCount]


class RejectedSummary(Part):
    total: int
    # Refused because the client or contact they name had not arrived yet, and not released.
    waiting: int
    by_reason: list[ReasonCount]


class EmailCounts(Part):
    queued: int
    sending: int
    sent: int
    failed: int


class ScheduledRunState(Part):
    name: str
    run_date: date | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, Any]
    error: str | None


class TableSize(Part):
    table: str
    # PostgreSQL: its estimate (pg_class.reltuples: exact after ANALYZE, close otherwise).
    rows: int
    # With indexes and TOAST; None where the database cannot say (SQLite).
    bytes: int | None
    # How long retention keeps its rows ("90 days", "for ever").
    kept: str


class Snapshot(Part):
    version: Literal[1] = SCHEMA_VERSION
    taken_at: datetime
    broker: str
    queues: list[QueueState]
    # None when the broker could not be asked; [] when it answered and no worker did.
    workers: list[WorkerState] | None
    tasks_last_hour: list[TaskOutcomes] | None
    dead_letters: DeadLetterSummary | None
    rejected_events: RejectedSummary | None
    emails: EmailCounts | None
    last_invoice_run: ScheduledRunState | None
    tables: list[TableSize] | None = None
    # Why a part above is None, one line each; empty when everything answered.
    problems: list[str]
