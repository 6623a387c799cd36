"""Queues emails in the message log inside the caller's transaction, one per recipient."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from models.clients import Client
from models.emails import EmailMessage, EmailStatus
from services.mail.render import render_email
from services.routing import Recipient


def idempotency_key(event_id: str, recipient_email: str, template: str) -> str:
    """One email per (event, recipient, template): the message log's unique constraint."""
    material = "\x1f".join((event_id, recipient_email.casefold(), template))
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


@dataclass
class EmailQueue:
    """What a handler uses to owe an email; ids collects what to deliver after commit."""

    session: Session
    event_id: str
    company_name: str
    ids: list[str] = field(default_factory=list)

    def queue(
        self,
        *,
        client: Client,
        recipient: Recipient,
        template: str,
        category: str,
        context: dict[str, Any] | None = None,
    ) -> EmailMessage:
        full_context = {
            **(context or {}),
            "client": client_context(client),
            "recipient": {"name": recipient.name, "email": recipient.email},
            "company_name": self.company_name,
        }
        rendered = render_email(template, full_context)
        message = EmailMessage(
            id=str(uuid.uuid4()),
            idempotency_key=idempotency_key(self.event_id, recipient.email, template),
            event_id=self.event_id,
            client_id=client.id,
            template=template,
            category=category,
            to_address=recipient.email,
            to_name=recipient.name,
            subject=rendered.subject,
            body_text=rendered.text,
            body_html=rendered.html,
            status=EmailStatus.QUEUED,
            attempts=0,
        )
        self.session.add(message)
        self.ids.append(message.id)
        return message
