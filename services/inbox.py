"""The inbox: an event's id is written first in its own transaction, claiming it.

One statement both records the event and tells whether it was already applied (INSERT … ON
CONFLICT DO NOTHING RETURNING), instead of a read at the start and an insert at the end. A
redelivery arriving while the first delivery's transaction is still open waits on the row and
then sees it committed (a duplicate) or rolled back (applied here), rather than failing on the
primary key at commit.
"""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.base import utcnow
from models.records import ProcessedEvent


def claim_event(session: Session, event_id: str, task_name: str, digest: str) -> bool:
    """True when this transaction recorded the event; False when the inbox already had it."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    # On the table, not the mapped class: a plain Core statement skips the ORM's bulk-insert
    # machinery, which costs more Python than the statement itself.
    table = ProcessedEvent.__table__
    statement = (
        dialect.insert(table)
        .values(
            event_id=event_id, task_name=task_name, payload_sha256=digest, processed_at=utcnow()
        )
        .on_conflict_do_nothing(index_elements=[table.c.event_id])
        .returning(table.c.event_id)
    )
    return session.connection().execute(statement).first() is not None
