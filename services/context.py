"""What every event handler is given: the session, the event's email queue, and its outbox."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from models.clients import Client, Contact
from services import outbox
from services.errors import UnknownReference
from services.mail.queue import EmailQueue
from services.opt_outs import OptOutPolicy


def contact_key(client_id: str, contact_id: str) -> str:
    """What an event waits for when it names a contact of its client not added yet. It names
    the client ("/" is in no id), so another client's contact of the same id releases nothing."""
    return f"contact:{client_id}/{contact_id}"


@dataclass
class HandlerContext:
    task_name: str
    session: Session
    emails: EmailQueue
    # Outbox rows staged by this event; published after the commit.
    staged: list[int] = field(default_factory=list)

    @property
    def opt_outs(self) -> OptOutPolicy:
        """What recipients may turn off (the one policy the event's emails are queued with)."""
        return self.emails.opt_outs

    def stage(self, task_name: str, kwargs: dict[str, Any]) -> None:
        message = outbox.stage(self.session, task_name, kwargs)
        self.session.flush()
        self.staged.append(message.id)

    def client(self, client_id: str) -> Client:
        """The client the event acts on, row-locked to the end of the transaction.

        A client's events then apply one at a time, even on different workers: each reads
        what the one before it committed, so an audit row's old values are the ones it
        replaced (unlocked, two updates racing both recorded the values from before either),
        and what a handler checked (the contact it names exists, the client is not closed)
        still holds at its commit. FOR NO KEY UPDATE: rows that only refer to the client
        (contacts, emails, invoices) may still be written meanwhile. SQLite takes no row
        lock; it has one writer at a time.
        """
        client = self.session.get(
            Client, client_id, with_for_update={"key_share": True}, populate_existing=True
        )
        if client is None:
            raise UnknownReference(
                f"unknown client {client_id!r}", waiting_for=f"client:{client_id}"
            )
        return client

    def contact_of(self, client: Client, contact_id: str) -> Contact:
        contact = self.session.get(Contact, contact_id)
        if contact is None:
            raise UnknownReference(
                f"client {client.id!r} has no contact {contact_id!r}",
                waiting_for=contact_key(client.id, contact_id),
            )
        if contact.client_id != client.id:
            # The same words as for a missing contact: a client must not learn which contact
            # ids exist on other accounts. It never waits: this contact will not come.
            raise UnknownReference(f"client {client.id!r} has no contact {contact_id!r}")
        return contact
