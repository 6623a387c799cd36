"""An operator sends a logged email again: its stored content, to the same recipient, as a
new message of the log (WHMCS's "Resend" in a client's email history).

The stored subject and bodies are sent, not a new rendering: the event's context is not kept
(an invoice email's `invoice` would be undefined), and the customer should get what the log
says they got. The copy is a row of its own (its own id, Message-ID, Date and idempotency
key) pointing at the message first sent (`resend_of`), queued with an outbox row in one
transaction and delivered by `emails.deliver` like every other email.

A Closed client is no bar: the Closed rule stops a client acting, and an operator is not the
client; WHMCS lets its admins resend to closed accounts too.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.clients import Client
from models.emails import EmailMessage, EmailStatus
from services import outbox
from services.db import SessionFactory
from services.outbox import DELIVER_TASK, Publish
from services.retention import body_pruned

# Resend keys are hashed with this first, so they are never an event's or a notice's key (see
# services.mail.queue.idempotency_key: those never start with it).
RESEND_KEY_SPACE = "clientflow-resend"


class CannotResend(Exception):
    """Why this message cannot be sent again; nothing was changed."""


@dataclass(frozen=True)
class Resent:
    original: EmailMessage
    copy: EmailMessage
    # False: a resend with this key exists already (a double-click): it is returned as it is
    # and nothing new is queued.
    new: bool
    # Its delivery reached the broker now; else it waits in the outbox for the relay.
    published: bool
    # The client's status when it was resent (None: no such client any more).
    client_status: str | None


def resend_key(message_id: str, key: str) -> str:
    """The copy's idempotency key: one copy per (message, key)."""
    material = "\x1f".join((RESEND_KEY_SPACE, message_id, key))
    return hashlib.sha256(material.encode()).hexdigest()


def resend(
    session_factory: SessionFactory,
    publish: Publish,
    message_id: str,
    *,
    key: str | None = None,
) -> Resent:
    """Queue a copy of the message and publish its delivery after the commit.

    Without a key every call sends another copy; with one, calls after the first return the
    first's copy. Raises CannotResend for a message not in the log, one still on its way
    (queued or sending), or one whose body retention pruned.
    """
    idempotency_key = resend_key(message_id, key if key is not None else str(uuid.uuid4()))
    with session_factory() as session:
        original = session.get(EmailMessage, message_id)
        if original is None:
            raise CannotResend(f"no email {message_id!r} in the message log")
        client_status = session.scalar(select(Client.status).where(Client.id == original.client_id))
        earlier = _copy_with(session, idempotency_key)
        if earlier is not None:
            return Resent(original, earlier, False, False, client_status)
        _check_resendable(original)
        copy = _copy_of(original, idempotency_key)
        session.add(copy)
        staged = outbox.stage(session, DELIVER_TASK, {"message_ids": [copy.id]})
        try:
            session.commit()
        except IntegrityError:
            # The same key at the same moment (two clicks racing): the other copy stands.
            session.rollback()
            earlier = _copy_with(session, idempotency_key)
            if earlier is None:
                raise
            return Resent(original, earlier, False, False, client_status)
    published = outbox.publish_staged(session_factory, [staged.id], publish) == 1
    return Resent(original, copy, True, published, client_status)


def _copy_with(session: Session, idempotency_key: str) -> EmailMessage | None:
    return session.scalar(
        select(EmailMessage).where(EmailMessage.idempotency_key == idempotency_key)
    )


def _check_resendable(message: EmailMessage) -> None:
    if message.status in (EmailStatus.QUEUED, EmailStatus.SENDING):
        raise CannotResend(
            f"email {message.id} is still {message.status} (not sent yet): it goes out on its "
            "own; resend it once it is sent or failed"
        )
    if body_pruned(message):
        raise CannotResend(
            f"email {message.id} cannot be resent: retention pruned its body "
            f"(CLIENTFLOW_EMAIL_BODIES_KEEP_DAYS) and only its headers are kept; send it anew "
            "from its source (a new event or invoice notice)"
        )


def _copy_of(original: EmailMessage, idempotency_key: str) -> EmailMessage:
    return EmailMessage(
        id=str(uuid.uuid4()),
        idempotency_key=idempotency_key,
        # The event that caused the first: what a log line or a search by event finds.
        event_id=original.event_id,
        client_id=original.client_id,
        template=original.template,
        category=original.category,
        to_address=original.to_address,
        to_name=original.to_name,
        subject=original.subject,
        body_text=original.body_text,
        body_html=original.body_html,
        status=EmailStatus.QUEUED,
        attempts=0,
        # A resend of a resend points at the first too: one list of resends per email.
        resend_of=original.resend_of or original.id,
        # Its PDF, if it has one, is made from the invoice as it is when the resend goes out.
        invoice_id=original.invoice_id,
    )
