"""What every event handler is given: the open session and the email queue of the event."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from models.clients import Client, Contact
from services.errors import UnknownReference
from services.mail.queue import EmailQueue


@dataclass
class HandlerContext:
    task_name: str
    session: Session
    emails: EmailQueue

    def client(self, client_id: str) -> Client:
        client = self.session.get(Client, client_id)
        if client is None:
            raise UnknownReference(f"unknown client {client_id!r}")
        return client

    def contact_of(self, client: Client, contact_id: str) -> Contact:
        contact = self.session.get(Contact, contact_id)
        # The same answer whether the contact is missing or someone else's: a client must
        # not learn which contact ids exist on other accounts.
        if contact is None or contact.client_id != client.id:
            raise UnknownReference(f"client {client.id!r} has no contact {contact_id!r}")
        return contact
