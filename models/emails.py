"""The email message log: every email we owe, its rendered content and its delivery state."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow

# What a List-Unsubscribe header line can carry: RFC 5322's 998 characters less
# "List-Unsubscribe: <" and ">".
UNSUBSCRIBE_URL_MAX_CHARS = 977


class EmailStatus(StrEnum):
    QUEUED = "queued"
    # Claimed by one delivery attempt; committed before the SMTP transaction starts, so a
    # crash leaves a trace the relay can find (see services/outbox.py).
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class EmailMessage(Base):
    __tablename__ = "email_messages"
    # The relay's sweep for queued emails whose delivery task was lost (services/outbox.py).
    __table_args__ = (
        Index("ix_email_messages_status_updated_at", "status", "updated_at"),
        # The retention prune's work list: only rows that still have a body, so pruned years
        # are never read again (services/retention.py).
        Index(
            "ix_email_messages_created_at_with_body",
            "created_at",
            postgresql_where=text("body_html <> ''"),
            sqlite_where=text("body_html <> ''"),
        ),
        # `emails show` lists the resends of a message; partial, so the hot path's inserts
        # (never a resend) leave it alone.
        Index(
            "ix_email_messages_resend_of",
            "resend_of",
            postgresql_where=text("resend_of IS NOT NULL"),
            sqlite_where=text("resend_of IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # sha256(event id, recipient, template): the unique constraint is what makes
    # "one email per event, recipient and template" hold under redelivery and races.
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    event_id: Mapped[str] = mapped_column(String(128), index=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    template: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))
    to_address: Mapped[str] = mapped_column(String(254))
    to_name: Mapped[str] = mapped_column(String(201))
    subject: Mapped[str] = mapped_column(String(998))
    # The one-click unsubscribe URL (RFC 8058) of an email its recipient may turn off, signed
    # when the email is queued (services/opt_outs.py); None: no List-Unsubscribe header.
    list_unsubscribe: Mapped[str | None] = mapped_column(String(UNSUBSCRIBE_URL_MAX_CHARS))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=EmailStatus.QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set on a copy an operator resent (`clientflow emails resend`): the id of the message
    # first sent, so every resend of one email points at the same row. No foreign key: rows
    # are never deleted (retention clears bodies only), and SQLite could not add one in place.
    resend_of: Mapped[str | None] = mapped_column(String(36))
    # The invoice an invoice email is about, so delivery can attach it as a PDF made from the
    # invoice as it is then (services/invoice_pdf); None for every other email, and for
    # invoice emails logged before the column. No foreign key, as for resend_of.
    invoice_id: Mapped[str | None] = mapped_column(String(96))
