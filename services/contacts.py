"""Contact rules: add, update, delete (which also clears a default billing contact)."""

from __future__ import annotations

from models.clients import Contact
from models.contracts import ENVELOPE_FIELDS, AddContact, DeleteContact, UpdateContact
from services.actors import authorize
from services.audit import diff, record_change
from services.context import HandlerContext, contact_key
from services.errors import Conflict
from services.waiting import release_waiting

_ENVELOPE = {*ENVELOPE_FIELDS, "contact_id"}


def add_contact(ctx: HandlerContext, event: AddContact) -> None:
    client = ctx.client(event.client_id)
    authorize(ctx.task_name, event, client)
    existing = ctx.session.get(Contact, event.contact_id)
    if existing is not None:
        if existing.client_id == client.id:
            raise Conflict(f"contact {event.contact_id!r} already exists")
        raise Conflict(
            f"contact id {event.contact_id!r} is taken by another client: contact ids are "
            "unique across all clients, so this contact needs an id of its own"
        )
    fields = event.model_dump(exclude=_ENVELOPE)
    client.contacts.append(Contact(id=event.contact_id, **fields))
    release_waiting(ctx, contact_key(client.id, event.contact_id))
    record_change(
        ctx.session, ctx.task_name, event, {"contact_id": event.contact_id, "created": fields}
    )


def update_contact(ctx: HandlerContext, event: UpdateContact) -> None:
    client = ctx.client(event.client_id)
    authorize(ctx.task_name, event, client)
    contact = ctx.contact_of(client, event.contact_id)
    changes = event.changed_fields()
    before = {name: getattr(contact, name) for name in changes}
    for name, value in changes.items():
        setattr(contact, name, value)
    record_change(
        ctx.session,
        ctx.task_name,
        event,
        {"contact_id": contact.id, **diff(before, changes)},
    )


def delete_contact(ctx: HandlerContext, event: DeleteContact) -> None:
    client = ctx.client(event.client_id)
    authorize(ctx.task_name, event, client)
    contact = ctx.contact_of(client, event.contact_id)
    changes: dict[str, object] = {"contact_id": contact.id, "deleted": True}
    if client.billing_contact_id == contact.id:
        # An invoice must never be addressed to a contact that no longer exists.
        client.billing_contact_id = None
        changes["billing_contact_id"] = [contact.id, None]
    client.contacts.remove(contact)
    record_change(ctx.session, ctx.task_name, event, changes)
