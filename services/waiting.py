"""Events that named a client or contact before it was added, released once it is."""

from __future__ import annotations

import json

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.base import utcnow
from models.billing import Invoice
from models.clients import Client, Contact
from models.records import RejectedEvent
from services import outbox
from services.context import HandlerContext

_AWAITED = {"client": Client, "contact": Contact, "invoice": Invoice}


def lock_waiting(session: Session, waiting_for: str) -> None:
    """Serialize, per key, "add the thing and release what waits for it" with "record an event
    as waiting for it". Without it, an event refused while the thing's transaction is still
    open can record its waiting row after that transaction looked for waiting rows, and wait
    forever. PostgreSQL only: SQLite runs one writer at a time anyway.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(waiting_for))))


def release_waiting(ctx: HandlerContext, waiting_for: str) -> int:
    """Re-publish (after this commit) every event waiting for `waiting_for`, once each."""
    lock_waiting(ctx.session, waiting_for)
    rows = ctx.session.scalars(
        select(RejectedEvent)
        .where(RejectedEvent.waiting_for == waiting_for, RejectedEvent.released_at.is_(None))
        .order_by(RejectedEvent.id)
    ).all()
    for row in rows:
        row.released_at = utcnow()
        ctx.stage(row.task_name, json.loads(row.payload))
    return len(rows)


def release_if_arrived(session: Session, row: RejectedEvent, staged: list[int]) -> None:
    """Before a waiting row commits: if what it waits for was added meanwhile (its add held
    the lock until it committed), release the event at once instead of holding it."""
    if row.waiting_for is None:
        return
    lock_waiting(session, row.waiting_for)
    kind, _, ident = row.waiting_for.partition(":")
    if session.get(_AWAITED[kind], ident) is None:
        return
    row.released_at = utcnow()
    message = outbox.stage(session, row.task_name, json.loads(row.payload))
    session.flush()
    staged.append(message.id)
