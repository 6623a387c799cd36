"""The invoice run's policy (lead time, notice days, batch size) as the settings give it."""

from __future__ import annotations

from models.settings import get_settings
from services.invoice_run.run import RunPolicy
from services.invoice_run.schedule import NoticeSchedule


def invoice_run_policy() -> RunPolicy:
    settings = get_settings()
    return RunPolicy(
        lead_days=settings.invoice_lead_days,
        schedule=NoticeSchedule(
            reminder_days=settings.invoice_reminder_days,
            overdue_days=settings.invoice_overdue_days,
        ),
        batch_size=settings.invoice_batch_size,
        company_name=settings.company_name,
    )
