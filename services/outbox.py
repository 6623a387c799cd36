"""Stages tasks in the outbox within a transaction, publishes them after commit, relays the rest."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.base import utcnow
from models.emails import EmailMessage, EmailStatus
from models.outbox import OutboxMessage
from services.db import SessionFactory

log = logging.getLogger(__name__)

# Sends one task to the broker (Celery's send_task in production); raises if it cannot.
Publish = Callable[[str, dict[str, Any]], None]

DELIVER_TASK = "emails.deliver"
# Emails per delivery task when the relay re-stages forgotten ones (one SMTP connection each).
REDELIVER_BATCH = 100


def stage(session: Session, task_name: str, kwargs: dict[str, Any]) -> OutboxMessage:
    message = OutboxMessage(task_name=task_name, kwargs=kwargs, attempts=0)
    session.add(message)
    return message


def publish_staged(session_factory: SessionFactory, ids: list[int], publish: Publish) -> int:
    """Publish the given committed outbox rows now; what fails stays for the relay."""
    if not ids:
        return 0
    with session_factory() as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.published_at.is_(None))
            .order_by(OutboxMessage.id)
        ).all()
        return _publish_rows(session, list(rows), publish)


def relay(
    session_factory: SessionFactory,
    publish: Publish,
    *,
    min_age: timedelta,
    sending_lease: timedelta,
    forgotten_after: timedelta,
    batch_size: int = 500,
) -> int:
    """Publish what the after-commit step could not, and recover emails stuck on the way.

    Rows younger than min_age are left alone: their own after-commit publish is probably
    still under way. Running two relays at once is safe; at worst a task is published twice.
    """
    with session_factory() as session:
        _requeue_abandoned_claims(session, sending_lease)
        _redeliver_forgotten(session, forgotten_after, batch_size)
        cutoff = utcnow() - min_age
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.published_at.is_(None), OutboxMessage.created_at <= cutoff)
            .order_by(OutboxMessage.id)
            .limit(batch_size)
        ).all()
        return _publish_rows(session, list(rows), publish)


def _requeue_abandoned_claims(session: Session, lease: timedelta) -> None:
    """A worker died between claiming an email and recording the outcome.

    The SMTP server may or may not have accepted it; sending again risks one duplicate, not
    sending risks a lost email, and a lost invoice or welcome is the worse of the two.
    """
    stale = list(
        session.scalars(
            select(EmailMessage.id).where(
                EmailMessage.status == EmailStatus.SENDING,
                EmailMessage.claimed_at < utcnow() - lease,
            )
        )
    )
    if not stale:
        return
    session.execute(
        update(EmailMessage)
        .where(EmailMessage.id.in_(stale), EmailMessage.status == EmailStatus.SENDING)
        .values(status=EmailStatus.QUEUED, last_error="claim abandoned (worker lost); requeued")
    )
    stage(session, DELIVER_TASK, {"message_ids": stale})
    session.commit()
    log.warning("requeued %d emails abandoned in 'sending'", len(stale))


def _redeliver_forgotten(session: Session, after: timedelta, limit: int) -> None:
    """Queued emails that nothing has touched for `after`: their delivery task is gone.

    kombu's Redis transport pops a message and records it as unacknowledged in two steps, so
    a worker killed between them loses the message (kombu#305, resque#163); other brokers
    have their own ways of dropping one. The email row is the truth, so a new delivery task
    is staged for it. Claims make a second delivery of a still-live task harmless, and the
    row's clock restarts so a long backlog gets at most one extra task per `after`.
    """
    cutoff = utcnow() - after
    forgotten = list(
        session.scalars(
            select(EmailMessage.id)
            .where(EmailMessage.status == EmailStatus.QUEUED, EmailMessage.updated_at < cutoff)
            .order_by(EmailMessage.updated_at)
            .limit(limit)
        )
    )
    if not forgotten:
        return
    session.execute(
        update(EmailMessage)
        .where(EmailMessage.id.in_(forgotten), EmailMessage.status == EmailStatus.QUEUED)
        .values(updated_at=utcnow())
    )
    for start in range(0, len(forgotten), REDELIVER_BATCH):
        stage(session, DELIVER_TASK, {"message_ids": forgotten[start : start + REDELIVER_BATCH]})
    session.commit()
    log.warning(
        "staged delivery again for %d emails queued since before %s", len(forgotten), cutoff
    )


def _publish_rows(session: Session, rows: list[OutboxMessage], publish: Publish) -> int:
    published = 0
    for row in rows:
        try:
            publish(row.task_name, row.kwargs)
        except Exception as exc:  # the broker is away: keep the row, try again later
            row.attempts += 1
            row.last_error = f"{type(exc).__name__}: {exc}"
            session.commit()
            log.warning("outbox %s not published yet: %s", row.id, row.last_error)
            return published
        row.published_at = utcnow()
        row.attempts += 1
        session.commit()
        published += 1
    return published


def pending_count(session: Session) -> int:

    return session.scalar(select(func.count()).where(OutboxMessage.published_at.is_(None))) or 0
