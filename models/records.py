"""Bookkeeping rows: which events were applied, which were refused, and the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class ProcessedEvent(Base):
    """The inbox: an event id here has been applied, so a redelivery changes nothing."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(64))
    # sha256 of the payload as published: the same id arriving with another task or payload
    # is a publisher reusing an id, refused with a reason, not a redelivery to ignore.
    # None on rows from before it was kept: those compare by task name only.
    payload_sha256: Mapped[str | None] = mapped_column(String(64))
    # Indexed for the retention prune (services/retention.py), oldest first.
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class RejectedEvent(Base):
    """An event refused for good (bad input, unknown reference, forbidden): never retried."""

    __tablename__ = "rejected_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str | None] = mapped_column(String(128), index=True)
    task_name: Mapped[str] = mapped_column(String(64))
    # The payload as received (JSON text, cut at a bound so a huge message cannot bloat the table).
    payload: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # "client:<id>", "contact:<client id>:<id>" or "invoice:<id>" when the event named
    # something not added yet. Celery
    # does not keep order across worker processes, so a contact can arrive before its client;
    # adding the client releases (re-publishes) the events that wait for it.
    waiting_for: Mapped[str | None] = mapped_column(String(160), index=True)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """Who changed what on a client, and when: clients are kept, their history too."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    event_id: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_client_id: Mapped[str | None] = mapped_column(String(64))
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
