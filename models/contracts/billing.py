"""Billing events: services.upsert, invoices.upsert, invoices.record_payment."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, model_validator

from models.billing import GENERATED_INVOICE_PREFIX, BillingCycle, InvoiceStatus, ServiceStatus
from models.contracts.common import (
    Contract,
    Currency,
    Date,
    Event,
    Id,
    InvoiceId,
    Line,
    Money,
    Short,
)

# An invoice with hundreds of lines is a data error upstream, and the emails carry them all.
MAX_LINE_ITEMS = 200


class UpsertService(Event):
    service_id: Id
    product: Line = Field(description="The product name, as it appears on invoices.")
    status: ServiceStatus
    amount: Money = Field(ge=0, description="Recurring amount per billing cycle.")
    currency: Currency
    billing_cycle: BillingCycle
    next_due_date: Date | None = Field(
        description="When the next period is due; null for One Time and Free Account."
    )


class LineItem(Contract):
    description: Line
    amount: Money


class UpsertInvoice(Event):
    invoice_id: InvoiceId
    number: Short
    date: Date
    due_date: Date
    currency: Currency
    items: list[LineItem] = Field(min_length=1, max_length=MAX_LINE_ITEMS)
    subtotal: Money
    tax: Money = Field(ge=0)
    total: Money
    balance: Money = Field(ge=0)
    status: InvoiceStatus = InvoiceStatus.UNPAID

    @model_validator(mode="after")
    def _adds_up(self) -> UpsertInvoice:
        lines = sum((item.amount for item in self.items), Decimal(0))
        if lines != self.subtotal:
            raise ValueError(f"subtotal {self.subtotal} is not the sum of the line items {lines}")
        if self.subtotal + self.tax != self.total:
            raise ValueError(f"total {self.total} is not subtotal {self.subtotal} + tax {self.tax}")
        if self.balance > self.total:
            raise ValueError(f"balance {self.balance} exceeds total {self.total}")
        if self.due_date < self.date:
            raise ValueError("due_date is before the invoice date")
        if self.status == InvoiceStatus.UNPAID and self.balance == 0:
            # It could never be settled: no payment is above 0 and at most the balance.
            raise ValueError("an Unpaid invoice must have a balance above 0; send it as Paid")
        if self.invoice_id.startswith(GENERATED_INVOICE_PREFIX):
            raise ValueError(
                f"invoice ids starting with {GENERATED_INVOICE_PREFIX!r} are the ones clientflow "
                "generates; upstream invoices need ids of their own"
            )
        return self


class RecordPayment(Event):
    invoice_id: InvoiceId
    amount: Money = Field(gt=0)
    date: Date
    transaction_id: Line | None = Field(default=None, description="The gateway's reference.")
