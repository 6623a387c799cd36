"""Workers online, asked through Celery's inspect API: their queues, running and held tasks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery import Celery

from workers.ops.snapshot import ActiveTask, WorkerState

INSPECT_TIMEOUT = 1.0


@dataclass(frozen=True)
class WorkersSeen:
    workers: list[WorkerState]
    # ETA/countdown tasks held by the workers, counted by the queue they came from.
    scheduled_by_queue: Counter[str] = field(default_factory=Counter)


def ping(app: Celery, timeout: float = INSPECT_TIMEOUT) -> list[str]:
    """Names of the workers that answer within timeout (a broadcast waits the whole time)."""
    replies = app.control.ping(timeout=timeout) or []
    return sorted({name for reply in replies for name in reply})


def inspect_workers(app: Celery, timeout: float = INSPECT_TIMEOUT) -> WorkersSeen:
    names = ping(app, timeout)
    if not names:
        return WorkersSeen([])
    # Knowing who answered, the next broadcasts return as soon as all of them replied.
    inspector = app.control.inspect(destination=names, timeout=timeout, limit=len(names))
    queues: dict[str, Any] = inspector.active_queues() or {}
    active: dict[str, Any] = inspector.active() or {}
    scheduled: dict[str, Any] = inspector.scheduled() or {}
    by_queue: Counter[str] = Counter()
    for entries in scheduled.values():
        for entry in entries:
            info = entry.get("request", {}).get("delivery_info") or {}
            by_queue[str(info.get("routing_key", "?"))] += 1
    workers = [
        WorkerState(
            name=name,
            queues=sorted(q["name"] for q in queues.get(name, [])),
            active=[_active_task(task) for task in active.get(name, [])],
            scheduled=len(scheduled.get(name, [])),
        )
        for name in names
    ]
    return WorkersSeen(workers, by_queue)


def _active_task(task: dict[str, Any]) -> ActiveTask:
    kwargs = task.get("kwargs")
    event_id = kwargs.get("event_id") if isinstance(kwargs, dict) else None
    started = task.get("time_start")
    if not isinstance(started, int | float):
        started = None
    return ActiveTask(
        id=str(task.get("id")),
        name=str(task.get("name")),
        event_id=event_id if isinstance(event_id, str) else None,
        started_at=None if started is None else datetime.fromtimestamp(started, UTC),
    )
