"""notifications.send: routing by category to the holder and ticked contacts, each once."""

from __future__ import annotations

import payloads
from conftest import Apply
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import EmailMessage
from services.dispatch import Outcome


def _recipients(db: Session, event_id: str) -> list[str]:
    rows = db.scalars(
        select(EmailMessage)
        .where(EmailMessage.event_id == event_id)
        .order_by(EmailMessage.to_address)
    )
    return [m.to_address for m in rows]


def _setup(apply: Apply) -> None:
    apply("clients.add", payloads.client("C1", email="holder@example.com", send_welcome=False))
    apply("contacts.add", payloads.contact("K1", "C1", "invoice", email="billing@example.com"))
    apply(
        "contacts.add", payloads.contact("K2", "C1", "product", "domain", email="tech@example.com")
    )
    apply("contacts.add", payloads.contact("K3", "C1", email="silent@example.com"))
    # Same mailbox as the holder in other letter case: must not get a second copy.
    apply("contacts.add", payloads.contact("K4", "C1", "invoice", email="HOLDER@example.com"))


def test_routes_holder_and_ticked_contacts_once(apply: Apply, db: Session) -> None:
    _setup(apply)
    invoice = payloads.notification("C1", "invoice")
    product = payloads.notification("C1", "product")
    support = payloads.notification("C1", "support")

    for payload in (invoice, product, support):
        assert apply("notifications.send", payload).outcome is Outcome.APPLIED

    assert _recipients(db, invoice["event_id"]) == ["billing@example.com", "holder@example.com"]
    assert _recipients(db, product["event_id"]) == ["holder@example.com", "tech@example.com"]
    assert _recipients(db, support["event_id"]) == ["holder@example.com"]


def test_contact_with_no_flags_gets_nothing(apply: Apply, db: Session) -> None:
    _setup(apply)
    for category in ("general", "product", "domain", "invoice", "support"):
        apply("notifications.send", payloads.notification("C1", category))
    assert (
        db.scalars(
            select(EmailMessage).where(EmailMessage.to_address == "silent@example.com")
        ).all()
        == []
    )


def test_deleted_contact_gets_no_more_mail(apply: Apply, db: Session) -> None:
    _setup(apply)
    before = payloads.notification("C1", "product")
    apply("notifications.send", before)
    apply("contacts.delete", payloads.event("C1", contact_id="K2"))
    after = payloads.notification("C1", "product")
    apply("notifications.send", after)

    assert "tech@example.com" in _recipients(db, before["event_id"])
    assert _recipients(db, after["event_id"]) == ["holder@example.com"]


def test_one_message_per_recipient_with_personal_greeting(apply: Apply, db: Session) -> None:
    _setup(apply)
    payload = payloads.notification("C1", "invoice")
    apply("notifications.send", payload)
    rows = db.scalars(select(EmailMessage).where(EmailMessage.event_id == payload["event_id"]))
    greetings = {m.to_address: m.body_text.splitlines()[0] for m in rows}
    assert greetings == {
        "billing@example.com": "Dear Charles K1,",
        "holder@example.com": "Dear Ada Lovelace,",
    }


def test_unknown_template_refused_and_nothing_queued(apply: Apply, db: Session) -> None:
    _setup(apply)
    result = apply("notifications.send", payloads.notification("C1", template="no_such_thing"))
    assert result.outcome is Outcome.REJECTED
    assert result.reason == "unknown email template 'no_such_thing'"
    assert db.scalars(select(EmailMessage)).all() == []


def test_missing_template_variable_refused(apply: Apply, db: Session) -> None:
    _setup(apply)
    result = apply("notifications.send", payloads.notification("C1", context={"title": "Hi"}))
    assert result.outcome is Outcome.REJECTED
    assert result.reason == (
        "template 'general_announcement' cannot render: 'message' is undefined"
    )
    assert db.scalars(select(EmailMessage)).all() == []


def test_client_actor_cannot_send_notifications(apply: Apply) -> None:
    _setup(apply)
    payload = payloads.notification("C1", actor=payloads.client_actor("C1"))
    result = apply("notifications.send", payload)
    assert result.outcome is Outcome.REJECTED
