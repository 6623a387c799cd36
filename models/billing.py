"""Services (hosting products a client pays for), invoices, and the notices sent per invoice."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow
from models.clients import Client

# Money is exact: twelve digits, two of them decimals (WHMCS stores decimal(16,2); ours bounds
# the contract at 9,999,999,999.99), always next to its ISO 4217 currency code.
Money = Numeric(12, 2)
# The ids of invoices the run generates start with this; upstream may pay such an invoice but
# never create or overwrite one (models/contracts/billing.py), so a publisher cannot pre-empt
# a period's invoice.
GENERATED_INVOICE_PREFIX = "auto:"


class ServiceStatus(StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    SUSPENDED = "Suspended"
    TERMINATED = "Terminated"
    CANCELLED = "Cancelled"


class BillingCycle(StrEnum):
    FREE = "Free Account"
    ONE_TIME = "One Time"
    MONTHLY = "Monthly"
    QUARTERLY = "Quarterly"
    SEMI_ANNUALLY = "Semi-Annually"
    ANNUALLY = "Annually"
    BIENNIALLY = "Biennially"
    TRIENNIALLY = "Triennially"


class InvoiceStatus(StrEnum):
    UNPAID = "Unpaid"
    PAID = "Paid"
    CANCELLED = "Cancelled"
    REFUNDED = "Refunded"


class Notice(StrEnum):
    """The emails an invoice can cause, each at most once (invoice_notices' primary key)."""

    INVOICE_CREATED = "invoice_created"
    PAYMENT_REMINDER = "payment_reminder"
    FIRST_OVERDUE = "overdue_first"
    SECOND_OVERDUE = "overdue_second"
    THIRD_OVERDUE = "overdue_third"
    PAYMENT_CONFIRMATION = "payment_confirmation"


class NoticeOutcome(StrEnum):
    SENT = "sent"  # its emails are in the message log (their delivery status is there)
    # Its time passed while no run happened (catch-up sends only the notice due now).
    SKIPPED = "skipped"
    # Nobody to send it to: the holder turned invoice mail off and no contact takes it.
    NO_RECIPIENT = "no_recipient"


class Service(Base):
    __tablename__ = "services"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id"), index=True)
    product: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    billing_cycle: Mapped[str] = mapped_column(String(16))
    next_due_date: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        # The run's generation pass pages through active services falling due.
        Index("ix_services_status_next_due_date", "status", "next_due_date"),
    )


class Invoice(Base):
    __tablename__ = "invoices"

    # Upstream ids are at most 64 characters; invoices the run generates are named
    # GENERATED_INVOICE_PREFIX + "<service id>:<yyyymmdd>", so one period of one service has
    # one invoice.
    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id"), index=True)
    number: Mapped[str] = mapped_column(String(96))
    date: Mapped[dt.date] = mapped_column(Date)
    due_date: Mapped[dt.date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    # [{"description": str, "amount": "12.50"}]: part of the invoice document, always read
    # with it and never queried alone, so it lives in the row (one query less per batch).
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    subtotal: Mapped[Decimal] = mapped_column(Money)
    tax: Mapped[Decimal] = mapped_column(Money)
    total: Mapped[Decimal] = mapped_column(Money)
    balance: Mapped[Decimal] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(16))
    date_paid: Mapped[dt.date | None] = mapped_column(Date)
    service_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    client: Mapped[Client] = relationship()
    notices: Mapped[list[InvoiceNotice]] = relationship(
        back_populates="invoice", order_by="InvoiceNotice.created_at"
    )

    __table_args__ = (
        # The notice pass pages through unpaid invoices in id order.
        Index("ix_invoices_status_id", "status", "id"),
    )


class InvoiceNotice(Base):
    """One row per (invoice, notice): the primary key is what makes each notice exactly-once.

    Inserted in the same transaction as the notice's emails and their outbox row, so either
    all of them exist or none; a second run (or a concurrent one) finds the row and sends nothing.
    """

    __tablename__ = "invoice_notices"

    invoice_id: Mapped[str] = mapped_column(
        ForeignKey("invoices.id", ondelete="CASCADE"), primary_key=True
    )
    notice: Mapped[str] = mapped_column(String(32), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16))
    # The scheduled run that wrote it (None for a Payment Confirmation, sent by its event, and
    # once retention pruned the run: the row stays, it keeps the notice exactly-once).
    # Indexed for that prune, which detaches a run's notices before deleting it.
    run_id: Mapped[int | None] = mapped_column(ForeignKey("scheduled_runs.id"), index=True)
    emails: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    invoice: Mapped[Invoice] = relationship(back_populates="notices")


class InvoicePayment(Base):
    """A payment recorded by invoices.record_payment. A gateway's transaction id is applied
    once per invoice, and an upsert that does not know of a payment cannot erase it: the
    stored balance never exceeds the total less these payments (services/invoices.py)."""

    __tablename__ = "invoice_payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    invoice_id: Mapped[str] = mapped_column(
        ForeignKey("invoices.id", ondelete="CASCADE"), index=True
    )
    # None when the publisher gave none; such payments are told apart by their event only.
    transaction_id: Mapped[str | None] = mapped_column(String(200))
    amount: Mapped[Decimal] = mapped_column(Money)
    date: Mapped[dt.date] = mapped_column(Date)
    event_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("invoice_id", "transaction_id", name="uq_invoice_payments_transaction"),
    )
