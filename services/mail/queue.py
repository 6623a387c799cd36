"""Queues emails in the message log inside the caller's transaction, one per recipient."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.base import utcnow
from models.clients import Client
from models.company import CompanyLike, as_company
from models.emails import EmailMessage, EmailStatus
from services.mail.render import render_email
from services.opt_outs import OptOutPolicy
from services.routing import Recipient

# Keys of the emails clientflow owes on its own account (invoice notices) are hashed with this
# in front. A publisher's event id cannot hold the separator (\x1f), so no event id, however
# it is spelt ("invoice:E-3:invoice_created"), can make a key that pre-empts one of ours.
SYSTEM_KEY_SPACE = "clientflow-system"


def idempotency_key(
    event_id: str, recipient_email: str, template: str, *, system: bool = False
) -> str:
    """One email per (event, recipient, template): the message log's unique constraint."""
    parts = (event_id, recipient_email.casefold(), template)
    material = "\x1f".join((SYSTEM_KEY_SPACE, *parts) if system else parts)
    return hashlib.sha256(material.encode()).hexdigest()


def client_context(client: Client) -> dict[str, Any]:
    return {
        "id": client.id,
        "firstname": client.firstname,
        "lastname": client.lastname,
        "full_name": client.full_name,
        "companyname": client.companyname,
        "email": client.email,
        "status": client.status,
    }


def email_context(
    client: Client,
    recipient: Recipient,
    company: CompanyLike,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What every template is given: the event's context, then the names it may not set."""
    company = as_company(company)
    full = {
        **(context or {}),
        "client": client_context(client),
        "recipient": {"name": recipient.name, "email": recipient.email},
        # Kept beside `company`: operators' templates written before it name company_name.
        "company_name": company.name,
        "company": company.template_context(),
    }
    invoice = full.get("invoice")
    if isinstance(invoice, dict):
        # Always set on an invoice, "" without CLIENTFLOW_INVOICE_URL: templates test it
        # with `{% if invoice.pay_url %}` under StrictUndefined. A copy: the caller's dict
        # may be shared between recipients.
        full["invoice"] = {**invoice, "pay_url": company.invoice_link(invoice)}
    return full


class DeliverNow(Protocol):
    """Sends emails in this process right after the commit that logged them (tasks.emails):
    an event's, or a batch of an invoice run's."""

    def ready(self) -> bool:
        """False while this process will not send (its mail server was just unreachable)."""
        ...

    def __call__(self, messages: list[EmailMessage]) -> None:
        """Send messages the transaction committed as claimed by this process."""
        ...


def claim_for_sending(messages: list[EmailMessage]) -> list[EmailMessage]:
    """Claim messages not yet committed for sending by this process, in the caller's
    transaction: the state services.mail.delivery's claim gives a queued one. Sent by a
    DeliverNow after the commit; should this process die first, the claims' lease runs out
    and the relay queues them again (services.outbox)."""
    now = utcnow()
    for message in messages:
        message.status = EmailStatus.SENDING
        message.claimed_at = now
        message.attempts = (message.attempts or 0) + 1
        message.updated_at = now
    return list(messages)


@dataclass
class EmailQueue:
    """What a handler uses to owe an email; messages collects what to deliver after commit."""

    session: Session
    event_id: str
    # The sender's name, address and links (models.company); a bare name is a company
    # without them.
    company_name: CompanyLike
    # Which emails get an unsubscribe link, signed here: the recipient (holder or which
    # contact, and whether by a flag of its own) is known now, and is not in the row.
    opt_outs: OptOutPolicy
    # True for emails clientflow owes on its own account (their event id is synthetic).
    system: bool = False
    # Leave out an email whose idempotency key the log already has (one round trip per email:
    # only when applying an event again after such a conflict, services.dispatch).
    skip_logged: bool = False
    messages: list[EmailMessage] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [message.id for message in self.messages]

    def queue(
        self,
        *,
        client: Client,
        recipient: Recipient,
        template: str,
        category: str,
        context: dict[str, Any] | None = None,
    ) -> EmailMessage:
        message = self.render(
            client=client, recipient=recipient, template=template, category=category,
            context=context,
        )  # fmt: skip
        self.add(message)
        return message

    def add(self, message: EmailMessage) -> None:
        if self.skip_logged and self.session.scalar(
            select(EmailMessage.id).where(EmailMessage.idempotency_key == message.idempotency_key)
        ):
            return
        self.session.add(message)
        self.messages.append(message)

    def claim(self) -> list[EmailMessage]:
        """Claim every message queued here for sending by this process, in the caller's
        transaction (claim_for_sending)."""
        return claim_for_sending(self.messages)

    def render(
        self,
        *,
        client: Client,
        recipient: Recipient,
        template: str,
        category: str,
        context: dict[str, Any] | None = None,
    ) -> EmailMessage:
        """The message row, rendered, not yet in the session: nothing to undo if it fails."""
        full_context = email_context(client, recipient, self.company_name, context)
        # The client's language for every recipient: contacts have none of their own (WHMCS).
        rendered = render_email(template, full_context, language=client.language)
        message = EmailMessage(
            id=str(uuid.uuid4()),
            idempotency_key=idempotency_key(
                self.event_id, recipient.email, template, system=self.system
            ),
            event_id=self.event_id,
            client_id=client.id,
            template=template,
            category=category,
            to_address=recipient.email,
            to_name=recipient.name,
            subject=rendered.subject,
            list_unsubscribe=self.opt_outs.unsubscribe_link(client.id, recipient, category),
            body_text=rendered.text,
            body_html=rendered.html,
            status=EmailStatus.QUEUED,
            attempts=0,
        )
        return message

