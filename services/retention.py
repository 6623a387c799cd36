"""Retention: what clientflow keeps, and for how long, pruned in small batches.

Finished invoice runs go with their chunks (services/invoice_run/prune.py); their notices stay.

Each batch is its own short transaction over at most `batch_size` rows, chosen oldest first
through an index, so pruning never holds long locks nor reads what it pruned before. A run
does at most `max_batches` per table; what is left waits for the next run (hourly).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute

from models.base import utcnow
from models.emails import EmailMessage, EmailStatus
from models.records import AuditEvent, ProcessedEvent, RejectedEvent
from services.db import SessionFactory
from services.invoice_run.prune import prune_finished_runs


def body_pruned(message: EmailMessage) -> bool:
    """Whether the prune below cleared this message's bodies. Every template renders a text
    and an HTML body, so a row with neither lost them here."""
    return not message.body_text and not message.body_html


def has_body() -> ColumnElement[bool]:
    """body_pruned's opposite, as SQL."""
    return or_(EmailMessage.body_text != "", EmailMessage.body_html != "")


@dataclass(frozen=True)
class Retention:
    """How long each kind of row is kept; None keeps it for ever."""

    processed_events: timedelta | None
    email_bodies: timedelta | None
    rejected_events: timedelta | None
    audit_events: timedelta | None
    # Runs that finished (succeeded, failed, abandoned) longer ago, with their chunks.
    scheduled_runs: timedelta | None = None


def prune(
    session_factory: SessionFactory,
    retention: Retention,
    *,
    now: datetime | None = None,
    batch_size: int = 1000,
    max_batches: int = 50,
) -> dict[str, int]:
    """Prune what is past its retention; how many rows each kind lost."""
    now = now or utcnow()

    def run(
        keep: timedelta | None,
        key: InstrumentedAttribute[Any],
        age: InstrumentedAttribute[datetime],
        *conditions: ColumnElement[bool],
        body: bool = False,
    ) -> int:
        if keep is None:
            return 0
        where = (age < now - keep, *conditions)
        return _in_batches(session_factory, key, age, where, body, batch_size, max_batches)

    return {
        "processed_events_pruned": run(
            retention.processed_events, ProcessedEvent.event_id, ProcessedEvent.processed_at
        ),
        "email_bodies_pruned": run(
            retention.email_bodies,
            EmailMessage.id,
            EmailMessage.created_at,
            EmailMessage.body_html != "",
            # Only what is settled: a queued or sending email still needs its body.
            EmailMessage.status.in_((EmailStatus.SENT, EmailStatus.FAILED)),
            body=True,
        ),
        "rejected_events_pruned": run(
            retention.rejected_events,
            RejectedEvent.id,
            RejectedEvent.created_at,
            # One still waiting for its client, contact or invoice is owed work: kept.
            or_(RejectedEvent.waiting_for.is_(None), RejectedEvent.released_at.is_not(None)),
        ),
        "audit_events_pruned": run(
            retention.audit_events, AuditEvent.id, AuditEvent.created_at
        ),
        "scheduled_runs_pruned": (
            0
            if retention.scheduled_runs is None
            else prune_finished_runs(
                session_factory, now - retention.scheduled_runs, batch_size, max_batches
            )
        ),
    }


def _in_batches(
    session_factory: SessionFactory,
    key: InstrumentedAttribute[Any],
    age: InstrumentedAttribute[datetime],
    where: tuple[ColumnElement[bool], ...],
    body: bool,
    batch_size: int,
    max_batches: int,
) -> int:
    pruned = 0
    for _ in range(max_batches):
        with session_factory() as session:
            keys = list(session.scalars(select(key).where(*where).order_by(age).limit(batch_size)))
            if not keys:
                break
            if body:
                # The row stays (its idempotency key still stops a second send); the bodies go.
                session.execute(
                    update(EmailMessage)
                    .where(key.in_(keys))
                    .values(body_text="", body_html="")
                    .execution_options(synchronize_session=False)
                )
            else:
                session.execute(
                    delete(key.class_)
                    .where(key.in_(keys))
                    .execution_options(synchronize_session=False)
                )
            session.commit()
        pruned += len(keys)
        if len(keys) < batch_size:
            break
    return pruned

