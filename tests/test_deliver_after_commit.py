"""An event's emails claimed in its own commit and sent by its task right after it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import payloads
from conftest import COMPANY, Publisher
from smtp_sink import SmtpSink
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import EmailMessage
from models.outbox import OutboxMessage
from services.db import SessionFactory
from services.dispatch import Outcome, process_event
from services.mail.delivery import DeliveryReport, deliver_claimed, deliver_messages
from services.mail.transports import SmtpTransport
from services.outbox import relay

FROM = "Billing <billing@host.example>"


class AfterCommit:
    """deliver_now as tasks.emails gives it, over a real SMTP server.

    `ready = False` is a process whose mail is paused; `dies = True` one killed between the
    commit and the first send.
    """

    def __init__(self, session_factory: SessionFactory, smtp: SmtpSink) -> None:
        self.session_factory = session_factory
        self.transport = SmtpTransport(smtp.url)
        self.is_ready = True
        self.dies = False
        self.reports: list[DeliveryReport] = []

    def ready(self) -> bool:
        return self.is_ready

    def __call__(self, messages: list[EmailMessage]) -> None:
        if not self.dies:
            self.reports.append(
                deliver_claimed(messages, self.session_factory, self.transport, FROM, 3)
            )


def apply(
    session_factory: SessionFactory,
    publisher: Publisher,
    after_commit: AfterCommit,
    task_name: str,
    payload: dict[str, Any],
) -> Outcome:
    return process_event(
        task_name,
        json.loads(json.dumps(payload)),
        session_factory=session_factory,
        publish=publisher,
        company_name=COMPANY,
        deliver_now=after_commit,
    ).outcome


def run_relay(session_factory: SessionFactory, publisher: Publisher, lease: timedelta) -> int:
    return relay(
        session_factory,
        publisher,
        min_age=timedelta(0),
        sending_lease=lease,
        forgotten_after=timedelta(hours=1),
    )


def test_the_welcome_goes_out_in_the_event_with_no_outbox_row_nor_task(
    session_factory: SessionFactory, publisher: Publisher, smtp: SmtpSink, db: Session
) -> None:
    after_commit = AfterCommit(session_factory, smtp)
    outcome = apply(session_factory, publisher, after_commit, "clients.add", payloads.client("C1"))

    assert outcome is Outcome.APPLIED
    assert [r.rcpt_tos for r in smtp.wait_for(1)] == [["c1@example.com"]]
    [message] = db.scalars(select(EmailMessage)).all()
    assert (message.status, message.attempts, message.claimed_at is not None) == (
        "sent", 1, True,
    )  # fmt: skip
    assert [r.sent for r in after_commit.reports] == [[message.id]]
    assert db.scalars(select(OutboxMessage)).all() == []
    assert publisher.sent == []
    assert run_relay(session_factory, publisher, lease=timedelta(0)) == 0
    assert publisher.sent == []


def test_a_paused_process_stages_a_delivery_task_as_before(
    session_factory: SessionFactory, publisher: Publisher, smtp: SmtpSink, db: Session
) -> None:
    after_commit = AfterCommit(session_factory, smtp)
    after_commit.is_ready = False
    apply(session_factory, publisher, after_commit, "clients.add", payloads.client("C1"))

    [message] = db.scalars(select(EmailMessage)).all()
    assert (message.status, message.attempts) == ("queued", 0)
    assert publisher.deliveries == [[message.id]]
    [row] = db.scalars(select(OutboxMessage)).all()
    assert row.published_at is not None
    assert smtp.messages == []


def test_a_process_killed_before_sending_leaves_claims_the_relay_requeues(
    session_factory: SessionFactory, publisher: Publisher, smtp: SmtpSink, db: Session
) -> None:
    after_commit = AfterCommit(session_factory, smtp)
    after_commit.dies = True
    apply(session_factory, publisher, after_commit, "clients.add", payloads.client("C1"))
    [message] = db.scalars(select(EmailMessage)).all()
    assert message.status == "sending"

    # Within its lease the claim is the process' own; past it the relay queues it again.
    run_relay(session_factory, publisher, lease=timedelta(minutes=5))
    assert publisher.deliveries == []
    run_relay(session_factory, publisher, lease=timedelta(0))
    assert publisher.deliveries == [[message.id]]

    report = deliver_messages(message.id.split(), session_factory, after_commit.transport, FROM, 3)
    assert report.sent == [message.id]
    assert len(smtp.wait_for(1)) == 1
    db.refresh(message)
    assert (message.status, message.attempts) == ("sent", 2)


def test_an_unreachable_server_counts_the_attempt_and_says_so(
    session_factory: SessionFactory, publisher: Publisher, smtp: SmtpSink, db: Session
) -> None:
    smtp.stop()
    after_commit = AfterCommit(session_factory, smtp)
    apply(session_factory, publisher, after_commit, "clients.add", payloads.client("C1"))

    [report] = after_commit.reports
    assert report.connection_failed
    [message] = db.scalars(select(EmailMessage)).all()
    assert report.retry == [message.id]
    assert (message.status, message.attempts) == ("queued", 1)
    assert message.last_error is not None
    assert "Connection refused" in message.last_error


def test_a_refused_email_of_an_event_is_recorded_on_its_row_and_the_rest_go_out(
    session_factory: SessionFactory, publisher: Publisher, smtp: SmtpSink, db: Session
) -> None:
    """The emails are sent as the event's commit left them and only a failed one is taken
    into the delivery's session to be recorded (services.mail.delivery.deliver_claimed)."""
    after_commit = AfterCommit(session_factory, smtp)
    apply(session_factory, publisher, after_commit, "clients.add", payloads.client("C1"))
    for contact_id in ("K1", "K2", "K3"):
        payload = payloads.contact(contact_id, "C1", "general")
        apply(session_factory, publisher, after_commit, "contacts.add", payload)
    smtp.fail_rcpt = {
        "k1@example.com": "550 5.1.1 No such mailbox",
        "k2@example.com": "450 4.2.1 Mailbox busy",
    }
    apply(session_factory, publisher, after_commit, "notifications.send", payloads.notification())

    rows = {
        m.to_address: (m.status, m.attempts, m.last_error)
        for m in db.scalars(select(EmailMessage).where(EmailMessage.template != "client_signup"))
    }
    assert rows == {
        "c1@example.com": ("sent", 1, None),
        "k1@example.com": ("failed", 1, "550 5.1.1 No such mailbox"),
        "k2@example.com": ("queued", 1, "450 4.2.1 Mailbox busy"),
        "k3@example.com": ("sent", 1, None),
    }
    report = after_commit.reports[-1]
    assert (len(report.sent), len(report.failed), len(report.retry)) == (2, 1, 1)
    assert sorted(r.rcpt_tos[0] for r in smtp.messages if b"Maintenance" in r.data) == [
        "c1@example.com", "k3@example.com",
    ]  # fmt: skip
