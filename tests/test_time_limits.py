"""Time limits (tasks/base.py): from settings on every task but the invoice run, a soft limit
retried, a hard limit recorded as a dead letter instead of acknowledged into nothing."""

from __future__ import annotations

import payloads
import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError
from smtp_sink import SmtpSink
from sqlalchemy import select
from sqlalchemy.orm import Session
from worker_process import WorkerProcess, worker_fixture

from models import DeadLetter
from models.emails import EmailMessage, EmailStatus
from models.settings import Settings, get_settings
from tasks.emails import deliver
from tasks.events import EVENT_TASKS
from tasks.invoices import run as invoice_run
from tasks.retry import is_transient


def test_every_task_but_the_invoice_run_has_the_limits_of_the_settings() -> None:
    settings = get_settings()
    for task in [*EVENT_TASKS.values(), deliver]:
        assert (task.soft_time_limit, task.time_limit) == (
            settings.task_soft_time_limit,
            settings.task_time_limit,
        ), task.name
    assert (invoice_run.soft_time_limit, invoice_run.time_limit) == (None, None)


def test_a_soft_limit_not_below_the_hard_one_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be below task_time_limit"):
        Settings(task_soft_time_limit=300, task_time_limit=300)


# One pool process with short limits; the SMTP server holds its reply to DATA past them.
worker = worker_fixture(
    concurrency=1,
    extra_settings={"task_soft_time_limit": "1", "task_time_limit": "2"},
)


@pytest.mark.worker
def test_a_task_past_its_hard_limit_is_a_dead_letter_and_the_worker_goes_on(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    worker.publish("clients.add", payloads.client("C1", send_welcome=False))
    worker.wait_applied()
    with worker.sessions() as session:
        message = EmailMessage(
            id="slow-1", idempotency_key="k" * 64, event_id="E-slow", client_id="C1",
            template="general_announcement", category="general", to_address="a@example.com",
            to_name="Ada", subject="Hello", body_text="Hi", body_html="<p>Hi</p>",
            status=EmailStatus.QUEUED, attempts=0,
        )  # fmt: skip
        session.add(message)
        session.commit()
    smtp.data_delay = 6.0  # past the hard limit (2 s): the soft one (1 s) is held by the shield
    worker.publish("emails.deliver", {"message_ids": ["slow-1"]})

    def letter(session: Session) -> DeadLetter | None:
        return session.scalars(select(DeadLetter)).first()

    found = worker.wait_for_db(letter, "the killed delivery's dead letter", timeout=60)
    assert found is not None
    assert found.task_name == "emails.deliver"
    assert found.kwargs == {"message_ids": ["slow-1"]}
    assert found.reason.startswith("hard time limit (2.0 s) exceeded: the pool process was killed")
    assert "Hard time limit (2.0s) exceeded for emails.deliver" in worker.log_text()

    # The worker replaced the pool process and takes the next event.
    smtp.data_delay = 0.0
    worker.publish("clients.add", payloads.client("C2", email="c2@example.com"))
    assert smtp.wait_for(1)
    assert worker.alive


def test_a_task_stopped_at_its_soft_limit_is_retried() -> None:
    assert is_transient(SoftTimeLimitExceeded())
