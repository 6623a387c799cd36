"""emails.deliver: send a batch of queued messages from the log over one connection."""

from __future__ import annotations

from celery import Task
from pydantic import BaseModel, ConfigDict

from services.mail.delivery import deliver_messages
from tasks.failures import retry_or_bury
from tasks.retry import backoff_seconds
from workers import runtime, shield
from workers.app import app
from workers.settings import get_settings


# Published by our own code, but a message can be hand-published or corrupted: checked, so a
# malformed one is buried with a reason that says so instead of a database error.
class DeliverArguments(BaseModel):
    model_config = ConfigDict(strict=True)

    message_ids: list[str]


@app.task(name="emails.deliver", bind=True, max_retries=None)
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
