"""Invoice emails: the template of each notice, the "invoiced to" block, and queueing them."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy.orm import Session

from models.billing import Invoice, Notice
from models.clients import Client
from models.company import CompanyLike
from models.emails import EmailMessage
from services.mail.queue import EmailQueue
from services.money import CENT
from services.opt_outs import OptOutPolicy
from services.routing import Recipient, billing_contact_of

TEMPLATES: dict[Notice, str] = {
    Notice.INVOICE_CREATED: "invoice_created",
    Notice.PAYMENT_REMINDER: "invoice_payment_reminder",
    Notice.FIRST_OVERDUE: "invoice_overdue_first",
    Notice.SECOND_OVERDUE: "invoice_overdue_second",
    Notice.THIRD_OVERDUE: "invoice_overdue_third",
    Notice.PAYMENT_CONFIRMATION: "invoice_payment_confirmation",
}

# The notices that carry the invoice as a PDF: the invoice itself, and the overdue notices
# that ask for it to be paid. The reminder and the confirmation point at it only.
ATTACHES_PDF = frozenset(
    TEMPLATES[notice]
    for notice in (
        Notice.INVOICE_CREATED,
        Notice.FIRST_OVERDUE,
        Notice.SECOND_OVERDUE,
        Notice.THIRD_OVERDUE,
    )
)


def notice_event_id(invoice_id: str, notice: Notice) -> str:
    """The synthetic event id of a notice: with the recipient and template it makes the
    message log's idempotency key, so one notice can owe each address one email only."""
    return f"invoice:{invoice_id}:{notice.value}"


def invoiced_to(client: Client) -> dict[str, Any]:
    """The billing contact's name, company, address and email when one is set, else the
    client's. Read at send time: a contact changed or deleted since the last notice shows."""
    billing = billing_contact_of(client)
    party = billing if billing is not None else client
    locality = " ".join(p for p in (party.city, party.state, party.postcode) if p)
    lines = [party.address1, party.address2, locality, party.country]
    return {
        "name": party.full_name,
        "companyname": party.companyname,
        "address_lines": [line for line in lines if line],
        "email": party.email,
        "phonenumber": party.phonenumber,
    }


def amount_text(value: Decimal | str | int) -> str:
    """An amount as the templates get it: a decimal string with two places ("1200.00"), which
    their `|money(invoice.currency)` filter writes in the reader's language."""
    return str(Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP))


def invoice_context(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "number": invoice.number,
        # ISO dates, written by the templates' `|date` filter.
        "date": invoice.date.isoformat(),
        "due_date": invoice.due_date.isoformat(),
        "status": invoice.status,
        "currency": invoice.currency,
        "items": [
            {"description": item["description"], "amount": amount_text(item["amount"])}
            for item in invoice.items
        ],
        "subtotal": amount_text(invoice.subtotal),
        "tax": amount_text(invoice.tax),
        "total": amount_text(invoice.total),
        "paid": amount_text(invoice.total - invoice.balance),
        "balance": amount_text(invoice.balance),
    }


def queue_notice_emails(
    session: Session,
    company_name: CompanyLike,
    opt_outs: OptOutPolicy,
    invoice: Invoice,
    notice: Notice,
    recipients: list[Recipient],
    extra: dict[str, Any] | None = None,
) -> list[EmailMessage]:
    """Render and log one email per recipient (in the caller's transaction)."""
    emails = EmailQueue(
        session, notice_event_id(invoice.id, notice), company_name, opt_outs, system=True
    )
    context = {"invoice": invoice_context(invoice), "invoiced_to": invoiced_to(invoice.client)}
    context.update(extra or {})
    # All rendered before any is logged: if one cannot be, the caller has nothing to undo.
    messages = [
        emails.render(
            client=invoice.client,
            recipient=recipient,
            template=TEMPLATES[notice],
            category="invoice",
            context=context,
        )
        for recipient in recipients
    ]
    for message in messages:
        # Delivery attaches the invoice's PDF to the notices that carry one (ATTACHES_PDF).
        message.invoice_id = invoice.id
        emails.add(message)
    return emails.messages
