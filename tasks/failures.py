"""What a task does when it fails: retry what is transient, bury the rest as a dead letter."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn

from celery import Task
from pydantic import ValidationError

from models.settings import get_settings
from services.dead_letters import error_entry, record_dead_letter
from services.rejections import describe_validation_error
from tasks import runtime
from tasks.retry import backoff_seconds, is_transient

# Errors of earlier attempts ride along in a message header, so the dead letter can show every
# one of them even when each attempt ran on a different worker.
ERRORS_HEADER = "clientflow_errors"


def retry_or_bury(
    task: Task[..., Any],
    kwargs: dict[str, Any],
    exc: Exception,
    give_up: Callable[[str], object] | None = None,
) -> NoReturn:
    """Retry a transient failure with backoff; bury anything else, or a failure past its
    retries, as a dead letter with its reason, after telling `give_up` that reason (what
    the task leaves behind records that it gave up: an invoice run's chunk, failed)."""
    request = task.request
    errors = [*json.loads(request.get(ERRORS_HEADER) or "[]"), error_entry(exc)]
    limit = get_settings().event_max_retries
    if is_transient(exc) and request.retries < limit:
        raise task.retry(
            exc=exc,
            countdown=backoff_seconds(request.retries),
            max_retries=limit,
            headers={ERRORS_HEADER: json.dumps(errors)},
        ) from exc
    if isinstance(exc, ValidationError):
        # Our own tasks' arguments, malformed (a hand-published or corrupted message).
        reason = describe_validation_error(exc, "invalid arguments, not retried")
    elif is_transient(exc):
        reason = f"gave up after {request.retries + 1} attempts: {errors[-1]['error']}"
    else:
        reason = f"unexpected error, not retried: {errors[-1]['error']}"
    try:
        if give_up is not None:
            give_up(reason)
        record_dead_letter(
            runtime.session_factory(),
            task_name=str(task.name),
            task_id=request.id,
            kwargs=kwargs,
            errors=errors,
            reason=reason,
        )
    except Exception as store_error:
        # The store itself is away (often the very outage that exhausted the retries). Keep
        # the message alive instead of acknowledging it into nothing; give_up is told again
        # when it next gives up, and what it records must bear that.
        raise task.retry(
            exc=store_error,
            countdown=get_settings().retry_backoff_max,
            max_retries=None,
            headers={ERRORS_HEADER: json.dumps(errors)},
        ) from store_error
    raise exc
