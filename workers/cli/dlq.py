"""`clientflow dlq` and `clientflow outbox`: dead letters and side effects still owed."""

from __future__ import annotations

import json
from datetime import timedelta

import typer
from rich.table import Table
from sqlalchemy import func, select

from models.dead_letters import DeadLetter
from models.outbox import OutboxMessage
from models.settings import get_settings
from services import dead_letters, outbox
from tasks import runtime
from workers.cli.common import console, database, require_broker, when
from workers.ops.render import literal

dlq_app = typer.Typer(
    help="Dead letters: tasks that can no longer be retried.", no_args_is_help=True
)
outbox_app = typer.Typer(help="Tasks owed by committed changes.", no_args_is_help=True)


@dlq_app.command("list")
def dlq_list(limit: int = typer.Option(50, help="Newest first, at most this many.")) -> None:
    """List dead letters: id, when, task, reason, attempts, replays."""
    with database():
        letters = dead_letters.list_dead_letters(runtime.session_factory(), limit)
    table = Table(title=f"Dead letters ({len(letters)} shown)")
    for column in ("id", "when (UTC)", "task", "reason", "errors", "replayed"):
        table.add_column(column, overflow="fold")
    for d in letters:
        replayed = f"{d.replay_count}x, last {when(d.replayed_at)}" if d.replay_count else "no"
        table.add_row(
            str(d.id),
            when(d.created_at),
            literal(d.task_name),
            literal(d.reason),
            str(len(d.errors)),
            replayed,
        )
    console.print(table)


@dlq_app.command("show")
def dlq_show(letter_id: int) -> None:
    """Everything about one dead letter, as JSON: payload and every error with its time."""
    with database():
        letter = dead_letters.get_dead_letter(runtime.session_factory(), letter_id)
    if letter is None:
        console.print(f"[red]no dead letter {letter_id}[/red]")
        raise typer.Exit(1)
    typer.echo(json.dumps(_as_dict(letter), indent=2))


@dlq_app.command("replay")
def dlq_replay(
    letter_id: int | None = typer.Argument(None, help="One dead letter; omit with --all."),
    replay_all: bool = typer.Option(False, "--all", help="Every letter not yet replayed."),
) -> None:
    """Publish a dead letter's task again; it runs through the same idempotency checks."""
    if (letter_id is None) == (not replay_all):
        raise typer.BadParameter("give one ID or --all")
    require_broker()
    with database():
        ids = None if replay_all else [letter_id] if letter_id is not None else None
        replayed = dead_letters.replay(runtime.session_factory(), runtime.publish, ids)
    if letter_id is not None and not replayed:
        console.print(f"[red]no dead letter {letter_id}[/red]")
        raise typer.Exit(1)
    console.print(f"replayed {len(replayed)} dead letter(s): {replayed}")


@dlq_app.command("purge")
def dlq_purge(
    replayed_only: bool = typer.Option(False, "--replayed", help="Only those replayed."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask."),
) -> None:
    """Delete dead letters (all, or only replayed ones)."""
    if not yes:
        typer.confirm("Delete dead letters for good?", abort=True)
    with database():
        count = dead_letters.purge(runtime.session_factory(), replayed_only)
    console.print(f"purged {count} dead letter(s)")


@outbox_app.command("status")
def outbox_status() -> None:
    """How many outbox rows are still unpublished, and the oldest of them."""
    with database() as session:
        pending = outbox.pending_count(session)
        oldest = session.scalar(
            select(func.min(OutboxMessage.created_at)).where(OutboxMessage.published_at.is_(None))
        )
    console.print(f"{pending} pending; oldest {when(oldest)}")


@outbox_app.command("relay")
def outbox_relay() -> None:
    """Publish pending outbox rows now (beat does this every few seconds)."""
    settings = get_settings()
    require_broker()
    with database():
        count = outbox.relay(
            runtime.session_factory(),
            runtime.publish,
            min_age=timedelta(0),
            sending_lease=timedelta(seconds=settings.sending_lease_seconds),
            forgotten_after=timedelta(seconds=settings.email_redeliver_after_seconds),
        )
    console.print(f"published {count} outbox row(s)")


def _as_dict(letter: DeadLetter) -> dict[str, object]:
    return {
        "id": letter.id,
        "task_name": letter.task_name,
        "task_id": letter.task_id,
        "kwargs": letter.kwargs,
        "reason": letter.reason,
        "errors": letter.errors,
        "created_at": letter.created_at.isoformat(),
        "replayed_at": letter.replayed_at.isoformat() if letter.replayed_at else None,
        "replay_count": letter.replay_count,
    }
