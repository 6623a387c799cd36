"""Client rules: add (with the welcome email), update, status changes, the billing contact."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from models.clients import Client
from models.contracts import (
    ENVELOPE_FIELDS,
    AddClient,
    SetBillingContact,
    SetClientStatus,
    UpdateClient,
)
from services.actors import authorize
from services.audit import diff, record_change
from services.context import HandlerContext
from services.errors import Conflict
from services.routing import holder_of
from services.waiting import release_waiting

WELCOME_TEMPLATE = "client_signup"
# Not columns copied from the event: the envelope, and what add_client handles itself.
_ENVELOPE = {*ENVELOPE_FIELDS, "send_welcome", "status"}


def ensure_email_free(session: Session, email: str, except_client: str | None = None) -> None:
    query = select(Client.id).where(func.lower(Client.email) == email.lower())
    if except_client is not None:
        query = query.where(Client.id != except_client)
    holder = session.scalars(query.limit(1)).first()
    if holder is not None:
        raise Conflict(f"Duplicate Email Address: {email} is already used by client {holder!r}")


def ensure_new_client(session: Session, client_id: str, email: str) -> None:
    """The id and the email both unused, asked in one query (both are unique: two rows at most)."""
    holders = (
        session.execute(
            select(Client.id).where(
                or_(Client.id == client_id, func.lower(Client.email) == email.lower())
            )
        )
        .scalars()
        .all()
    )
    if client_id in holders:
        raise Conflict(f"client {client_id!r} already exists")
    if holders:
        raise Conflict(f"Duplicate Email Address: {email} is already used by client {holders[0]!r}")


def add_client(ctx: HandlerContext, event: AddClient) -> None:
    authorize(ctx.task_name, event, None)
    if not event.invoice_emails:
        # The holder's invoice preference, as clients.set_email_preferences sets it.
        ctx.opt_outs.refuse_holder_opt_out(["invoice"])
    ensure_new_client(ctx.session, event.client_id, event.email)
    fields = event.model_dump(exclude=_ENVELOPE)
    client = Client(id=event.client_id, status=event.status, **fields)
    ctx.session.add(client)
    ctx.session.flush()
    record_change(
        ctx.session, ctx.task_name, event, {"created": {**fields, "status": event.status}}
    )
    release_waiting(ctx, f"client:{client.id}")
    if event.send_welcome:
        ctx.emails.queue(
            client=client,
            recipient=holder_of(client),
            template=WELCOME_TEMPLATE,
            category="general",
        )


def update_client(ctx: HandlerContext, event: UpdateClient) -> None:
    client = ctx.client(event.client_id)
    authorize(ctx.task_name, event, client)
    changes = event.changed_fields()
    if changes.get("invoice_emails") is False:
        ctx.opt_outs.refuse_holder_opt_out(["invoice"])
    if "email" in changes:
        ensure_email_free(ctx.session, str(changes["email"]), except_client=client.id)
    before = {name: getattr(client, name) for name in changes}
    for name, value in changes.items():
        setattr(client, name, value)
    record_change(ctx.session, ctx.task_name, event, diff(before, changes))


def set_status(ctx: HandlerContext, event: SetClientStatus) -> None:
    client = ctx.client(event.client_id)
    authorize(ctx.task_name, event, client)
    # Recorded even when unchanged: the audit trail shows every decision someone made.
    record_change(ctx.session, ctx.task_name, event, {"status": [client.status, event.status]})
    client.status = event.status


def set_billing_contact(ctx: HandlerContext, event: SetBillingContact) -> None:
    client = ctx.client(event.client_id)
    authorize(ctx.task_name, event, client)
    if event.contact_id is not None:
        ctx.contact_of(client, event.contact_id)
    record_change(
        ctx.session,
        ctx.task_name,
        event,
        {"billing_contact_id": [client.billing_contact_id, event.contact_id]},
    )
    client.billing_contact_id = event.contact_id
