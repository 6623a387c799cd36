"""`clientflow invoices run [--date D] [--on-workers]`: the scheduled invoice run by hand, with
progress."""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from models.base import utcnow
from models.billing import Invoice, InvoiceStatus, Service, ServiceStatus
from models.ops import ScheduledRun
from services.invoice_run.handoff import to_workers
from services.invoice_run.policy import RunPolicy
from services.invoice_run.run import load_run, run_invoices, start_run
from tasks import runtime
from tasks.policy import invoice_run_policy
from workers.cli.common import console, database, require_broker

invoices_app = typer.Typer(help="Invoices and the scheduled invoice run.", no_args_is_help=True)

# How often --on-workers reads the run's row while it follows it.
FOLLOW_SECONDS = 0.5


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
    on_workers: bool = typer.Option(
        False,
        "--on-workers",
        help="Hand the run's chunks to the workers, as beat's run does, and follow it here "
        "until it ends (Ctrl-C stops following, not the run). Default: run every chunk in "
        "this process, no worker needed.",
    ),
) -> None:
    """Generate invoices for services falling due and send the notices due, like beat does.

    Safe next to a running beat or a second `invoices run`: each notice is sent once.
    """
    on = _parse_date(run_date)
    policy = invoice_run_policy()
    # The deliveries (and with --on-workers the chunks) are published to the broker: it must
    # answer before anything is done.
    require_broker()
    finished = _on_workers(policy, on) if on_workers else _here(policy, on)
    console.print(summary_table(finished.id, on, finished.status, finished.counts))
    if finished.error:
        console.print(finished.error, markup=False, highlight=False)
    if finished.status != "succeeded":
        raise typer.Exit(1)


def _bars() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _here(policy: RunPolicy, on: date) -> ScheduledRun:
    """Every chunk in this process, one after another, with a bar per pass."""
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
    with _bars() as bars:
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
    return finished


def _on_workers(policy: RunPolicy, on: date) -> ScheduledRun:
    """Plan the run here, its chunks published for the workers; a bar of chunks ended."""
    sessions = runtime.session_factory()
    run = start_run(sessions, policy, on, to_workers(sessions, runtime.publish))
    with _bars() as bars:
        bar = bars.add_task(f"chunks of run {run.id} (on the workers)", total=None)
        while True:
            chunks = run.counts["chunks"]
            bars.update(bar, total=chunks["planned"], completed=chunks["done"] + chunks["failed"])
            if run.finished_at is not None:
                return run
            time.sleep(FOLLOW_SECONDS)
            run = load_run(sessions, run.id)


def summary_table(run_id: int, on: date, status: str, counts: dict[str, Any]) -> Table:
    table = Table(title=f"Invoice run {run_id} for {on.isoformat()}: {status}")
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
    table.add_row("chunks", str(counts["chunks"]["planned"]))
    return table
