"""The `clientflow` command: schemas, migrations, the demo, and the subcommands of ops."""

from __future__ import annotations

import json

import typer

from models.contracts import EVENTS, json_schemas
from workers import migrate
from workers.cli_common import console
from workers.cli_dlq import dlq_app, outbox_app
from workers.cli_invoices import invoices_app
from workers.cli_ops import ops_app
from workers.cli_records import emails_app, rejected_app
from workers.settings import get_settings

app = typer.Typer(
    help="Client-management worker for hosting and billing businesses.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(rejected_app, name="rejected")
app.add_typer(emails_app, name="emails")
app.add_typer(dlq_app, name="dlq")
app.add_typer(outbox_app, name="outbox")
app.add_typer(invoices_app, name="invoices")
app.add_typer(ops_app, name="ops")


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
