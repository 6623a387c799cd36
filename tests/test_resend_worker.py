"""`clientflow emails resend` and `emails retry --failed`, run as the command, delivered by a
real worker over Redis to the SMTP sink."""

from __future__ import annotations

import email.message
import subprocess
from collections.abc import Callable
from pathlib import Path

import payloads
import pytest
from smtp_sink import SmtpSink
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_cli import run_cli
from worker_process import WorkerProcess, shared_smtp_fixture, shared_worker_fixture

from models.emails import EmailMessage, EmailStatus

pytestmark = pytest.mark.worker

# Both tests publish to a running worker: they share one, reset between them.
worker = shared_worker_fixture()
smtp = shared_smtp_fixture()


def clientflow(worker: WorkerProcess, tmp_path: Path, *args: str) -> str:
    """`clientflow ARGS` on the worker's broker and database; its stdout."""
    result: subprocess.CompletedProcess[str] = run_cli(
        tmp_path, *args, database_url=worker.database_url, broker_url=worker.broker_url
    )
    return result.stdout


def all_in(status: str, template: str, count: int) -> Callable[[Session], list[EmailMessage]]:
    """A wait_for_db query: the template's emails, oldest first, once there are `count` and
    all are in `status`."""

    def check(session: Session) -> list[EmailMessage]:
        query = select(EmailMessage).where(EmailMessage.template == template)
        rows = list(session.scalars(query.order_by(EmailMessage.created_at)))
        return rows if len(rows) == count and all(m.status == status for m in rows) else []

    return check


def text_part(message: email.message.EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_a_resent_invoice_email_is_delivered_again_as_a_new_message(
    worker: WorkerProcess, smtp: SmtpSink, tmp_path: Path
) -> None:
    add = payloads.client("C1", send_welcome=False)
    invoice = payloads.invoice("I1")
    payment = payloads.payment("I1", "1215.59")
    for task, payload in [("clients.add", add), ("invoices.upsert", invoice),
                          ("invoices.record_payment", payment)]:  # fmt: skip
        worker.publish(task, payload)
        worker.wait_applied(payload["event_id"])
    [first] = smtp.wait_for(1)
    [original] = worker.wait_for_db(
        all_in("sent", "invoice_payment_confirmation", 1), "the payment confirmation sent"
    )

    output = clientflow(worker, tmp_path, "emails", "resend", original.id, "--key", "call-17")
    again = clientflow(worker, tmp_path, "emails", "resend", original.id, "--key", "call-17")

    assert "queued, delivery published" in output
    assert "was already resent with this key" in again
    [_, second] = smtp.wait_for(2)
    rows = worker.wait_for_db(
        all_in("sent", "invoice_payment_confirmation", 2), "the resend sent"
    )
    worker.wait_idle()
    assert len(smtp.messages) == 2, "the same key twice sends once"
    copy = next(row for row in rows if row.id != original.id)
    assert (copy.status, copy.attempts, copy.resend_of) == (EmailStatus.SENT, 1, original.id)
    old, new = first.message, second.message
    assert second.rcpt_tos == first.rcpt_tos == ["c1@example.com"]
    for header in ("From", "To", "Subject", "X-Clientflow-Event-Id", "X-Clientflow-Template"):
        assert new[header] == old[header], header
    assert "INV-I1" in str(new["Subject"])
    assert text_part(new) == text_part(old)
    assert "payment of £1,215.59 on March 10, 2026" in text_part(new)
    assert new["Message-ID"] == f"<{copy.id}@clientflow.localhost>" != old["Message-ID"]
    # The key is folded onto a line of its own: strip the folding's space.
    keys = [str(m["X-Clientflow-Idempotency-Key"]).strip() for m in (old, new)]
    assert keys == [original.idempotency_key, copy.idempotency_key]
    assert keys[0] != keys[1]


def test_failed_emails_put_back_by_retry_are_delivered(
    worker: WorkerProcess, smtp: SmtpSink, tmp_path: Path
) -> None:
    smtp.fail_rcpt["c1@example.com"] = "550 5.1.1 mailbox unavailable"
    add = payloads.client("C1")
    worker.publish("clients.add", add)
    worker.wait_applied(add["event_id"])
    [failed] = worker.wait_for_db(all_in("failed", "client_signup", 1), "the welcome failed")
    assert failed.attempts == 1
    assert smtp.messages == []
    smtp.fail_rcpt.clear()  # the mailbox is back

    output = clientflow(worker, tmp_path, "emails", "retry", "--failed")

    assert "requeued 1 failed email(s); delivery published" in output
    [welcome] = smtp.wait_for(1)
    assert welcome.rcpt_tos == ["c1@example.com"]
    [row] = worker.wait_for_db(all_in("sent", "client_signup", 1), "the welcome sent")
    worker.wait_idle()
    assert (row.id, row.status, row.attempts) == (failed.id, EmailStatus.SENT, 1)
    assert row.last_error is None
