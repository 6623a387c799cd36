"""The generation pass: one invoice per due period of every Active service, in batches."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import Session

from models.base import table_of
from models.billing import (
    GENERATED_INVOICE_PREFIX,
    BillingCycle,
    Invoice,
    InvoiceStatus,
    Service,
    ServiceStatus,
)
from services.invoice_run.ranges import id_range
from services.sql import insert_new_rows

MONTHS = {
    BillingCycle.MONTHLY: 1,
    BillingCycle.QUARTERLY: 3,
    BillingCycle.SEMI_ANNUALLY: 6,
    BillingCycle.ANNUALLY: 12,
    BillingCycle.BIENNIALLY: 24,
    BillingCycle.TRIENNIALLY: 36,
}
# A service years behind must not fill one batch with hundreds of invoices; what is left
# is still due and the next run goes on with it.
MAX_PERIODS_PER_RUN = 12


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or the month's last day when it has no such day."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def invoice_id_for(service_id: str, due: date) -> str:
    """Deterministic, so the primary key itself allows one invoice per service period."""
    return f"{GENERATED_INVOICE_PREFIX}{service_id}:{due:%Y%m%d}"


def services_due(on: date, lead_days: int) -> list[ColumnElement[bool]]:
    """What makes a service owe invoices on day `on`: Active, billed, due within the lead time."""
    return [
        Service.status == ServiceStatus.ACTIVE,
        Service.billing_cycle != BillingCycle.FREE,
        Service.next_due_date.is_not(None),
        Service.next_due_date <= on + timedelta(days=lead_days),
    ]


def select_services(
    on: date, lead_days: int, after: str, through: str | None, size: int
) -> Select[Service]:
    """Services falling due, in id order above `after` and up to `through` (None: no end).

    SKIP LOCKED (PostgreSQL): a concurrent run takes other services instead of waiting.
    """
    return (
        select(Service)
        .where(*services_due(on, lead_days), *id_range(Service.id, after, through))
        .order_by(Service.id)
        .limit(size)
        .with_for_update(skip_locked=True)
    )


@dataclass
class Generated:
    invoices: int


def generate_batch(
    session: Session, services: list[Service], on: date, lead_days: int
) -> Generated:
    """Invoice rows for every period due by the horizon; next_due_date moves past them."""
    horizon = on + timedelta(days=lead_days)
    rows: list[dict[str, Any]] = []
    for service in services:
        due = service.next_due_date
        periods = 0
        while due is not None and due <= horizon and periods < MAX_PERIODS_PER_RUN:
            following = _following_due(service, due)
            rows.append(_invoice_row(service, due, following, on))
            due, periods = following, periods + 1
        # One executemany UPDATE for the batch at flush, not a query per service.
        service.next_due_date = due
    inserted = insert_new_rows(session, table_of(Invoice), rows, ("id",))
    session.flush()
    return Generated(invoices=len(inserted))


def _following_due(service: Service, due: date) -> date | None:
    months = MONTHS.get(BillingCycle(service.billing_cycle))
    return None if months is None else add_months(due, months)  # One Time: billed once


def _invoice_row(service: Service, due: date, following: date | None, on: date) -> dict[str, Any]:
    period = (
        "" if following is None else f" ({due:%Y-%m-%d} - {following - timedelta(days=1):%Y-%m-%d})"
    )
    invoice_id = invoice_id_for(service.id, due)
    return {
        "id": invoice_id,
        "client_id": service.client_id,
        "number": invoice_id.removeprefix(GENERATED_INVOICE_PREFIX),
        "date": min(on, due),
        "due_date": due,
        "currency": service.currency,
        "items": [{"description": f"{service.product}{period}", "amount": str(service.amount)}],
        "subtotal": service.amount,
        "tax": 0,
        "total": service.amount,
        "balance": service.amount,
        "status": InvoiceStatus.UNPAID.value,
        "service_id": service.id,
    }
