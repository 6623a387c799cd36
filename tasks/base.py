"""The one task base: the time limits every clientflow task runs under, and what becomes of a
task killed at its hard limit.

The rest of the task policy is in one place each and applies to every task through it:
retry-or-bury (tasks/failures.py, which the tasks call with their arguments), the backoff
(tasks/retry.py, where a soft time limit counts as transient), the SIGTERM and soft-limit hold
around an SMTP acceptance (tasks/shield.py), and the log context and outcome counting
(workers/telemetry, on Celery's signals for every task).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from billiard.einfo import ExceptionInfo
from billiard.exceptions import TimeLimitExceeded
from celery import Task

from models.settings import get_settings
from services.dead_letters import error_entry, record_dead_letter
from tasks import runtime

log = logging.getLogger(__name__)


class ClientflowTask(Task):  # type: ignore[type-arg]  # (the task's signature varies)
    """Soft and hard time limits from settings, unless a task kind says it has none.

    At the soft limit the task gets SoftTimeLimitExceeded and is retried (tasks/retry.py);
    at the hard limit billiard kills its pool process and Celery acknowledges its message
    (task_acks_on_failure_or_timeout), so this records it as a dead letter first: it must not
    vanish, and it is not retried on its own, as it may hang the same way again. A task kind
    whose records must say it gave up (an invoice run's chunk, failed) does so in gave_up.
    """

    # False for a task whose length is the data's (UnboundedTask).
    limited: ClassVar[bool] = True

    @property
    def soft_time_limit(self) -> float | None:  # type: ignore[override]
        return (get_settings().task_soft_time_limit or None) if self.limited else None

    @property
    def time_limit(self) -> float | None:  # type: ignore[override]
        return (get_settings().task_time_limit or None) if self.limited else None

    def on_failure(
        self,
        exc: Exception,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        # Other failures were buried by the task itself (retry_or_bury); a hard time limit
        # is seen only here, in the worker's main process, once the pool process is gone.
        if not isinstance(exc, TimeLimitExceeded):
            return
        reason = (
            f"hard time limit ({exc.args[0] if exc.args else '?'} s) exceeded: the pool "
            "process was killed and the task is not retried, as it may hang again; replay "
            "it once the cause is fixed (an event applied before the limit is then a "
            "duplicate and changes nothing)"
        )
        try:
            self.gave_up(dict(kwargs or {}), reason)
        except Exception:
            # The dead letter matters more: it is recorded all the same. What gave_up did not
            # record is found later (an invoice run's chunk left pending: its run abandoned).
            log.exception("%s[%s] gave up at its hard time limit, unrecorded", self.name, task_id)
        record_dead_letter(
            runtime.session_factory(),
            task_name=str(self.name),
            task_id=task_id,
            kwargs=dict(kwargs or {}),
            errors=[error_entry(exc)],
            reason=reason,
        )

    def gave_up(self, kwargs: dict[str, Any], reason: str) -> None:
        """Record, in what the task leaves behind, that it gave up for `reason` (what
        retry_or_bury's give_up does for a task that gives up by itself): here, once its pool
        process was killed at the hard time limit. Nothing by default."""


class UnboundedTask(ClientflowTask):
    """No time limits: invoices.run goes on batch by batch, each committed, for as long as the
    data takes; a run that stops moving is found by its heartbeat (services/invoice_run)."""

    limited = False
