"""Sending queued messages: the emails.deliver task, and an event's own emails after its commit."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from celery import Task, shared_task
from pydantic import BaseModel, ConfigDict

from models.emails import EmailMessage
from models.settings import get_settings
from services.mail.delivery import deliver_claimed, deliver_messages
from services.mail.pause import Pause
from services.mail.queue import DeliverNow
from services.outbox import DELIVER_TASK
from tasks import runtime, shield
from tasks.base import ClientflowTask
from tasks.failures import retry_or_bury
from tasks.retry import backoff_seconds

log = logging.getLogger(__name__)

# After the mail server could not be reached, events stop sending their own emails for this
# long and publish delivery tasks instead: an event must not wait on a server that is away (a
# connect may take the whole SMTP timeout), and the tasks retry with backoff on their queue.
INLINE_PAUSE_SECONDS = 30.0


# Published by our own code, but a message can be hand-published or corrupted: checked, so a
# malformed one is buried with a reason that says so instead of a database error.
class DeliverArguments(BaseModel):
    model_config = ConfigDict(strict=True)

    message_ids: list[str]


@shared_task(name="emails.deliver", bind=True, base=ClientflowTask, max_retries=None)
def deliver(self: Task[..., dict[str, int]], message_ids: list[str]) -> dict[str, int]:
    settings = get_settings()
    try:
        report = deliver_messages(
            DeliverArguments(message_ids=message_ids).message_ids,
            runtime.session_factory(),
            runtime.mail_transport(),
            settings.mail_from,
            max_attempts=settings.email_max_retries + 1,
            critical=shield.uninterruptible,
            reply_to=settings.reply_to or None,
        )
    except Exception as exc:
        retry_or_bury(self, {"message_ids": message_ids}, exc)
    if report.retry:
        # Only the messages still owed go round again. Their rows count the attempts and turn
        # `failed` at the limit, which is what bounds these retries.
        raise self.retry(
            kwargs={"message_ids": report.retry},
            countdown=backoff_seconds(self.request.retries),
            exc=RuntimeError(report.last_error or "transient delivery failure"),
        )
    return {"sent": len(report.sent), "failed": len(report.failed)}


class AfterCommitDelivery:
    """Sends an event's emails in its own task, right after its commit (services.dispatch),
    and an invoice run's batches' in their chunk's task (DeliveryUntil).

    A delivery task would cost a second broker message, a second trip through the worker's
    consumer, an outbox row and a publish per event; sending here saves all of them. Nothing
    owed is lost: the emails were committed claimed by this process, so if it dies before
    sending, their lease runs out and the relay queues them again.
    """

    def __init__(self) -> None:
        # Each pool process has its own (a copy made at fork): its own failures pause it.
        self.pause = Pause(INLINE_PAUSE_SECONDS)

    def ready(self) -> bool:
        return not self.pause.active()

    def __call__(self, messages: list[EmailMessage]) -> None:
        settings = get_settings()
        try:
            report = deliver_claimed(
                messages,
                runtime.session_factory(),
                runtime.mail_transport(),
                settings.mail_from,
                max_attempts=settings.email_max_retries + 1,
                critical=shield.uninterruptible,
                reply_to=settings.reply_to or None,
            )
        except Exception:
            # The event is applied; what was not recorded waits for its lease.
            log.warning("could not deliver an event's emails after its commit", exc_info=True)
            return
        if report.connection_failed:
            self.pause.start()
            log.warning(
                "mail server unreachable (%s): events publish delivery tasks for the next %.0f s",
                report.last_error,
                INLINE_PAUSE_SECONDS,
            )
        if report.retry:
            try:
                # retries=1: the attempt made here counts, as a first run of the task would.
                runtime.publish(
                    DELIVER_TASK,
                    {"message_ids": report.retry},
                    countdown=backoff_seconds(0),
                    retries=1,
                )
            except Exception:
                # Still queued: the relay stages a delivery for forgotten messages.
                log.warning("could not publish the retry of %d emails", len(report.retry))
        log.info(
            "emails of the event: %d sent, %d failed, %d to retry",
            len(report.sent),
            len(report.failed),
            len(report.retry),
        )


deliver_after_commit = AfterCommitDelivery()


@dataclass(frozen=True)
class DeliveryUntil:
    """A DeliverNow that is ready only until `deadline` (time.monotonic()), for a task with a
    time limit that sends what it commits batch after batch (an invoice run's chunk).

    The sending takes what the mail server takes, which the task cannot bound: past the
    deadline, half its soft time limit, its batches stage delivery tasks instead, so a slow
    server makes the run's mail go out through the emails queue rather than push the chunk
    past its limits.
    """

    deliver_now: DeliverNow
    deadline: float | None  # None: no time limit

    @classmethod
    def within(cls, deliver_now: DeliverNow, soft_time_limit: float | None) -> DeliveryUntil:
        if not soft_time_limit:
            return cls(deliver_now, None)
        return cls(deliver_now, time.monotonic() + soft_time_limit / 2)

    def ready(self) -> bool:
        in_time = self.deadline is None or time.monotonic() < self.deadline
        return in_time and self.deliver_now.ready()

    def __call__(self, messages: list[EmailMessage]) -> None:
        self.deliver_now(messages)
