"""What every `clientflow` subcommand shares: the console and a database session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from workers import runtime

console = Console()


@contextmanager
def database() -> Iterator[Session]:
    """A session; a database that was never migrated gets one clear line, not a traceback."""
    try:
        with runtime.session_factory()() as session:
            yield session
    except (OperationalError, ProgrammingError) as exc:
        text = str(exc.orig)
        if "no such table" in text or "does not exist" in text:
            console.print(
                f"[red]the database is not migrated ({text.splitlines()[0]});"
                " run `clientflow db upgrade`[/red]"
            )
            raise typer.Exit(2) from exc
        raise


def when(value: object) -> str:
    from datetime import datetime

    return f"{value:%Y-%m-%d %H:%M:%S}" if isinstance(value, datetime) else "-"
