"""Who gets invoice mail and whose name is on it: billing contact, invoice contacts, holder."""

from __future__ import annotations

import payloads
import pytest
from conftest import Apply, Publisher
from invoice_helpers import notices, run
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.emails import EmailMessage
from services.db import SessionFactory

BILLING = {
    "companyname": "Difference Engines Ltd",
    "address1": "1 Dorset Street",
    "city": "London",
    "postcode": "W1U 4EG",
    "country": "GB",
}


def emails(db: Session, notice: str) -> dict[str, EmailMessage]:
    """The emails of invoice I1's notice, by recipient address."""
    rows = db.scalars(select(EmailMessage).where(EmailMessage.event_id == f"invoice:I1:{notice}"))
    return {row.to_address: row for row in rows}


@pytest.fixture
def billed(apply: Apply) -> None:
    """C1 with a billing contact (K1), an invoice contact (K2), a contact with the holder's
    address in other letters (KSAME, ticked invoice), one not ticked (K3), and invoice I1."""
    apply(
        "clients.add", payloads.client("C1", companyname="Analytical Engines", send_welcome=False)
    )
    apply("contacts.add", payloads.contact("K1", "C1", firstname="Charles", **BILLING))
    apply("contacts.add", payloads.contact("K2", "C1", "invoice", firstname="Mary"))
    apply("contacts.add", payloads.contact("KSAME", "C1", "invoice", email="C1@Example.COM"))
    apply("contacts.add", payloads.contact("K3", "C1", "general"))
    apply("clients.set_billing_contact", payloads.event("C1", contact_id="K1"))
    apply("invoices.upsert", payloads.invoice("I1"))


def test_billing_contact_invoice_contacts_and_holder_each_once(
    billed: None, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    run(session_factory, publisher, "2026-03-01")

    created = emails(db, "invoice_created")
    assert sorted(created) == ["c1@example.com", "k1@example.com", "k2@example.com"]
    assert {row.client_id for row in created.values()} == {"C1"}  # the invoice stays C1's
    assert {row.category for row in created.values()} == {"invoice"}
    for row in created.values():
        # Invoiced to the billing contact, whoever receives it.
        for text in (row.body_text, row.body_html):
            assert "Charles K1" in text
            assert "Difference Engines Ltd" in text
            assert "1 Dorset Street" in text
            assert "London W1U 4EG" in text
            assert "k1@example.com" in text
            assert "Analytical Engines" not in text
            assert "12 St James" not in text
        assert "£1,215.59" in row.body_text
    assert created["k2@example.com"].to_name == "Mary K2"
    assert created["k1@example.com"].subject == (
        "Customer Invoice #INV-I1: £1,215.59 due March 15, 2026"
    )


def test_without_billing_contact_the_client_is_invoiced_to(
    apply: Apply, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    apply(
        "clients.add", payloads.client("C1", companyname="Analytical Engines", send_welcome=False)
    )
    apply("invoices.upsert", payloads.invoice("I1"))
    run(session_factory, publisher, "2026-03-01")

    (row,) = emails(db, "invoice_created").values()
    assert row.to_address == "c1@example.com"
    for text in (row.body_text, row.body_html):
        assert "Ada Lovelace" in text
        assert "Analytical Engines" in text
        assert "12 St James" in text
        assert "London Greater London SW1Y 4JH" in text


def test_the_holder_who_turned_invoice_mail_off_gets_none(
    billed: None, apply: Apply, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    apply("clients.update", payloads.event("C1", invoice_emails=False))
    apply("contacts.delete", payloads.event("C1", contact_id="KSAME"))
    run(session_factory, publisher, "2026-03-01")
    assert sorted(emails(db, "invoice_created")) == ["k1@example.com", "k2@example.com"]


def test_with_nobody_to_send_to_the_notice_is_recorded_not_silently_lost(
    apply: Apply, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    apply("clients.add", payloads.client("C1", invoice_emails=False, send_welcome=False))
    apply("invoices.upsert", payloads.invoice("I1"))
    finished = run(session_factory, publisher, "2026-03-01")
    assert emails(db, "invoice_created") == {}
    assert notices(db, "I1") == {"invoice_created": "no_recipient"}
    assert finished.counts["no_recipient"] == 1


def test_a_billing_contact_changed_between_two_notices(
    billed: None, apply: Apply, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    run(session_factory, publisher, "2026-03-01")
    apply("contacts.add", payloads.contact("K4", "C1", firstname="Augustus", city="Cambridge"))
    apply("clients.set_billing_contact", payloads.event("C1", contact_id="K4"))
    run(session_factory, publisher, "2026-03-08")

    reminder = emails(db, "payment_reminder")
    assert sorted(reminder) == ["c1@example.com", "k2@example.com", "k4@example.com"]
    for row in reminder.values():
        assert "Augustus K4" in row.body_text
        assert "Cambridge" in row.body_text
        assert "Charles K1" not in row.body_text
    # What was sent before stays as it was sent.
    assert "Charles K1" in emails(db, "invoice_created")["c1@example.com"].body_text


def test_a_billing_contact_deleted_between_two_notices(
    billed: None, apply: Apply, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    run(session_factory, publisher, "2026-03-01")
    apply("contacts.delete", payloads.event("C1", contact_id="K1"))
    run(session_factory, publisher, "2026-03-08")

    reminder = emails(db, "payment_reminder")
    assert sorted(reminder) == ["c1@example.com", "k2@example.com"]
    for row in reminder.values():
        assert "Ada Lovelace" in row.body_text
        assert "12 St James" in row.body_text
        assert "Charles K1" not in row.body_text
