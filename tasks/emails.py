"""emails.deliver: send a batch of queued messages from the log over one connection."""

from __future__ import annotations

from celery import Task

from services.mail.delivery import deliver_messages
from tasks.retry import backoff_seconds, is_transient
from workers import runtime
from workers.app import app
from workers.settings import get_settings


@app.task(name="emails.deliver", bind=True, max_retries=None)
def deliver(self: Task[..., dict[str, int]], message_ids: list[str]) -> dict[str, int]:
    settings = get_settings()
    try:
        report = deliver_messages(
            message_ids,
            runtime.session_factory(),
            runtime.mail_transport(),
            settings.mail_from,
            max_attempts=settings.email_max_retries + 1,
        )
    except Exception as exc:
        # The rows bound SMTP retries; this bounds retries of a database that is away.
        if is_transient(exc) and self.request.retries < settings.event_max_retries:
            raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
        raise
    if report.retry:
        # Only the messages still owed go round again; the sent ones are done.
        raise self.retry(
            kwargs={"message_ids": report.retry},
            countdown=backoff_seconds(self.request.retries),
            exc=RuntimeError(report.last_error or "transient delivery failure"),
        )
    return {"sent": len(report.sent), "failed": len(report.failed)}
