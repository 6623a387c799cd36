"""The `clientflow` command: schemas, migrations, the demo, and the subcommands of ops.

Every failure a person can fix (a database or broker that does not answer, a role that does not
exist, a bad CLIENTFLOW_* setting, a port in use, a bad option) ends the command with one line
on stderr saying what is wrong and what to do, and exit status 2; never a traceback. This is
done once, in ClientflowGroup.main, for every subcommand.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from models.contracts import EVENTS, json_schemas
from models.settings import get_settings
from workers import migrate
from workers.cli.clients import clients_app
from workers.cli.common import console, explain
from workers.cli.demo import run_demo
from workers.cli.dlq import dlq_app, outbox_app
from workers.cli.emails import emails_app
from workers.cli.invoices import invoices_app
from workers.cli.ops import ops_app
from workers.cli.records import rejected_app
from workers.cli.templates import templates_app

PROG = "clientflow"
USAGE_ERROR = 2


class ClientflowGroup(TyperGroup):
    """The root command; its main() turns every fixable failure into one line and exit 2.

    Both `clientflow` (main below) and typer's CliRunner go through main().
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            # Not standalone: click hands us its errors instead of printing them in a panel.
            code = super().main(args, PROG, complete_var, False, windows_expand_args, **extra)
        except typer.TyperException as exc:  # click's usage errors: a bad option or argument
            if type(exc).__name__ == "NoArgsIsHelpError":  # as typer itself tells it apart
                sys.exit(exc.exit_code)  # the help was already printed
            context = getattr(exc, "ctx", None)  # a usage error names its command
            hint = f" (see `{context.command_path} --help`)" if context is not None else ""
            _fail(exc.format_message() + hint, exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        except Exception as exc:
            line = explain(exc)
            if line is None:
                raise  # a bug: its traceback is what a developer needs
            _fail(line, USAGE_ERROR)
        # A command's typer.Exit(n) comes back as n; a command that returned, as None.
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    typer.secho(f"{PROG}: {' '.join(message.split())}", fg="red", err=True)
    sys.exit(code)


app = typer.Typer(
    cls=ClientflowGroup,
    help="Client-management worker for hosting and billing businesses.",
    no_args_is_help=True,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(rejected_app, name="rejected")
app.add_typer(emails_app, name="emails")
app.add_typer(clients_app, name="clients")
app.add_typer(dlq_app, name="dlq")
app.add_typer(outbox_app, name="outbox")
app.add_typer(invoices_app, name="invoices")
app.add_typer(ops_app, name="ops")
app.add_typer(templates_app, name="templates")


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


    raise typer.Exit(run_demo(Path(folder), console))


def main() -> None:
    app(prog_name=PROG)
