"""Build the Snapshot from the broker, the workers and the database.

Each source is asked on its own: when one is down, its parts are None and `problems` says why,
so on call still sees everything else (a status command that crashes is no use in an outage).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from celery import Celery
from sqlalchemy.exc import SQLAlchemyError

from models.base import utcnow
from models.settings import get_settings
from services.db import SessionFactory
from workers.ops import stats, storage, tables
from workers.ops.celery_workers import INSPECT_TIMEOUT, WorkersSeen, inspect_workers
from workers.ops.queues import QueueReading, age_seconds, read_queues
from workers.ops.snapshot import QueueState, Snapshot

# Statuses of a scheduled run that did not finish its work.
FAILED_RUN = ("failed", "abandoned")


def build_snapshot(
    app: Celery, session_factory: SessionFactory, *, inspect_timeout: float = INSPECT_TIMEOUT
) -> Snapshot:
    problems: list[str] = []
    readings: list[QueueReading] | None = None
    seen: WorkersSeen | None = None
    try:
        # The workers first: a ping waits out its whole timeout. The queues and the database
        # are then read within moments of taken_at, so their figures agree with each other.
        seen = inspect_workers(app, inspect_timeout)
        readings = read_queues(app)
    except Exception as exc:  # any transport error: report it, show the rest
        problems.append(f"broker: {_first_line(exc)}")
    missing = [r.name for r in readings or [] if r.depth is None]
    if missing:
        # RabbitMQ drops what is published to a queue that does not exist yet.
        problems.append(
            f"broker: no queue {', '.join(missing)} yet: start a worker, which declares them"
        )
    taken_at = utcnow()
    parts: dict[str, Any] = {}
    try:
        with session_factory() as session:
            parts = {
                "tasks_last_hour": stats.last_hour(session, taken_at),
                "dead_letters": tables.dead_letters(session),
                "rejected_events": tables.rejected_events(session),
                "emails": tables.email_counts(session),
                "last_invoice_run": tables.last_run(session),
                "tables": storage.table_sizes(session, get_settings()),
            }
    except SQLAlchemyError as exc:
        problems.append(f"database: {_first_line(exc)}")
    return Snapshot(
        taken_at=taken_at,
        broker=app.connection_for_read().as_uri(),
        queues=_queue_states(app, readings, seen, taken_at.timestamp()),
        workers=None if seen is None else seen.workers,
        tasks_last_hour=parts.get("tasks_last_hour"),
        dead_letters=parts.get("dead_letters"),
        rejected_events=parts.get("rejected_events"),
        emails=parts.get("emails"),
        last_invoice_run=parts.get("last_invoice_run"),
        tables=parts.get("tables"),
        problems=problems,
    )


def unhealthy(snapshot: Snapshot) -> list[str]:
    """Why `ops status` exits 1, one reason each; empty when healthy.

    Unhealthy: the broker or the database could not be asked (down, refused, not migrated),
    the broker answered and no worker did, a dead letter waits to be replayed or purged, or
    the newest invoice run failed or was abandoned. Failed emails are not counted: the message
    log keeps them failed for good, so the exit status would never recover.
    """
    reasons = list(snapshot.problems)
    if snapshot.workers == []:
        reasons.append("no worker online")
    letters = snapshot.dead_letters
    if letters is not None and letters.not_replayed:
        reasons.append(f"{letters.not_replayed} dead letter(s) not replayed")
    run = snapshot.last_invoice_run
    if run is not None and run.status in FAILED_RUN:
        reasons.append(f"the last invoice run {run.status}")
    return reasons


def _queue_states(
    app: Celery, readings: list[QueueReading] | None, seen: WorkersSeen | None, now: float
) -> list[QueueState]:
    scheduled: Counter[str] = Counter()
    if seen is not None:
        for name, queue in app.amqp.queues.items():
            scheduled[name] = seen.scheduled_by_queue.get(queue.routing_key, 0)
    if readings is None:
        return [
            QueueState(name=name, depth=None, oldest_age_seconds=None, unacked=None, scheduled=None)
            for name in sorted(app.amqp.queues)
        ]
    return [
        QueueState(
            name=r.name,
            depth=r.depth,
            oldest_age_seconds=_rounded(age_seconds(r.oldest_published_at, now)),
            unacked=r.unacked,
            scheduled=None if seen is None else scheduled[r.name],
        )
        for r in readings
    ]


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__
    return text.splitlines()[0]
