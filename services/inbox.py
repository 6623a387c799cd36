"""The inbox: an event's id is written first in its own transaction, claiming it.

One statement both records the event and tells whether it was already applied (INSERT … ON
CONFLICT DO NOTHING RETURNING, services/sql.py), instead of a read at the start and an insert
at the end. A redelivery arriving while the first delivery's transaction is still open waits
on the row and then sees it committed (a duplicate) or rolled back (applied here), rather than
failing on the primary key at commit.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from models.base import table_of, utcnow
from models.records import ProcessedEvent
from services.sql import insert_new_rows

_INBOX = table_of(ProcessedEvent)


def claim_event(session: Session, event_id: str, task_name: str, digest: str) -> bool:
    """True when this transaction recorded the event; False when the inbox already had it."""
    return bool(claim_events(session, task_name, {event_id: digest}))


def claim_events(session: Session, task_name: str, digests: dict[str, str]) -> set[str]:
    """claim_event for several events of one kind (event id -> payload digest) in one
    statement; returns the ids this transaction recorded."""
    now = utcnow()
    rows = [
        {
            "event_id": event_id,
            "task_name": task_name,
            "payload_sha256": digest,
            "processed_at": now,
        }
        for event_id, digest in digests.items()
    ]
    return {key[0] for key in insert_new_rows(session, _INBOX, rows, ("event_id",))}


def unclaim_events(session: Session, event_ids: set[str]) -> None:
    """Take back claims this transaction made (claim_events): as if never claimed here, once
    it commits."""
    session.execute(delete(_INBOX).where(_INBOX.c.event_id.in_(event_ids)))
