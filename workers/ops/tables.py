"""What the database says about trouble: dead letters, refused events, emails, scheduled runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from models.dead_letters import DeadLetter
from models.emails import EmailMessage, EmailStatus
from models.ops import ScheduledRun
from models.records import RejectedEvent
from workers.ops.snapshot import (
    DeadLetterSummary,
    EmailCounts,
    ReasonCount,
    RejectedSummary,
    ScheduledRunState,
)

INVOICE_RUN = "invoices.run"
TOP_REASONS = 10
REASON_CHARS = 200


def dead_letters(session: Session) -> DeadLetterSummary:
    total = session.scalar(select(func.count()).select_from(DeadLetter)) or 0
    not_replayed = session.scalar(
        select(func.count()).select_from(DeadLetter).where(DeadLetter.replayed_at.is_(None))
    )
    return DeadLetterSummary(
        total=total,
        not_replayed=not_replayed or 0,
        by_reason=_by_reason(session, DeadLetter.reason, DeadLetter.created_at),
    )


def rejected_events(session: Session) -> RejectedSummary:
    total = session.scalar(select(func.count()).select_from(RejectedEvent)) or 0
    waiting = session.scalar(
        select(func.count())
        .select_from(RejectedEvent)
        .where(RejectedEvent.waiting_for.is_not(None), RejectedEvent.released_at.is_(None))
    )
    return RejectedSummary(
        total=total,
        waiting=waiting or 0,
        by_reason=_by_reason(session, RejectedEvent.reason, RejectedEvent.created_at),
    )


def _by_reason(
    session: Session,
    reason: InstrumentedAttribute[str],
    created_at: InstrumentedAttribute[datetime],
) -> list[ReasonCount]:
    """The most frequent reasons, newest first among equals."""
    count = func.count().label("n")
    last = func.max(created_at).label("last_at")
    rows = session.execute(
        select(reason, count, last)
        .group_by(reason)
        .order_by(count.desc(), last.desc())
        .limit(TOP_REASONS)
    ).all()
    return [
        ReasonCount(reason=text[:REASON_CHARS], count=n, last_at=last_at)
        for text, n, last_at in rows
    ]


def email_counts(session: Session) -> EmailCounts:
    rows = session.execute(
        select(EmailMessage.status, func.count()).group_by(EmailMessage.status)
    ).all()
    counts: dict[str, Any] = dict.fromkeys((s.value for s in EmailStatus), 0)
    counts.update({status: n for status, n in rows if status in counts})
    return EmailCounts(**counts)


def last_run(session: Session, name: str = INVOICE_RUN) -> ScheduledRunState | None:
    run = session.scalars(
        select(ScheduledRun)
        .where(ScheduledRun.name == name)
        .order_by(ScheduledRun.started_at.desc(), ScheduledRun.id.desc())
        .limit(1)
    ).first()
    if run is None:
        return None
    return ScheduledRunState(
        name=run.name,
        run_date=run.run_date,
        status=run.status,
        started_at=run.started_at,
        finished_at=run.finished_at,
        counts=run.counts or {},
        error=run.error,
    )


def last_successes(session: Session) -> dict[str, datetime]:
    """For each scheduled job name: when its newest successful run finished."""
    rows = session.execute(
        select(ScheduledRun.name, func.max(ScheduledRun.finished_at))
        .where(ScheduledRun.status == "succeeded", ScheduledRun.finished_at.is_not(None))
        .group_by(ScheduledRun.name)
    ).all()
    return {name: finished for name, finished in rows if finished is not None}
