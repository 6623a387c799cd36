"""ops.housekeeping (run by beat, hourly): keep ops' own records small and truthful."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task

from models.settings import get_settings
from services.invoice_run.run import abandon_stale_runs
from services.task_stats import compact
from tasks import runtime


@shared_task(name="ops.housekeeping")
def housekeeping() -> dict[str, int]:
    """Fold old per-minute task counters; mark runs whose worker died as abandoned."""
    sessions = runtime.session_factory()
    keep = timedelta(hours=get_settings().task_stats_keep_hours)
    return {
        "task_stat_minutes_folded": compact(sessions, keep=keep),
        "runs_abandoned": abandon_stale_runs(sessions),
    }
