"""The same event twice changes nothing and sends nothing; the message log enforces one email."""

from __future__ import annotations

import uuid

import payloads
import pytest
from conftest import Apply, Publisher
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import AuditEvent, EmailMessage
from services.db import SessionFactory
from services.dispatch import Outcome
from services.mail.queue import idempotency_key


def test_redelivered_add_changes_nothing(apply: Apply, db: Session, publisher: Publisher) -> None:
    payload = payloads.client("C1")
    first = apply("clients.add", payload)
    second = apply("clients.add", payload)

    assert (first.outcome, second.outcome) == (Outcome.APPLIED, Outcome.DUPLICATE)
    assert db.scalar(select(func.count()).select_from(EmailMessage)) == 1
    assert len(publisher.deliveries) == 1


def test_redelivered_notification_sends_no_second_email(
    apply: Apply, db: Session, publisher: Publisher
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    payload = payloads.notification("C1")
    apply("notifications.send", payload)
    # A publisher retry may carry the same key with a slightly different body: still a duplicate.
    retry = {**payload, "context": {"title": "Maintenance!", "message": "Tonight."}}

    assert apply("notifications.send", retry).outcome is Outcome.DUPLICATE
    assert db.scalar(select(func.count()).select_from(EmailMessage)) == 1
    assert len(publisher.deliveries) == 1


def test_redelivered_status_change_is_audited_once(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1"))
    payload = payloads.event("C1", status="Inactive")
    apply("clients.set_status", payload)
    apply("clients.set_status", payload)
    count = db.scalar(select(func.count()).where(AuditEvent.action == "clients.set_status"))
    assert count == 1


def test_idempotency_key_is_per_event_recipient_and_template() -> None:
    key = idempotency_key("e1", "Ada@Example.com", "client_signup")
    assert key == idempotency_key("e1", "ada@example.com", "client_signup")
    assert key != idempotency_key("e2", "ada@example.com", "client_signup")
    assert key != idempotency_key("e1", "bob@example.com", "client_signup")
    assert key != idempotency_key("e1", "ada@example.com", "general_announcement")


def test_message_log_refuses_a_second_row_with_the_same_key(
    session_factory: SessionFactory,
) -> None:
    def row() -> EmailMessage:
        return EmailMessage(
            id=str(uuid.uuid4()),
            idempotency_key="k" * 64,
            event_id="e1",
            client_id="C1",
            template="client_signup",
            category="general",
            to_address="a@example.com",
            to_name="A",
            subject="s",
            body_text="t",
            body_html="h",
        )

    with session_factory() as session:
        session.add(row())
        session.commit()
        session.add(row())
        with pytest.raises(IntegrityError):
            session.commit()
