"""Task outcomes counted per minute in task_stats: what every worker writes (ops reads them:
workers/ops/stats.py)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.base import utcnow
from models.ops import TaskStat
from services.db import SessionFactory
from services.dispatch import Outcome

OUTCOMES = ("succeeded", "rejected", "failed", "retried")
# Celery's final state of one run of a task -> our outcome; other states are not counted.
OUTCOME_OF_STATE = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried"}


def outcome_of(state: str | None, result: object) -> str | None:
    """Our outcome of one finished task run, or None for states not counted.

    An event task that refused its event (recorded in rejected_events) returns
    Outcome.REJECTED; Celery calls that a success, but on call 'succeeded' should mean the
    change was made.
    """
    outcome = OUTCOME_OF_STATE.get(state or "")
    if outcome == "succeeded" and result == Outcome.REJECTED:
        return "rejected"
    return outcome


# The bucket that holds every compacted minute: one all-time row per task and outcome.
ALL_EARLIER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Count:
    """Runs of one task with one outcome in one minute, and their summed runtime."""

    runs: int = 0
    runtime: float = 0.0

    def merge(self, other: Count) -> None:
        self.runs += other.runs
        self.runtime += other.runtime


def record_outcome(
    session_factory: SessionFactory,
    task_name: str,
    outcome: str,
    runtime_seconds: float,
    at: datetime | None = None,
) -> None:
    """Add one run to its minute's counter (what a worker's OutcomeBuffer does in bulk)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    bucket = (at or utcnow()).replace(second=0, microsecond=0)
    record_outcomes(session_factory, {(bucket, task_name[:64], outcome): Count(1, runtime_seconds)})


def record_outcomes(
    session_factory: SessionFactory, counts: dict[tuple[datetime, str, str], Count]
) -> None:
    """Add runs to their minutes' counters in one transaction: upserts, so concurrent workers
    never lose one (sorted, so two workers' transactions take the rows in the same order)."""
    with session_factory() as session:
        for (bucket, task_name, outcome), count in sorted(counts.items()):
            _add(session, bucket, task_name, outcome, count.runs, count.runtime)
        session.commit()


def _add(
    session: Session, bucket: datetime, task_name: str, outcome: str, count: int, runtime: float
) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(TaskStat).values(
        bucket=bucket, task_name=task_name, outcome=outcome, count=count, runtime_total=runtime
    )
    statement = statement.on_conflict_do_update(
        index_elements=["bucket", "task_name", "outcome"],
        set_={
            "count": TaskStat.count + statement.excluded.count,
            "runtime_total": TaskStat.runtime_total + statement.excluded.runtime_total,
        },
    )
    session.execute(statement)


def compact(session_factory: SessionFactory, keep: timedelta, now: datetime | None = None) -> int:
    """Fold the minutes older than `keep` into the all-time row of each task and outcome.

    Without it task_stats grows by a row per task, outcome and minute forever. The all-time
    sums (what the Prometheus counters read) stay the same, so no counter ever goes down;
    only per-minute detail older than `keep` is gone. The rows are deleted first and summed
    from what the delete returned, so two compactions at once cannot count a minute twice
    (the second waits on the first's row locks, then finds those rows gone).
    Returns the number of minute rows folded.
    """
    cutoff = (now or utcnow()).replace(second=0, microsecond=0) - keep
    with session_factory() as session:
        folded = session.execute(
            delete(TaskStat)
            .where(TaskStat.bucket < cutoff, TaskStat.bucket > ALL_EARLIER)
            .returning(TaskStat.task_name, TaskStat.outcome, TaskStat.count, TaskStat.runtime_total)
        ).all()
        counts: dict[tuple[str, str], int] = defaultdict(int)
        runtimes: dict[tuple[str, str], float] = defaultdict(float)
        for task_name, outcome, count, runtime in folded:
            counts[(task_name, outcome)] += count
            runtimes[(task_name, outcome)] += runtime
        for key in sorted(counts):
            _add(session, ALL_EARLIER, *key, counts[key], runtimes[key])
        session.commit()
    return len(folded)
