"""The same event twice changes nothing and sends nothing; the message log enforces one email."""

from __future__ import annotations

import uuid

import payloads
import pytest
from conftest import Apply, Publisher
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import AuditEvent, Client, EmailMessage
from models.records import RejectedEvent
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
    # The same event again, its keys in another order: a redelivery.
    assert apply("notifications.send", dict(reversed(payload.items()))).outcome is (
        Outcome.DUPLICATE
    )
    # The same id on another body is not a redelivery: a publisher reusing an id is told so,
    # and the first event's email is still the only one.
    changed = {**payload, "context": {"title": "Maintenance!", "message": "Tonight."}}
    refused = apply("notifications.send", changed)
    assert refused.outcome is Outcome.REJECTED
    assert refused.reason == (
        f"event id {payload['event_id']!r} was already used by a notifications.send event "
        "with a different payload; a changed event needs an event id of its own"
    )
    assert db.scalar(select(func.count()).select_from(EmailMessage)) == 1
    assert len(publisher.deliveries) == 1


def test_an_event_id_reused_by_another_task_is_refused_with_a_reason(
    apply: Apply, db: Session
) -> None:
    added = payloads.client("C1", send_welcome=False)
    apply("clients.add", added)
    update = {"event_id": added["event_id"], "client_id": "C1", "firstname": "Augusta"}
    result = apply("clients.update", update)
    assert result.outcome is Outcome.REJECTED
    assert result.reason == (
        f"event id {added['event_id']!r} was already used by a clients.add event; "
        "this clients.update needs an event id of its own"
    )
    assert db.get(Client, "C1").firstname == "Ada"  # type: ignore[union-attr]
    assert db.scalar(select(func.count()).where(RejectedEvent.event_id == added["event_id"])) == 1


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


def test_no_event_id_reaches_the_key_of_an_email_clientflow_owes_on_its_own_account() -> None:
    # The run's Invoice Created notice for E-3 and a publisher's event spelt like its id.
    notice = idempotency_key("invoice:E-3:invoice_created", "a@x.example", "invoice_created",
                             system=True)  # fmt: skip
    assert notice != idempotency_key(
        "invoice:E-3:invoice_created", "a@x.example", "invoice_created"
    )


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
