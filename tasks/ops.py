"""ops.housekeeping (run by beat, hourly): keep ops' records truthful and every table within
its retention."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task

from models.settings import get_settings
from services.invoice_run.run import abandon_stale_runs
from services.retention import Retention, prune
from services.task_stats import compact
from tasks import runtime
from tasks.base import ClientflowTask


def _days(days: float) -> timedelta | None:
    return timedelta(days=days) if days > 0 else None  # 0: kept for ever


@shared_task(name="ops.housekeeping", base=ClientflowTask)
def housekeeping() -> dict[str, int]:
    """Fold old per-minute task counters; mark runs whose worker died as abandoned; prune
    what is past its retention."""
    sessions = runtime.session_factory()
    settings = get_settings()
    retention = Retention(
        processed_events=_days(settings.processed_events_keep_days),
        email_bodies=_days(settings.email_bodies_keep_days),
        rejected_events=_days(settings.rejected_events_keep_days),
        audit_events=_days(settings.audit_keep_days),
        scheduled_runs=_days(settings.scheduled_runs_keep_days),
    )
    return {
        "task_stat_minutes_folded": compact(
            sessions, keep=timedelta(hours=settings.task_stats_keep_hours)
        ),
        "runs_abandoned": abandon_stale_runs(sessions),
        **prune(sessions, retention),
    }
