"""The dead-letter store: record what can no longer be retried, list it, replay it, purge it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from models.base import utcnow
from models.dead_letters import DeadLetter
from services.db import SessionFactory
from services.outbox import Publish
from services.redaction import redact_addresses
from services.rejections import printable


def error_entry(exc: BaseException, at: datetime | None = None) -> dict[str, str]:
    return {
        "at": (at or utcnow()).isoformat(),
        "error": printable(redact_addresses(f"{type(exc).__name__}: {exc}"), 2000),
    }


def record_dead_letter(
    session_factory: SessionFactory,
    *,
    task_name: str,
    task_id: str | None,
    kwargs: dict[str, Any],
    errors: list[dict[str, str]],
    reason: str,
) -> DeadLetter:
    row = DeadLetter(
        task_name=task_name,
        task_id=task_id,
        kwargs=kwargs,
        errors=errors,
        reason=printable(redact_addresses(reason), 2000),
        replay_count=0,
    )
    with session_factory() as session:
        session.add(row)
        session.commit()
    return row


def list_dead_letters(session_factory: SessionFactory, limit: int = 100) -> Sequence[DeadLetter]:
    with session_factory() as session:
        return session.scalars(select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)).all()


def get_dead_letter(session_factory: SessionFactory, letter_id: int) -> DeadLetter | None:
    with session_factory() as session:
        return session.get(DeadLetter, letter_id)


def replay(
    session_factory: SessionFactory, publish: Publish, letter_ids: Sequence[int] | None = None
) -> list[int]:
    """Publish each letter's task again (all not yet replayed when no ids are given).

    The task runs through the same inbox and email claims as the first time, so replaying
    a letter twice, or one whose work did get done, changes nothing.
    """
    replayed = []
    with session_factory() as session:
        query = select(DeadLetter).order_by(DeadLetter.id)
        if letter_ids is None:
            query = query.where(DeadLetter.replayed_at.is_(None))
        else:
            query = query.where(DeadLetter.id.in_(letter_ids))
        for letter in session.scalars(query).all():
            publish(letter.task_name, letter.kwargs)
            letter.replayed_at = utcnow()
            letter.replay_count += 1
            session.commit()
            replayed.append(letter.id)
    return replayed


def purge(session_factory: SessionFactory, replayed_only: bool = False) -> int:
    with session_factory() as session:
        statement = delete(DeadLetter)
        if replayed_only:
            statement = statement.where(DeadLetter.replayed_at.is_not(None))
        count = getattr(session.execute(statement), "rowcount", 0)
        session.commit()
    return int(count or 0)
