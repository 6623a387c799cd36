"""Clients for an operator: find one by name, company or email; one client's whole card."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, or_, select
from sqlalchemy.orm import Session, selectinload

from models.billing import Invoice, InvoiceStatus, Service
from models.clients import Client, Contact
from models.emails import EmailMessage
from models.records import AuditEvent
from services.errors import BadFilter
from services.routing import billing_contact_of

# The events that set a client's status, and so make its status history.
STATUS_ACTIONS = ("clients.add", "clients.set_status", "clients.close")
LAST_EMAILS = 10
DEFAULT_FIND_LIMIT = 50


@dataclass(frozen=True)
class StatusChange:
    at: datetime
    old: str | None  # None: the client was added with `new`
    new: str
    action: str
    event_id: str
    actor: str  # "system", or "client <id>" for a change the client made itself


@dataclass(frozen=True)
class ClientCard:
    client: Client
    contacts: list[Contact]
    billing_contact: Contact | None
    status_history: list[StatusChange]
    # False when retention pruned the audit rows of its first status changes (its add).
    history_complete: bool
    services: list[Service]
    unpaid_invoices: list[Invoice]
    last_emails: list[EmailMessage]


def client_card(session: Session, client_id: str, emails: int = LAST_EMAILS) -> ClientCard | None:
    client = session.scalar(
        select(Client).where(Client.id == client_id).options(selectinload(Client.contacts))
    )
    if client is None:
        return None
    history = status_history(session, client_id)
    services = session.scalars(
        select(Service).where(Service.client_id == client_id).order_by(Service.id)
    )
    unpaid = session.scalars(
        select(Invoice)
        .where(Invoice.client_id == client_id, Invoice.status == InvoiceStatus.UNPAID)
        .order_by(Invoice.due_date, Invoice.id)
    )
    last_emails = session.scalars(
        select(EmailMessage)
        .where(EmailMessage.client_id == client_id)
        .order_by(EmailMessage.created_at.desc(), EmailMessage.id.desc())
        .limit(emails)
    )
    return ClientCard(
        client=client,
        contacts=list(client.contacts),
        billing_contact=billing_contact_of(client),
        status_history=history,
        history_complete=bool(history) and history[0].action == "clients.add",
        services=list(services),
        unpaid_invoices=list(unpaid),
        last_emails=list(last_emails),
    )


def status_history(session: Session, client_id: str) -> list[StatusChange]:
    """Oldest first, from the audit trail: the status it was added with, then every change
    (a set_status to the same status included: the trail keeps every decision)."""
    rows = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.client_id == client_id, AuditEvent.action.in_(STATUS_ACTIONS))
        .order_by(AuditEvent.id)
    )
    return [change for row in rows if (change := _status_change(row)) is not None]


def _status_change(row: AuditEvent) -> StatusChange | None:
    changes: dict[str, Any] = row.changes
    created = changes.get("created")
    if isinstance(created, dict) and "status" in created:
        old, new = None, created["status"]
    elif isinstance(changes.get("status"), list) and len(changes["status"]) == 2:
        old, new = changes["status"]
    else:
        return None
    actor = f"client {row.actor_client_id}" if row.actor_kind == "client" else row.actor_kind
    return StatusChange(row.created_at, old, str(new), row.action, row.event_id, actor)


@dataclass(frozen=True)
class ClientMatch:
    client: Client
    # What matched: "id", "name", "company", "email", or "contact <id>" (its name,
    # company or email).
    matched: list[str]


def find_clients(session: Session, text: str, limit: int = DEFAULT_FIND_LIMIT) -> list[ClientMatch]:
    """Clients whose name, company or email, or a contact's, contains the text (any case),
    or whose id is the text; by name. A scan of the clients table: an operator's search."""
    needle = text.strip()
    if not needle:
        raise BadFilter("text", "give some text to look for (part of a name, company or email)")
    query = (
        select(Client)
        .where(or_(Client.id == needle, *_contains(Client, needle), _contact_contains(needle)))
        .options(selectinload(Client.contacts))
        .order_by(Client.lastname, Client.firstname, Client.id)
        .limit(limit)
    )
    return [ClientMatch(client, _matched(client, needle)) for client in session.scalars(query)]


def _contains(party: type[Client] | type[Contact], needle: str) -> list[ColumnElement[bool]]:
    # autoescape: a % or _ in the text is looked for as itself, not as a wildcard.
    return [
        (party.firstname + " " + party.lastname).icontains(needle, autoescape=True),
        party.companyname.icontains(needle, autoescape=True),
        party.email.icontains(needle, autoescape=True),
    ]


def _contact_contains(needle: str) -> ColumnElement[bool]:
    return exists().where(Contact.client_id == Client.id, or_(*_contains(Contact, needle)))


def _matched(client: Client, needle: str) -> list[str]:
    lowered = needle.lower()

    def hit(*values: str | None) -> bool:
        return any(value is not None and lowered in value.lower() for value in values)

    fields = {"name": client.full_name, "company": client.companyname, "email": client.email}
    matched = ["id"] if client.id == needle else []
    matched += [name for name, value in fields.items() if hit(value)]
    matched += [
        f"contact {contact.id}"
        for contact in client.contacts
        if hit(contact.full_name, contact.companyname, contact.email)
    ]
    return matched
