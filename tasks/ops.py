"""ops.compact_task_stats (run by beat): keep the per-minute task counters from growing forever."""

from __future__ import annotations

from datetime import timedelta

from workers import runtime
from workers.app import app
from workers.ops.stats import compact
from workers.settings import get_settings


@app.task(name="ops.compact_task_stats")
def compact_task_stats() -> int:
    hours = get_settings().task_stats_keep_hours
    return compact(runtime.session_factory(), keep=timedelta(hours=hours))
