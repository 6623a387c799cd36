"""Failed emails back to the queue (`clientflow emails retry --failed`), e.g. after a mail
server outage outlasted the retries: the same rows, with their attempts counted from zero."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, literal, not_, select, update

from models.base import utcnow
from models.emails import EmailMessage, EmailStatus
from services import outbox
from services.db import SessionFactory
from services.outbox import DELIVER_TASK, REDELIVER_BATCH, Publish
from services.retention import has_body

# Kept in front of the failure it replaces: if the retry fails too, its reply overwrites this.
REQUEUED_NOTE = "requeued by `clientflow emails retry`; last failure: "


@dataclass(frozen=True)
class Retried:
    requeued: list[str]
    # Failed emails left failed: retention pruned their bodies, so there is nothing to send.
    pruned: int
    # Delivery tasks staged, and of them published now (the outbox relay publishes the rest).
    tasks: int
    published: int


def retry_failed(
    session_factory: SessionFactory, publish: Publish, *, since: datetime | None = None
) -> Retried:
    """Queue every failed email (that failed at or after `since`) again, attempts reset, and
    publish their delivery after the commit, REDELIVER_BATCH messages per task.

    One UPDATE takes only rows still failed, so a second retry at the same time requeues
    nothing twice; a message that cannot be composed fails again at once.
    """
    window: list[ColumnElement[bool]] = [EmailMessage.status == EmailStatus.FAILED]
    if since is not None:
        # updated_at is when the failure was recorded: "since the outage began".
        window.append(EmailMessage.updated_at >= since)
    with session_factory() as session:
        now = utcnow()
        requeued = list(
            session.scalars(
                update(EmailMessage)
                .where(*window, has_body())
                .values(
                    status=EmailStatus.QUEUED,
                    attempts=0,
                    claimed_at=None,
                    updated_at=now,
                    last_error=literal(REQUEUED_NOTE)
                    + func.coalesce(EmailMessage.last_error, "unknown"),
                )
                .returning(EmailMessage.id)
                .execution_options(synchronize_session=False)
            )
        )
        pruned = session.scalar(
            select(func.count()).select_from(EmailMessage).where(*window, not_(has_body()))
        )
        staged = [
            outbox.stage(
                session, DELIVER_TASK, {"message_ids": requeued[start : start + REDELIVER_BATCH]}
            )
            for start in range(0, len(requeued), REDELIVER_BATCH)
        ]
        session.commit()
    published = outbox.publish_staged(session_factory, [row.id for row in staged], publish)
    return Retried(requeued, pruned or 0, len(staged), published)
