"""Policies as the settings give them: the invoice run's (lead time, notice days, batch and
chunk sizes) and what recipients may opt out of."""

from __future__ import annotations

from models.settings import get_settings
from services.invoice_run.policy import RunPolicy
from services.invoice_run.schedule import NoticeSchedule
from services.opt_outs import OptOutPolicy


def opt_out_policy() -> OptOutPolicy:
    settings = get_settings()
    return OptOutPolicy(
        required=frozenset(settings.required_email_categories),
        unsubscribe_url=settings.unsubscribe_url,
        secret=settings.unsubscribe_secret.get_secret_value().encode(),
        token_lifetime_seconds=settings.unsubscribe_token_days * 86400,
    )


def invoice_run_policy() -> RunPolicy:
    settings = get_settings()
    return RunPolicy(
        lead_days=settings.invoice_lead_days,
        schedule=NoticeSchedule(
            reminder_days=settings.invoice_reminder_days,
            overdue_days=settings.invoice_overdue_days,
        ),
        batch_size=settings.invoice_batch_size,
        company_name=settings.company,
        chunk_size=settings.invoice_chunk_size,
        opt_outs=opt_out_policy(),
    )
