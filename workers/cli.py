"""The `clientflow` command: event schemas, migrations, what was refused, the message log, demo."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from models.contracts import EVENTS, json_schemas
from models.emails import EmailMessage
from models.records import RejectedEvent
from workers import migrate, runtime
from workers.settings import get_settings

app = typer.Typer(
    help="Client-management worker for hosting and billing businesses.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
rejected_app = typer.Typer(
    help="Events refused for good, with their reasons.", no_args_is_help=True
)
emails_app = typer.Typer(help="The email message log.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(rejected_app, name="rejected")
app.add_typer(emails_app, name="emails")

console = Console()


@app.command()
def schema(
    event: str | None = typer.Argument(None, help="One event name, e.g. clients.add."),
) -> None:
    """Print the JSON Schema of every event (or of one)."""
    schemas = json_schemas()
    if event is not None:
        if event not in EVENTS:
            raise typer.BadParameter(f"unknown event {event!r}; known: {', '.join(EVENTS)}")
        schemas = {event: schemas[event]}
    typer.echo(json.dumps(schemas, indent=2))


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    url = get_settings().effective_database_url
    migrate.upgrade(url, revision)
    console.print(f"database at revision [bold]{migrate.current(url)}[/bold]")


@db_app.command("current")
def db_current() -> None:
    """Print the database's migration revision."""
    typer.echo(migrate.current(get_settings().effective_database_url) or "empty")


@rejected_app.command("list")
def rejected_list(
    limit: int = typer.Option(50, help="Newest first, at most this many."),
    as_json: bool = typer.Option(False, "--json", help="One JSON array, for scripts."),
) -> None:
    """List refused events: when, event id, task, reason."""
    with runtime.session_factory()() as session:
        rows = session.scalars(
            select(RejectedEvent).order_by(RejectedEvent.id.desc()).limit(limit)
        ).all()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "created_at": r.created_at.isoformat(),
                        "event_id": r.event_id,
                        "task_name": r.task_name,
                        "reason": r.reason,
                        "payload": r.payload,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    table = Table(title=f"Rejected events ({len(rows)} shown)")
    for column in ("id", "when (UTC)", "event id", "task", "reason"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            str(r.id), f"{r.created_at:%Y-%m-%d %H:%M:%S}", r.event_id or "-", r.task_name, r.reason
        )
    console.print(table)


@emails_app.command("list")
def emails_list(
    status: str | None = typer.Option(None, help="queued, sent or failed."),
    limit: int = typer.Option(50, help="Newest first, at most this many."),
) -> None:
    """List the message log: recipient, template, status, attempts, last error."""
    with runtime.session_factory()() as session:
        query = select(EmailMessage).order_by(EmailMessage.created_at.desc()).limit(limit)
        if status:
            query = query.where(EmailMessage.status == status)
        rows = session.scalars(query).all()
    table = Table(title=f"Email message log ({len(rows)} shown)")
    for column in ("when (UTC)", "to", "template", "status", "attempts", "last error"):
        table.add_column(column, overflow="fold")
    for m in rows:
        table.add_row(
            f"{m.created_at:%Y-%m-%d %H:%M:%S}",
            m.to_address,
            m.template,
            m.status,
            str(m.attempts),
            m.last_error or "",
        )
    console.print(table)


@app.command()
def demo(
    folder: str = typer.Option("var/demo", "--dir", help="Wiped and filled by the demo."),
) -> None:
    """Run a scripted story through a real worker on the embedded default (no servers)."""
    from pathlib import Path

    from workers.demo import run_demo

    raise typer.Exit(run_demo(Path(folder), console))


def main() -> None:
    app()
