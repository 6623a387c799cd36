"""`clientflow invoices run [--date D]`: the scheduled invoice run by hand, with progress."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from models.base import utcnow
from models.billing import Invoice, InvoiceStatus, Service, ServiceStatus
from services.invoice_run.run import run_invoices
from tasks import runtime
from tasks.policy import invoice_run_policy
from workers.cli.common import console, database, require_broker

invoices_app = typer.Typer(help="Invoices and the scheduled invoice run.", no_args_is_help=True)


def _parse_date(value: str | None) -> date:
    if value is None:
        return utcnow().date()
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date like 2026-01-31") from exc


@invoices_app.command("run")
def run(
    run_date: str | None = typer.Option(
        None, "--date", help="Run as of this day (YYYY-MM-DD); default today (UTC)."
    ),
) -> None:
    """Generate invoices for services falling due and send the notices due, like beat does.

    Safe next to a running beat or a second `invoices run`: each notice is sent once.
    """
    on = _parse_date(run_date)
    policy = invoice_run_policy()
    # The deliveries are published to the broker: it must answer before anything is done.
    require_broker()
    with database() as session:
        # Upper bounds for the bars: what the two passes will at most look at.
        services_due = session.scalar(
            select(func.count()).where(
                Service.status == ServiceStatus.ACTIVE,
                Service.next_due_date <= on + timedelta(days=policy.lead_days),
            )
        )
        unpaid = session.scalar(
            select(func.count()).where(Invoice.status == InvoiceStatus.UNPAID, Invoice.date <= on)
        )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bars:
        generate = bars.add_task("services falling due", total=services_due or 0)
        notify = bars.add_task("unpaid invoices", total=unpaid or 0)
        bar = {"generate": generate, "notify": notify}

        def advance(phase: str, examined: int, _: dict[str, Any]) -> None:
            if phase == "notify":
                # Generated invoices join the notice pass: grow its bar as they appear.
                task = bars.tasks[notify]
                bars.update(notify, total=max(task.total or 0, task.completed + examined))
            bars.advance(bar[phase], examined)

        finished = run_invoices(
            runtime.session_factory(), runtime.publish, policy, on, progress=advance
        )
        for task in bar.values():
            bars.update(task, total=bars.tasks[task].completed)
    console.print(summary_table(finished.id, on, finished.counts))


def summary_table(run_id: int, on: date, counts: dict[str, Any]) -> Table:
    table = Table(title=f"Invoice run {run_id} for {on.isoformat()}: succeeded")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("invoices generated", str(counts["generated"]))
    for notice, number in counts["notices"].items():
        table.add_row(f"notice {notice}", str(number))
    table.add_row("notices skipped (their day passed unrun)", str(counts["skipped"]))
    table.add_row("notices with no recipient", str(counts["no_recipient"]))
    table.add_row("emails queued", str(counts["emails"]))
    batches, queries = counts["batches"], counts["queries_per_batch"]
    table.add_row("batches (generate / notify)", f"{batches['generate']} / {batches['notify']}")
    table.add_row("most queries in a batch", f"{queries['generate']} / {queries['notify']}")
    return table
