"""Events that named a client or contact before it was added, released once it is."""

from __future__ import annotations

import json

from sqlalchemy import select

from models.base import utcnow
from models.records import RejectedEvent
from services.context import HandlerContext


def release_waiting(ctx: HandlerContext, waiting_for: str) -> int:
    """Re-publish (after this commit) every event waiting for `waiting_for`, once each."""
    rows = ctx.session.scalars(
        select(RejectedEvent)
        .where(RejectedEvent.waiting_for == waiting_for, RejectedEvent.released_at.is_(None))
        .order_by(RejectedEvent.id)
    ).all()
    for row in rows:
        row.released_at = utcnow()
        ctx.stage(row.task_name, json.loads(row.payload))
    return len(rows)
