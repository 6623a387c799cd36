"""invoices.upsert and invoices.record_payment; a payment that settles an invoice confirms it."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from models.base import table_of
from models.billing import (
    Invoice,
    InvoiceNotice,
    InvoicePayment,
    InvoiceStatus,
    Notice,
    NoticeOutcome,
)
from models.contracts import RecordPayment, UpsertInvoice
from services.actors import authorize
from services.audit import diff, record_change
from services.context import HandlerContext
from services.errors import Conflict, UnknownReference
from services.invoice_mail import amount_text, queue_notice_emails
from services.money import format_money
from services.routing import route_invoice_recipients
from services.sql import insert_new_rows
from services.waiting import release_waiting

_FIELDS = (
    "number",
    "date",
    "due_date",
    "currency",
    "subtotal",
    "tax",
    "total",
    "balance",
    "status",
)


def upsert_invoice(ctx: HandlerContext, event: UpsertInvoice) -> None:
    """Last writer wins, like every upsert here: publish changes to one invoice in order.

    Except for payments recorded here (invoices.record_payment): an upsert cannot erase them.
    The balance kept is the lower of the upsert's and the total less those payments, and an
    invoice they settle stays Paid; an upsert whose total is below them is refused.
    """
    client = ctx.client(event.client_id)
    authorize(ctx.task_name, event, client)
    invoice = ctx.session.get(Invoice, event.invoice_id)
    if invoice is not None and invoice.client_id != client.id:
        raise Conflict(f"invoice {event.invoice_id!r} belongs to another client")
    after: dict[str, object] = {name: getattr(event, name) for name in _FIELDS}
    if invoice is not None:
        after.update(_keep_payments(ctx, invoice.id, event))
    after["items"] = [
        {"description": item.description, "amount": str(item.amount)} for item in event.items
    ]
    if invoice is None:
        invoice = Invoice(id=event.invoice_id, client_id=client.id, **after)
        ctx.session.add(invoice)
        ctx.session.flush()
        release_waiting(ctx, f"invoice:{invoice.id}")
        changes: dict[str, object] = {"invoice_id": invoice.id, "created": after}
    else:
        before = {name: getattr(invoice, name) for name in after}
        for name, value in after.items():
            setattr(invoice, name, value)
        changes = {"invoice_id": invoice.id, **diff(before, after)}
    record_change(ctx.session, ctx.task_name, event, changes)


def _paid_here(ctx: HandlerContext, invoice_id: str) -> Decimal:
    paid = ctx.session.scalar(
        select(func.coalesce(func.sum(InvoicePayment.amount), 0)).where(
            InvoicePayment.invoice_id == invoice_id
        )
    )
    return Decimal(paid or 0)


def _keep_payments(ctx: HandlerContext, invoice_id: str, event: UpsertInvoice) -> dict[str, object]:
    """The balance and status an upsert may set without erasing a payment recorded here."""
    paid = _paid_here(ctx, invoice_id)
    if not paid:
        return {}
    if event.total < paid:
        raise Conflict(
            f"total {format_money(event.total, event.currency)} of invoice {invoice_id!r} is "
            f"below the {format_money(paid, event.currency)} already paid by "
            "invoices.record_payment"
        )
    balance = min(event.balance, event.total - paid)
    if balance == 0 and event.status == InvoiceStatus.UNPAID:
        return {"balance": balance, "status": InvoiceStatus.PAID}
    return {"balance": balance}


def record_payment(ctx: HandlerContext, event: RecordPayment) -> None:
    client = ctx.client(event.client_id)
    authorize(ctx.task_name, event, client)
    invoice = ctx.session.get(Invoice, event.invoice_id)
    if invoice is None or invoice.client_id != client.id:
        # A payment can overtake its invoice (Celery does not keep order): it waits for it,
        # as far as the key fits rejected_events.waiting_for.
        raise UnknownReference(
            f"client {client.id!r} has no invoice {event.invoice_id!r}",
            waiting_for=f"invoice:{event.invoice_id}" if invoice is None else None,
        )
    if event.transaction_id is not None:
        applied = ctx.session.scalar(
            select(InvoicePayment.event_id).where(
                InvoicePayment.invoice_id == invoice.id,
                InvoicePayment.transaction_id == event.transaction_id,
            )
        )
        if applied is not None:
            raise Conflict(
                f"transaction {event.transaction_id!r} was already applied to invoice "
                f"{invoice.id!r} (event {applied!r}); a transaction is applied once"
            )
    if invoice.status != InvoiceStatus.UNPAID:
        raise Conflict(f"invoice {invoice.id!r} is {invoice.status}; only Unpaid takes payments")
    if event.amount > invoice.balance:
        # Overpayment would be account credit, which this system does not keep.
        raise Conflict(
            f"payment {format_money(event.amount, invoice.currency)} exceeds the balance "
            f"{format_money(invoice.balance, invoice.currency)} of invoice {invoice.id!r}"
        )
    ctx.session.add(
        InvoicePayment(
            invoice_id=invoice.id,
            transaction_id=event.transaction_id,
            amount=event.amount,
            date=event.date,
            event_id=event.event_id,
        )
    )
    old_balance = invoice.balance
    invoice.balance = old_balance - event.amount
    changes: dict[str, object] = {
        "invoice_id": invoice.id,
        "payment": {
            "amount": event.amount,
            "date": event.date,
            "transaction": event.transaction_id,
        },
        "balance": [old_balance, invoice.balance],
    }
    if invoice.balance == Decimal(0):
        invoice.status = InvoiceStatus.PAID
        invoice.date_paid = event.date
        changes["status"] = [InvoiceStatus.UNPAID, InvoiceStatus.PAID]
        _confirm_payment(ctx, invoice, event)
    record_change(ctx.session, ctx.task_name, event, changes)


def _confirm_payment(ctx: HandlerContext, invoice: Invoice, event: RecordPayment) -> None:
    """One Payment Confirmation per invoice, guarded like the scheduled notices."""
    recipients = route_invoice_recipients(invoice.client, ctx.opt_outs.required)
    outcome = NoticeOutcome.SENT if recipients else NoticeOutcome.NO_RECIPIENT
    notice = Notice.PAYMENT_CONFIRMATION
    row = {
        "invoice_id": invoice.id,
        "notice": notice.value,
        "outcome": outcome.value,
        "run_id": None,
        "emails": len(recipients),
    }
    if not insert_new_rows(ctx.session, table_of(InvoiceNotice), [row], ("invoice_id", "notice")):
        return
    payment = {
        "amount": amount_text(event.amount),
        "date": event.date.isoformat(),
        "transaction_id": event.transaction_id,
    }
    messages = queue_notice_emails(
        ctx.session,
        ctx.emails.company_name,
        ctx.opt_outs,
        invoice,
        notice,
        recipients,
        {"payment": payment},
    )
    ctx.emails.messages.extend(messages)
