"""The message log for an operator: a filtered page of it, and one message as it was sent."""

from __future__ import annotations

from dataclasses import dataclass
from email.header import decode_header, make_header

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.clients import Client
from models.emails import EmailMessage, EmailStatus
from services.errors import BadFilter
from services.mail.compose import compose
from services.mail.delivery import COMPOSE_ERRORS
from services.mail.render import template_names
from services.retention import body_pruned

DEFAULT_LIMIT = 50
STATUSES = tuple(status.value for status in EmailStatus)
# What `emails show` prints of the headers compose() writes; the X-Clientflow ones are shown
# as the fields they come from (idempotency key, event, template).
HEADERS_SHOWN = ("From", "To", "Reply-To", "Subject", "Date", "Message-ID")


@dataclass(frozen=True)
class EmailFilter:
    client_id: str | None = None
    status: str | None = None
    template: str | None = None
    limit: int = DEFAULT_LIMIT


def list_emails(session: Session, where: EmailFilter) -> list[EmailMessage]:
    """Newest first; raises BadFilter for a value nothing can match, naming what can."""
    _check(session, where)
    query = select(EmailMessage)
    if where.client_id is not None:
        query = query.where(EmailMessage.client_id == where.client_id)
    if where.status is not None:
        query = query.where(EmailMessage.status == where.status)
    if where.template is not None:
        query = query.where(EmailMessage.template == where.template)
    # id breaks ties: an event's emails share their created_at to the microsecond on SQLite.
    order = (EmailMessage.created_at.desc(), EmailMessage.id.desc())
    return list(session.scalars(query.order_by(*order).limit(where.limit)))


def _check(session: Session, where: EmailFilter) -> None:
    if where.status is not None and where.status not in STATUSES:
        raise BadFilter("status", f"unknown status {where.status!r}; one of: {', '.join(STATUSES)}")
    if where.template is not None and where.template not in template_names():
        known = ", ".join(template_names())
        raise BadFilter("template", f"unknown template {where.template!r}; one of: {known}")
    if where.client_id is not None and session.get(Client, where.client_id) is None:
        raise BadFilter(
            "client", f"no client {where.client_id!r} (`clientflow clients find` looks one up)"
        )


@dataclass(frozen=True)
class EmailView:
    """One message of the log with what `emails show` adds to its row."""

    message: EmailMessage
    # The headers compose() writes for it, decoded for reading; empty when it cannot be
    # composed (compose_error says why: such a message failed without being sent).
    headers: dict[str, str]
    compose_error: str | None
    # The copies resent of it, oldest first (every resend points at the message first sent,
    # so a resend has none: its resend_of names the original).
    resends: list[str]

    @property
    def body_pruned(self) -> bool:
        return body_pruned(self.message)


def view_email(
    session: Session, message_id: str, mail_from: str, reply_to: str | None
) -> EmailView | None:
    """The message with its headers as sent. From and Reply-To come from the settings given
    (the row does not keep them); Date and Message-ID from the row, the same on every attempt."""
    message = session.get(EmailMessage, message_id)
    if message is None:
        return None
    try:
        headers = headers_as_sent(message, mail_from, reply_to)
        problem = None
    except COMPOSE_ERRORS as exc:
        headers, problem = {}, f"{type(exc).__name__}: {exc}"
    resends = session.scalars(
        select(EmailMessage.id)
        .where(EmailMessage.resend_of == message.id)
        .order_by(EmailMessage.created_at, EmailMessage.id)
    )
    return EmailView(message, headers, problem, list(resends))


def headers_as_sent(message: EmailMessage, mail_from: str, reply_to: str | None) -> dict[str, str]:
    """HEADERS_SHOWN as compose() writes them (Reply-To only when set), RFC 2047 decoded."""
    mime = compose(message, mail_from, reply_to)
    return {
        name: str(make_header(decode_header(str(mime[name]))))
        for name in HEADERS_SHOWN
        if mime[name] is not None
    }
