"""Task outcomes counted per minute in task_stats, as ops reads them (services.task_stats
writes them)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.base import utcnow
from models.ops import TaskStat
from services.task_stats import OUTCOMES
from workers.ops.snapshot import TaskOutcomes


def outcomes_since(session: Session, since: datetime) -> list[TaskOutcomes]:
    """Per task name: runs by outcome since `since`, and mean runtime."""
    rows = session.execute(
        select(
            TaskStat.task_name,
            TaskStat.outcome,
            func.sum(TaskStat.count),
            func.sum(TaskStat.runtime_total),
        )
        .where(TaskStat.bucket >= since.replace(second=0, microsecond=0))
        .group_by(TaskStat.task_name, TaskStat.outcome)
    ).all()
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    runtime: dict[str, float] = defaultdict(float)
    for task_name, outcome, count, total in rows:
        if outcome in OUTCOMES:
            counts[task_name][outcome] += int(count)
            runtime[task_name] += float(total)
    return [
        TaskOutcomes(
            task_name=name,
            **by_outcome,
            runtime_avg_seconds=round(runtime[name] / max(1, sum(by_outcome.values())), 6),
        )
        for name, by_outcome in sorted(counts.items())
    ]


def last_hour(session: Session, now: datetime | None = None) -> list[TaskOutcomes]:
    return outcomes_since(session, (now or utcnow()) - timedelta(hours=1))


@dataclass(frozen=True)
class OutcomeTotal:
    task_name: str
    outcome: str
    count: int
    runtime_seconds: float


def outcome_totals(session: Session) -> list[OutcomeTotal]:
    """All-time sums per task and outcome: what Prometheus counters need (they only grow)."""
    rows = session.execute(
        select(
            TaskStat.task_name,
            TaskStat.outcome,
            func.sum(TaskStat.count),
            func.sum(TaskStat.runtime_total),
        )
        .group_by(TaskStat.task_name, TaskStat.outcome)
        .order_by(TaskStat.task_name, TaskStat.outcome)
    ).all()
    return [OutcomeTotal(name, outcome, int(n), float(total)) for name, outcome, n, total in rows]
