"""Who receives an email of a category: the account holder and the contacts ticked for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.clients import Client


@dataclass(frozen=True)
class Recipient:
    name: str
    email: str
    role: Literal["holder", "contact"]
    contact_id: str | None = None


def holder_of(client: Client) -> Recipient:
    return Recipient(name=client.full_name, email=client.email, role="holder")


def route_recipients(client: Client, category: str) -> list[Recipient]:
    """Holder first, then ticked contacts in the order they were added; each address once.

    Addresses are compared case-insensitively: two spellings of one mailbox get one email.
    """
    candidates = [holder_of(client)]
    candidates += [
        Recipient(name=c.full_name, email=c.email, role="contact", contact_id=c.id)
        for c in client.contacts
        if c.receives(category)
    ]
    seen: set[str] = set()
    recipients = []
    for recipient in candidates:
        key = recipient.email.casefold()
        if key not in seen:
            seen.add(key)
            recipients.append(recipient)
    return recipients
