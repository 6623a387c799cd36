"""`clientflow rejected`: what was refused, and why."""

from __future__ import annotations

import json

import typer
from rich.table import Table
from sqlalchemy import select

from models.records import RejectedEvent
from workers.cli.common import console, database, when
from workers.ops.render import literal

rejected_app = typer.Typer(help="Events refused, with their reasons.", no_args_is_help=True)


@rejected_app.command("list")
def rejected_list(
    limit: int = typer.Option(50, help="Newest first, at most this many."),
    as_json: bool = typer.Option(False, "--json", help="One JSON array, for scripts."),
) -> None:
    """List refused events: when, event id, task, reason, and what a held event waits for."""
    with database() as session:
        rows = session.scalars(
            select(RejectedEvent).order_by(RejectedEvent.id.desc()).limit(limit)
        ).all()
    if as_json:
        records = [
            {
                "id": r.id,
                "created_at": r.created_at.isoformat(),
                "event_id": r.event_id,
                "task_name": r.task_name,
                "reason": r.reason,
                "payload": r.payload,
                "waiting_for": r.waiting_for,
                "released_at": r.released_at.isoformat() if r.released_at else None,
            }
            for r in rows
        ]
        typer.echo(json.dumps(records, indent=2))
        return
    table = Table(title=f"Rejected events ({len(rows)} shown)")
    for column in ("id", "when (UTC)", "event id", "task", "reason", "waiting for"):
        table.add_column(column, overflow="fold")
    for r in rows:
        waiting = ""
        if r.waiting_for:
            waiting = f"released {when(r.released_at)}" if r.released_at else r.waiting_for
        table.add_row(
            str(r.id),
            when(r.created_at),
            literal(r.event_id or "-"),
            literal(r.task_name),
            literal(r.reason),
            literal(waiting),
        )
    console.print(table)
