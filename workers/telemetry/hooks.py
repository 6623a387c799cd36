"""Celery signal handlers that feed ops: publish times, task outcome counts, log context.

workers/app.py imports this module, so every process using the app has them: publishers
stamp their messages, workers count each task run and label their log lines.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, signals

from models.settings import get_settings
from services.task_stats import outcome_of
from tasks import runtime
from workers.ops.queues import PUBLISHED_AT_HEADER
from workers.telemetry import json_logs
from workers.telemetry.outcome_buffer import OutcomeBuffer

# A task published while another runs (an event's email delivery) inherits its event id,
# so the delivery's log lines can be found by the event that caused them.
EVENT_ID_HEADER = "clientflow_event_id"

log = logging.getLogger(__name__)
_started: dict[str, float] = {}
# This process's task outcomes, written to task_stats about once a second (not per task).
_outcomes = OutcomeBuffer(runtime.session_factory)


@signals.before_task_publish.connect
def _stamp_message(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    headers[PUBLISHED_AT_HEADER] = time.time()
    context = json_logs.current()
    if context is not None and context.event_id and EVENT_ID_HEADER not in headers:
        headers[EVENT_ID_HEADER] = context.event_id


@signals.task_prerun.connect
def _task_started(
    task_id: str, task: Task[..., Any], kwargs: dict[str, Any] | None = None, **_: Any
) -> None:
    _started[task_id] = time.monotonic()
    event_id = (kwargs or {}).get("event_id") or task.request.get(EVENT_ID_HEADER)
    json_logs.enter_task(
        json_logs.TaskContext(task.name, task_id, event_id if isinstance(event_id, str) else None)
    )


@signals.task_postrun.connect
def _task_finished(
    task_id: str,
    task: Task[..., Any],
    state: str | None = None,
    retval: object = None,
    **_: Any,
) -> None:
    started = _started.pop(task_id, None)
    outcome = outcome_of(state, retval)
    try:
        if outcome is not None and started is not None:
            _outcomes.add(str(task.name), outcome, time.monotonic() - started)
    finally:
        json_logs.leave_task()


def count_outcome(task_name: str, outcome: str, runtime_seconds: float) -> None:
    """Count a task run that Celery did not trace (an event applied in a batch)."""
    _outcomes.add(task_name, outcome, runtime_seconds)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _write_counted_outcomes(**_: Any) -> None:
    _outcomes.flush()


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _json_log_lines(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None and get_settings().log_format == "json":
        json_logs.use_json(logger)


@signals.celeryd_after_setup.connect
def _no_banner_in_json(instance: Any = None, **_: Any) -> None:
    # The startup banner is plain text printed past logging; with JSON configured, every
    # line must be JSON (the "<worker> ready." log line still marks the start).
    if instance is not None and get_settings().log_format == "json":
        instance.quiet = True
