"""Dead letters: tasks that exhausted their retries or failed in a way no retry can mend."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class DeadLetter(Base):
    """Redis has no dead-letter exchange, so this table is where such messages live.

    `clientflow dlq replay` publishes the task again; the inbox and the message log's claims
    make a replay (or two) harmless.
    """

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_name: Mapped[str] = mapped_column(String(64), index=True)
    task_id: Mapped[str | None] = mapped_column(String(64))
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Every error of every attempt: [{"at": iso time, "error": "Type: message"}, ...]
    errors: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replay_count: Mapped[int] = mapped_column(Integer, default=0)
