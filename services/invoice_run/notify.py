"""The notice pass: for each unpaid invoice, the one notice due now, at most once ever."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, exists, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, selectinload

from models.base import table_of
from models.billing import Invoice, InvoiceNotice, InvoiceStatus, Notice, NoticeOutcome
from models.clients import Client
from models.company import CompanyLike
from models.emails import EmailMessage
from services.invoice_mail import queue_notice_emails
from services.invoice_run.ranges import id_range
from services.invoice_run.schedule import NoticeSchedule, decide
from services.opt_outs import OptOutPolicy
from services.redaction import redact_addresses
from services.routing import Recipient, route_invoice_recipients
from services.sql import insert_new_rows

log = logging.getLogger(__name__)


def invoices_owed(on: date, schedule: NoticeSchedule) -> list[ColumnElement[bool]]:
    """What makes an invoice owe a notice on day `on`: Unpaid, dated, and its Invoice Created
    or its current stage not recorded yet (an anti-join on invoice_notices)."""

    def missing(notice: Any) -> ColumnElement[bool]:
        return ~exists().where(
            and_(InvoiceNotice.invoice_id == Invoice.id, InvoiceNotice.notice == notice)
        )

    return [
        Invoice.status == InvoiceStatus.UNPAID,
        Invoice.date <= on,
        or_(missing(Notice.INVOICE_CREATED.value), missing(schedule.current_stage_sql(on))),
    ]


def select_invoices(
    on: date, schedule: NoticeSchedule, after: str, through: str | None, size: int
) -> Select[Invoice]:
    """Invoices owed a notice, in id order above `after` and up to `through` (None: no end).

    Its notices, client and the client's contacts (billing contact among them) come in one
    query each, whatever the batch holds. SKIP LOCKED (PostgreSQL): a concurrent run takes
    the next invoices instead of waiting for these.
    """
    return (
        select(Invoice)
        .where(*invoices_owed(on, schedule), *id_range(Invoice.id, after, through))
        .order_by(Invoice.id)
        .limit(size)
        .options(
            selectinload(Invoice.notices),
            selectinload(Invoice.client).selectinload(Client.contacts),
        )
        .with_for_update(skip_locked=True, of=Invoice)
    )


@dataclass
class Notified:
    sent: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    no_recipient: int = 0
    emails: list[EmailMessage] = field(default_factory=list)
    # "invoice 'X': why": invoices this batch could not handle and left for the next run,
    # so that one bad invoice costs its own notice, not the batch's.
    problems: list[str] = field(default_factory=list)


def notify_batch(
    session: Session,
    invoices: list[Invoice],
    *,
    on: date,
    schedule: NoticeSchedule,
    run_id: int | None,
    company_name: CompanyLike,
    opt_outs: OptOutPolicy,
) -> Notified:
    """Claim each notice by inserting its row; only a claim we won renders and logs emails.

    The rows, the emails and (by the caller) their outbox row commit together. A concurrent
    run that lost a claim sends nothing for it, so each notice goes out exactly once.
    """
    rows: list[dict[str, Any]] = []
    planned: dict[str, tuple[Notice, list[Recipient]]] = {}
    result = Notified()
    for invoice in invoices:
        recorded = {n.notice for n in invoice.notices}
        try:
            started = schedule.started(invoice.date, invoice.due_date, on)
        except (OverflowError, ValueError) as exc:
            # Dates the contract now bounds, stored before it did (9999-12-31 + a lead time).
            result.problems.append(_problem(invoice, exc))
            continue
        send, skipped = decide(started, recorded)
        for notice in skipped:
            rows.append(_row(invoice, notice, NoticeOutcome.SKIPPED, run_id, 0))
        if send is not None:
            recipients = route_invoice_recipients(invoice.client, opt_outs.required)
            outcome = NoticeOutcome.SENT if recipients else NoticeOutcome.NO_RECIPIENT
            rows.append(_row(invoice, send, outcome, run_id, len(recipients)))
            planned[invoice.id] = (send, recipients)

    claimed = insert_new_rows(
        session,
        table_of(InvoiceNotice),
        rows,
        ("invoice_id", "notice"),
    )
    result.skipped = sum(
        1 for r in rows if r["outcome"] == NoticeOutcome.SKIPPED and _key(r) in claimed
    )
    for invoice in invoices:
        if invoice.id not in planned:
            continue
        notice, recipients = planned[invoice.id]
        if (invoice.id, notice.value) not in claimed:
            continue  # a concurrent run claimed it first and sends it
        if not recipients:
            result.no_recipient += 1
            continue
        try:
            messages = queue_notice_emails(
                session, company_name, opt_outs, invoice, notice, recipients
            )
        except DBAPIError:
            raise  # the database, not this invoice: the batch is retried
        except Exception as exc:
            # Its emails cannot be made (a template refusing its data): give the claim back
            # so a later run tries again, and let the rest of the batch go out.
            session.execute(
                delete(InvoiceNotice).where(
                    InvoiceNotice.invoice_id == invoice.id, InvoiceNotice.notice == notice.value
                )
            )
            result.problems.append(_problem(invoice, exc))
            continue
        result.sent[notice.value] += 1
        result.emails += messages
    return result


def _problem(invoice: Invoice, exc: Exception) -> str:
    problem = redact_addresses(f"invoice {invoice.id!r}: {type(exc).__name__}: {exc}")
    log.warning("invoice run left an invoice for later: %s", problem)
    return problem


def _row(
    invoice: Invoice, notice: Notice, outcome: NoticeOutcome, run_id: int | None, emails: int
) -> dict[str, Any]:
    return {
        "invoice_id": invoice.id,
        "notice": notice.value,
        "outcome": outcome.value,
        "run_id": run_id,
        "emails": emails,
    }


def _key(row: dict[str, Any]) -> tuple[str, str]:
    return (row["invoice_id"], row["notice"])
