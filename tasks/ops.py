"""ops.housekeeping (run by beat, hourly): keep ops' own records small and truthful."""

from __future__ import annotations

from datetime import timedelta

from services.invoice_run.run import abandon_stale_runs
from workers import runtime
from workers.app import app
from workers.ops.stats import compact
from workers.settings import get_settings


@app.task(name="ops.housekeeping")
def housekeeping() -> dict[str, int]:
    """Fold old per-minute task counters; mark runs whose worker died as abandoned."""
    sessions = runtime.session_factory()
    keep = timedelta(hours=get_settings().task_stats_keep_hours)
    return {
        "task_stat_minutes_folded": compact(sessions, keep=keep),
        "runs_abandoned": abandon_stale_runs(sessions),
    }
