"""Who receives an email of a category: the account holder, unless the holder turned that
category off and the business does not require it, and the contacts ticked for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.clients import Client, Contact


@dataclass(frozen=True)
class Recipient:
    name: str
    email: str
    role: Literal["holder", "contact"]
    contact_id: str | None = None
    # False where the email comes with a role rather than a flag the recipient could turn off
    # (the billing contact gets every invoice email): it then carries no unsubscribe link.
    by_preference: bool = True


def holder_of(client: Client) -> Recipient:
    return Recipient(name=client.full_name, email=client.email, role="holder")


def _as_recipient(contact: Contact, by_preference: bool = True) -> Recipient:
    return Recipient(
        name=contact.full_name,
        email=contact.email,
        role="contact",
        contact_id=contact.id,
        by_preference=by_preference,
    )


def holder_receives(client: Client, category: str, required: frozenset[str]) -> bool:
    """A required category reaches the holder whatever the holder's own flag says."""
    return category in required or client.holder_wants(category)


def route_recipients(client: Client, category: str, required: frozenset[str]) -> list[Recipient]:
    """The holder (see holder_receives) first, then ticked contacts in the order they were
    added; each address once. May be empty: the holder opted out and no contact is ticked.

    Addresses are compared case-insensitively: two spellings of one mailbox get one email.
    """
    candidates = [holder_of(client)] if holder_receives(client, category, required) else []
    candidates += [_as_recipient(c) for c in client.contacts if c.receives(category)]
    return _each_address_once(candidates)


def billing_contact_of(client: Client) -> Contact | None:
    """The default billing contact, found among the loaded contacts (no query of its own)."""
    if client.billing_contact_id is None:
        return None
    return next((c for c in client.contacts if c.id == client.billing_contact_id), None)


def route_invoice_recipients(client: Client, required: frozenset[str]) -> list[Recipient]:
    """The holder (see holder_receives), the billing contact, and every contact ticked for
    invoice; each address once (a contact sharing the holder's mailbox is greeted as the
    holder). May be empty: the caller records that.
    """
    candidates = [holder_of(client)] if holder_receives(client, "invoice", required) else []
    billing = billing_contact_of(client)
    if billing is not None:
        # Listed before the ticked contacts: if it is ticked too, it still gets invoices as
        # the billing contact, and unticking would not stop them, so it gets no link.
        candidates.append(_as_recipient(billing, by_preference=False))
    candidates += [_as_recipient(c) for c in client.contacts if c.receives("invoice")]
    return _each_address_once(candidates)


def _each_address_once(candidates: list[Recipient]) -> list[Recipient]:
    seen: set[str] = set()
    recipients = []
    for recipient in candidates:
        key = recipient.email.casefold()
        if key not in seen:
            seen.add(key)
            recipients.append(recipient)
    return recipients
