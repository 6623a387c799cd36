"""Shared by the invoice tests: a run policy, running the run, and reading what it sent."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from conftest import COMPANY, Publisher
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.billing import InvoiceNotice
from models.emails import EmailMessage
from models.ops import ScheduledRun
from services.db import SessionFactory
from services.invoice_run.chunk_work import Progress
from services.invoice_run.policy import RunPolicy
from services.invoice_run.run import run_invoices
from services.invoice_run.schedule import NoticeSchedule

POLICY = RunPolicy(
    lead_days=14,
    schedule=NoticeSchedule(reminder_days=7, overdue_days=(1, 7, 14)),
    batch_size=3,
    company_name=COMPANY,
    # Two batches a chunk: a run of a few invoices already has several chunks.
    chunk_size=6,
)


def run(
    session_factory: SessionFactory,
    publisher: Publisher,
    on: str,
    progress: Progress | None = None,
    **policy: Any,
) -> ScheduledRun:
    return run_invoices(
        session_factory,
        publisher,
        replace(POLICY, **policy),
        date.fromisoformat(on),
        progress=progress,
    )


def sent(session: Session, invoice_id: str | None = None) -> list[tuple[str, str]]:
    """(template, address) of every invoice email in the log, in a stable order."""
    query = select(EmailMessage).where(EmailMessage.event_id.like("invoice:%"))
    if invoice_id is not None:
        query = query.where(EmailMessage.event_id.like(f"invoice:{invoice_id}:%"))
    return sorted((m.template, m.to_address) for m in session.scalars(query))


def notices(session: Session, invoice_id: str) -> dict[str, str]:
    """notice -> outcome recorded for one invoice."""
    rows = session.scalars(select(InvoiceNotice).where(InvoiceNotice.invoice_id == invoice_id))
    return {row.notice: row.outcome for row in rows}
