"""services.upsert, invoices.upsert, invoices.record_payment and clients.close, as events."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import payloads
import pytest
from conftest import Apply, Publisher
from invoice_helpers import notices, run, sent
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import AuditEvent, Client, Invoice, RejectedEvent, Service
from models.emails import EmailMessage
from services.db import SessionFactory
from services.dispatch import Outcome, parse_event
from services.errors import Rejected


def reason_for(task: str, payload: dict[str, Any]) -> str:
    with pytest.raises(Rejected) as info:
        parse_event(task, payload)
    return info.value.reason


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"subtotal": "1000.00"}, "subtotal 1000.00 is not the sum of the line items 1012.99"),
        ({"total": "1215.60"}, "total 1215.60 is not subtotal 1012.99 + tax 202.60"),
        ({"balance": "2000.00"}, "balance 2000.00 exceeds total 1215.59"),
        ({"tax": 0.1 + 0.2}, "tax: Decimal input should have no more than 12 digits"),
        ({"tax": "1.005"}, "tax: Decimal input should have no more than 2 decimal places"),
        ({"tax": "NaN"}, "tax: Input should be a finite number"),
        ({"currency": "XYZ"}, "currency: Value error, 'XYZ' is not an ISO 4217 currency code"),
        ({"status": "Draft"}, "status: Input should be 'Unpaid', 'Paid', 'Cancelled' or"),
        ({"items": []}, "items: List should have at least 1 item"),
        ({"due_date": "2026-02-01"}, "due_date is before the invoice date"),
        ({"due_date": "9999-12-31"}, "due_date: Value error, must be between 1970-01-01 and"),
        ({"date": "1969-12-31"}, "date: Value error, must be between 1970-01-01 and 2199-12-31"),
        ({"balance": "0.00"}, "an Unpaid invoice must have a balance above 0; send it as Paid"),
        ({"invoice_id": "auto:S1:20261204"}, "invoice ids starting with 'auto:' are the ones"),
        ({"number": "INV\u2028Bcc: x@example.org"}, "number: Value error, must be a single line"),
        ({"date": "31/01/2026"}, "date: Input should be a valid date"),
    ],
)
def test_invoice_contract_refusals_are_specific(overrides: dict[str, Any], expected: str) -> None:
    assert expected in reason_for("invoices.upsert", {**payloads.invoice("I1"), **overrides})


def test_amounts_are_exact_decimals_from_strings_or_json_numbers() -> None:
    event = parse_event("invoices.upsert", payloads.invoice("I1", tax=202.6, currency="gbp"))
    dumped = event.model_dump()
    assert dumped["tax"] == Decimal("202.6")
    assert dumped["total"] == Decimal("1215.59")
    assert dumped["currency"] == "GBP"
    assert "amount: Input should be greater than 0" in reason_for(
        "invoices.record_payment", payloads.payment("I1", "0")
    )
    assert "billing_cycle: Input should be" in reason_for(
        "services.upsert", payloads.service("S1", billing_cycle="Weekly")
    )


def test_services_and_invoices_are_upserted_and_audited(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    assert apply("services.upsert", payloads.service("S1")).outcome is Outcome.APPLIED
    apply("services.upsert", payloads.service("S1", status="Suspended", amount="15"))
    assert apply("invoices.upsert", payloads.invoice("I1")).outcome is Outcome.APPLIED
    apply("invoices.upsert", payloads.invoice("I1", number="2026-0001"))

    service = db.get(Service, "S1")
    invoice = db.get(Invoice, "I1")
    assert service is not None
    assert invoice is not None
    assert (service.status, service.amount, service.next_due_date) == (
        "Suspended",
        Decimal("15.00"),
        date(2026, 3, 1),
    )
    assert (invoice.number, invoice.total, invoice.currency) == (
        "2026-0001",
        Decimal("1215.59"),
        "GBP",
    )
    assert invoice.items[1] == {"description": "Domain renewal example.com", "amount": "12.99"}
    changes = [a.changes for a in db.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert changes[2] == {
        "service_id": "S1",
        "status": ["Active", "Suspended"],
        "amount": ["12.50", "15"],
    }
    assert changes[4] == {"invoice_id": "I1", "number": ["INV-I1", "2026-0001"]}


def test_an_invoice_stays_with_its_client(apply: Apply) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("clients.add", payloads.client("C2", send_welcome=False))
    apply("invoices.upsert", payloads.invoice("I1", "C1"))
    moved = apply("invoices.upsert", payloads.invoice("I1", "C2"))
    paid_by_other = apply("invoices.record_payment", payloads.payment("I1", "1.00", "C2"))
    assert moved.reason == "invoice 'I1' belongs to another client"
    assert paid_by_other.reason == "client 'C2' has no invoice 'I1'"


def test_a_payment_that_settles_the_invoice_confirms_it_once(
    apply: Apply, db: Session, publisher: Publisher
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("contacts.add", payloads.contact("K1", "C1", "invoice"))
    apply("invoices.upsert", payloads.invoice("I1"))

    part = apply("invoices.record_payment", payloads.payment("I1", "215.59"))
    assert (part.outcome, part.email_ids) == (Outcome.APPLIED, [])
    rest = payloads.payment("I1", "1000.00", transaction_id="TX-9")
    settled = apply("invoices.record_payment", rest)
    again = apply("invoices.record_payment", rest)
    late = apply("invoices.record_payment", payloads.payment("I1", "1.00"))

    invoice = db.get(Invoice, "I1", populate_existing=True)
    assert invoice is not None
    assert (invoice.status, invoice.balance, invoice.date_paid) == (
        "Paid",
        Decimal("0.00"),
        date(2026, 3, 10),
    )
    assert again.outcome is Outcome.DUPLICATE
    assert late.reason == "invoice 'I1' is Paid; only Unpaid takes payments"
    assert len(settled.email_ids) == 2
    assert publisher.message_ids == settled.email_ids
    assert sent(db) == [
        ("invoice_payment_confirmation", "c1@example.com"),
        ("invoice_payment_confirmation", "k1@example.com"),
    ]
    assert notices(db, "I1") == {"payment_confirmation": "sent"}


def test_an_overpayment_is_refused_with_the_amounts(apply: Apply) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("invoices.upsert", payloads.invoice("I1"))
    result = apply("invoices.record_payment", payloads.payment("I1", "2000"))
    assert result.reason == (
        "payment £2,000.00 GBP exceeds the balance £1,215.59 GBP of invoice 'I1'"
    )


def test_a_payment_before_its_invoice_waits_for_it(
    apply: Apply, db: Session, publisher: Publisher
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    early = payloads.payment("I1", "1215.59")
    assert apply("invoices.record_payment", early).outcome is Outcome.REJECTED
    (waiting,) = db.scalars(select(RejectedEvent)).all()
    assert waiting.waiting_for == "invoice:I1"

    apply("invoices.upsert", payloads.invoice("I1"))
    assert publisher.sent[-1] == ("invoices.record_payment", early)


def test_closing_a_client_cancels_unpaid_invoices_and_services_in_one_go(
    apply: Apply, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("clients.add", payloads.client("C2", send_welcome=False))
    apply("services.upsert", payloads.service("S1", next_due_date="2026-03-10"))
    apply("services.upsert", payloads.service("S2", status="Terminated"))
    apply("services.upsert", payloads.service("S3", "C2", next_due_date="2026-03-10"))
    apply("invoices.upsert", payloads.invoice("I1"))
    apply("invoices.upsert", payloads.invoice("I2", status="Paid", balance="0"))
    apply("invoices.upsert", payloads.invoice("I3", "C2"))

    assert apply("clients.close", payloads.event("C1")).outcome is Outcome.APPLIED

    db.expire_all()
    client = db.get(Client, "C1")
    assert client is not None
    assert client.status == "Closed"
    statuses = {i.id: i.status for i in db.scalars(select(Invoice))}
    assert statuses == {"I1": "Cancelled", "I2": "Paid", "I3": "Unpaid"}
    services = {s.id: s.status for s in db.scalars(select(Service))}
    assert services == {"S1": "Cancelled", "S2": "Terminated", "S3": "Active"}
    audit = db.scalars(select(AuditEvent).where(AuditEvent.action == "clients.close")).one()
    assert audit.changes == {
        "status": ["Active", "Closed"],
        "cancelled_invoices": ["I1"],
        "cancelled_services": ["S1"],
    }

    # No reminders and no new invoices for the closed client, ever after; C2 goes on.
    for day in ("2026-03-01", "2026-03-08", "2026-03-16", "2026-04-01"):
        run(session_factory, publisher, day)
    c1_invoices = db.scalars(select(Invoice.id).where(Invoice.client_id == "C1")).all()
    assert sorted(c1_invoices) == ["I1", "I2"]
    emailed = {invoice for _template, invoice in _by_invoice(db)}
    assert emailed == {"I3", "auto:S3:20260310", "auto:S3:20260410"}


def test_a_client_actor_may_not_publish_billing_events(apply: Apply) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    actor = payloads.client_actor("C1")
    for task, payload in [
        ("invoices.upsert", payloads.invoice("I1", actor=actor)),
        ("services.upsert", payloads.service("S1", actor=actor)),
        ("clients.close", payloads.event("C1", actor=actor)),
    ]:
        assert apply(task, payload).reason == (
            f"a client actor may not publish {task}; only admin or system may"
        )


def test_the_holder_can_turn_invoice_mail_off_and_on(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1", invoice_emails=False, send_welcome=False))
    client = db.get(Client, "C1")
    assert client is not None
    assert client.invoice_emails is False
    apply("clients.update", payloads.event("C1", invoice_emails=True))
    db.refresh(client)
    assert client.invoice_emails is True
    refused = apply("clients.update", payloads.event("C1", invoice_emails=None))
    assert refused.reason == "invalid event: payload: Value error, invoice_emails cannot be null"


def _by_invoice(db: Session) -> list[tuple[str, str]]:
    return [
        (m.template, m.event_id.split(":", 1)[1].rsplit(":", 1)[0])
        for m in db.scalars(select(EmailMessage).where(EmailMessage.event_id.like("invoice:%")))
    ]


def test_an_upsert_cannot_erase_a_payment_and_a_transaction_is_applied_once(
    apply: Apply, db: Session
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    invoice = payloads.invoice("E-1")  # total 1215.59
    apply("invoices.upsert", invoice)
    first = payloads.payment("E-1", "200.00", transaction_id="T-1")
    assert apply("invoices.record_payment", first).outcome is Outcome.APPLIED
    again = apply("invoices.record_payment", {**first, "event_id": payloads.event_id()})
    assert again.outcome is Outcome.REJECTED
    assert again.reason is not None
    assert again.reason.startswith("transaction 'T-1' was already applied to invoice 'E-1'")
    # Upstream sends its stale view (balance = total): the payment recorded here stays.
    apply("invoices.upsert", {**invoice, "event_id": payloads.event_id()})
    stored = db.get(Invoice, "E-1")
    assert stored is not None
    assert (stored.status, stored.balance) == ("Unpaid", Decimal("1015.59"))
    # Upstream knows of a further payment of its own: its lower balance wins.
    apply("invoices.upsert", {**invoice, "event_id": payloads.event_id(), "balance": "15.59"})
    db.refresh(stored)
    assert stored.balance == Decimal("15.59")
    # A total below what was paid here contradicts the payment: refused.
    lower = {**invoice, "event_id": payloads.event_id(), "items": [
        {"description": "x", "amount": "100.00"}], "subtotal": "100.00", "tax": "0.00",
        "total": "100.00", "balance": "100.00"}  # fmt: skip
    refused = apply("invoices.upsert", lower)
    assert refused.reason == (
        "total £100.00 GBP of invoice 'E-1' is below the £200.00 GBP already paid by "
        "invoices.record_payment"
    )
    # Paid in full here, then upstream's stale Unpaid view: it stays Paid.
    apply("invoices.upsert", {**invoice, "event_id": payloads.event_id()})
    apply("invoices.record_payment", payloads.payment("E-1", "1015.59", transaction_id="T-2"))
    apply("invoices.upsert", {**invoice, "event_id": payloads.event_id()})
    db.refresh(stored)
    assert (stored.status, stored.balance) == ("Paid", Decimal("0.00"))
