"""Events that named a client, contact or invoice before it was added, held and released once
it is.

Parking and releasing race each other: a contacts.add can look for its client while the
clients.add is committing. Both sides take a lock on the key ("client:C1") and the parking
side checks again under it, so an event is either released by the add or sees the client and
is retried, never left waiting for something that already exists.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select, text, update
from sqlalchemy.orm import Session

from models.base import table_of, utcnow
from models.billing import Invoice
from models.clients import Client, Contact
from models.records import RejectedEvent
from services.context import HandlerContext
from services.db import SessionFactory
from services.errors import Transient
from services.rejections import MAX_PAYLOAD_CHARS, event_id_of, payload_json, printable

_REJECTED = table_of(RejectedEvent)


def lock_key(session: Session, waiting_for: str) -> None:
    """Held to the end of the transaction. SQLite needs none: it has one writer at a time."""
    lock_keys(session, [waiting_for])


def lock_keys(session: Session, keys: Sequence[str]) -> None:
    """lock_key for each, in one statement and in sorted order (two transactions locking some
    of the same keys take them in the same order, so neither waits for the other forever)."""
    if session.get_bind().dialect.name != "postgresql" or not keys:
        return
    # On the connection, not the session: no autoflush of the handler's pending rows first
    # (they are flushed with the rest at the commit, and the lock does not need them
    # written: it is held until that commit). unnest yields the array's elements in order.
    session.connection().execute(_LOCK_EACH, {"keys": sorted(set(keys))})


_LOCK_EACH = text(
    "SELECT pg_advisory_xact_lock(hashtext(k)) FROM unnest(CAST(:keys AS text[])) AS k"
)


def key_lock(session: Session, key: ColumnElement[str]) -> ColumnElement[Any] | None:
    """lock_key's lock on `key` (a SQL expression giving the key) for a statement that
    writes what is waited for to take as it writes it, in its RETURNING: a round trip
    fewer than lock_keys after it. None where lock_key takes no lock (SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    return func.pg_advisory_xact_lock(func.hashtext(key))


_AWAITED: dict[str, type[Client] | type[Contact] | type[Invoice]] = {
    "client": Client,
    "contact": Contact,
    "invoice": Invoice,  # a payment can overtake its invoice
}


def _exists(session: Session, waiting_for: str) -> bool:
    kind, _, key = waiting_for.partition(":")
    if kind == "contact" and "/" in key:
        client_id, _, contact_id = key.partition("/")
        contact = session.get(Contact, contact_id)
        return contact is not None and contact.client_id == client_id
    return session.get(_AWAITED[kind], key) is not None


def park(
    session_factory: SessionFactory,
    task_name: str,
    payload: dict[str, Any],
    reason: str,
    waiting_for: str,
) -> RejectedEvent | None:
    """Record the event as waiting; None when the payload is too big to be replayed later."""
    text = payload_json(payload)
    if len(text) > MAX_PAYLOAD_CHARS:
        return None
    with session_factory() as session:
        lock_key(session, waiting_for)
        row = RejectedEvent(
            event_id=event_id_of(payload),
            task_name=printable(task_name, 60),
            payload=text,
            reason=printable(reason, 4000),
            waiting_for=waiting_for,
        )
        session.add(row)
        # Written first, then checked: on SQLite the write waits for a committing add, so
        # the check below sees it.
        session.flush()
        if _exists(session, waiting_for):
            session.rollback()
            raise Transient(f"{waiting_for} was added meanwhile; applying the event again")
        session.commit()
    return row


def release_waiting(ctx: HandlerContext, waiting_for: str) -> int:
    """Re-publish (after this commit) every event waiting for `waiting_for`, once each."""
    return release_waiting_for_each([(ctx, waiting_for)])


def release_waiting_for_each(
    waits: Sequence[tuple[HandlerContext, str]], *, locked: bool = False
) -> int:
    """release_waiting for several keys of one session, each event staged by the handler
    whose key it waited for: one lock statement and one query for all of them. `locked`:
    the statement that wrote them already took their locks (key_lock)."""
    if not waits:
        return 0
    session = waits[0][0].session
    keys = [waiting_for for _, waiting_for in waits]
    if not locked:
        lock_keys(session, keys)
    # Core on the table: asked on every add, and almost always answered with no row, which
    # the ORM's entity loading would make cost several times the statement.
    connection = session.connection()
    rows = connection.execute(
        select(_REJECTED.c.id, _REJECTED.c.task_name, _REJECTED.c.payload, _REJECTED.c.waiting_for)
        .where(_REJECTED.c.waiting_for.in_(keys), _REJECTED.c.released_at.is_(None))
        .order_by(_REJECTED.c.id)
    ).all()
    if rows:
        connection.execute(
            update(_REJECTED)
            .where(_REJECTED.c.id.in_([row.id for row in rows]))
            .values(released_at=utcnow())
        )
    handler_of = {waiting_for: ctx for ctx, waiting_for in waits}
    for row in rows:
        handler_of[row.waiting_for].stage(row.task_name, json.loads(row.payload))
    return len(rows)
