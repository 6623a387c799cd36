"""invoices.run, the scheduled invoice run beat starts (invoice events are in tasks/events.py)."""

from __future__ import annotations

from datetime import date
from typing import Any

from celery import Task, shared_task
from pydantic import BaseModel, ValidationError

from models.base import utcnow
from services.invoice_run.run import run_invoices
from tasks import runtime
from tasks.base import UnboundedTask
from tasks.failures import retry_or_bury
from tasks.policy import invoice_run_policy


# An ISO date ("2026-11-25"); anything else is buried with a reason, not failed silently.
class RunArguments(BaseModel):
    run_date: date


@shared_task(name="invoices.run", bind=True, base=UnboundedTask)
def run(self: Task[..., dict[str, Any]], run_date: str | None = None) -> dict[str, Any]:
    """Beat publishes it without a date (today, UTC); `clientflow invoices run` may pass one.

    Safe to run twice, at once or after a crash: every notice is claimed by a unique row.
    """
    try:
        on = RunArguments(run_date=run_date).run_date if run_date is not None else utcnow().date()
    except ValidationError as exc:
        retry_or_bury(self, {"run_date": run_date}, exc)
    try:
        finished = run_invoices(
            runtime.session_factory(), runtime.publish, invoice_run_policy(), on
        )
    except Exception as exc:
        # Retried with the date fixed, so a run retried after midnight runs for its own day.
        retry_or_bury(self, {"run_date": on.isoformat()}, exc)
    return {"run_id": finished.id, **finished.counts}
