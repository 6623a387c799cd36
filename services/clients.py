"""Client rules: add (with the welcome email), update, status changes, the billing contact."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, literal, or_, select
from sqlalchemy.orm import Session

from models.base import table_of
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
from services.errors import Conflict, Transient
from services.routing import holder_of
from services.sql import insert_rows
from services.waiting import key_lock, release_waiting_for_each

WELCOME_TEMPLATE = "client_signup"
# Not columns copied from the event: the envelope, and what add_client handles itself.
_ENVELOPE = {*ENVELOPE_FIELDS, "send_welcome", "status"}
# The key events waiting for a client wait on (services.waiting): "client:<id>".
_WAITING_PREFIX = "client:"
_CLIENTS = table_of(Client)


def ensure_email_free(session: Session, email: str, except_client: str | None = None) -> None:
    query = select(Client.id).where(func.lower(Client.email) == email.lower())
    if except_client is not None:
        query = query.where(Client.id != except_client)
    holder = session.scalars(query.limit(1)).first()
    if holder is not None:
        raise Conflict(f"Duplicate Email Address: {email} is already used by client {holder!r}")


def taken_clients(session: Session, events: Sequence[AddClient]) -> dict[str, str]:
    """Why each of these new clients cannot be added, by event id: its id, or its email, is
    already a client's. Asked in one query however many."""
    if not events:
        return {}
    ids = [event.client_id for event in events]
    emails = [event.email.lower() for event in events]
    rows = session.execute(
        select(Client.id, func.lower(Client.email)).where(
            or_(Client.id.in_(ids), func.lower(Client.email).in_(emails))
        )
    ).all()
    holders_of_ids = {client_id for client_id, _ in rows}
    holders_of_emails = {email: client_id for client_id, email in rows}
    refusals = {}
    for event in events:
        if event.client_id in holders_of_ids:
            refusals[event.event_id] = f"client {event.client_id!r} already exists"
        elif (holder := holders_of_emails.get(event.email.lower())) is not None:
            refusals[event.event_id] = (
                f"Duplicate Email Address: {event.email} is already used by client {holder!r}"
            )
    return refusals


def check_new_client(ctx: HandlerContext, event: AddClient) -> None:
    """What a clients.add is refused for before the database is asked anything."""
    authorize(ctx.task_name, event, None)
    if not event.invoice_emails:
        # The holder's invoice preference, as clients.set_email_preferences sets it.
        ctx.opt_outs.refuse_holder_opt_out(["invoice"])


def add_client(ctx: HandlerContext, event: AddClient) -> None:
    check_new_client(ctx, event)
    if add_clients([(ctx, event)]):
        # Its id or email is taken: asked only now, the rare case, rather than before every
        # add. The insert waited for any transaction adding the same, so this sees it.
        refusals = taken_clients(ctx.session, [event])
        if event.event_id not in refusals:  # the client in the way went meanwhile
            raise Transient(f"client {event.client_id!r} was in the way and is gone; again")
        raise Conflict(refusals[event.event_id])


def add_clients(adds: Sequence[tuple[HandlerContext, AddClient]]) -> set[str]:
    """Add checked clients (check_new_client) in one session, each with its audit row, the
    events that waited for it and its welcome email: a few statements for all of them, not
    a few for each (services/batch.py adds many at once; add_client, one).

    A client whose id or email is already taken (by a row committed, or by a transaction
    adding it meanwhile, which the insert waits for) is not added: the ids of those events
    are returned, and the caller refuses them (add_client) or leaves them to their own path
    (services/batch.py). The insert that checks that also takes each added client's lock on
    the events waiting for it (services.waiting), in one statement."""
    if not adds:
        return set()
    session = adds[0][0].session
    fields_of = {event.event_id: event.model_dump(exclude=_ENVELOPE) for _, event in adds}
    row_of = {
        event.event_id: {"id": event.client_id, "status": event.status, **fields_of[event.event_id]}
        for _, event in adds
    }
    # Core on the table, not the ORM's insert: a tenth fewer Python calls for a lone add. In
    # id order: two adds of overlapping clients wait for each other in one order.
    rows = sorted(row_of.values(), key=lambda row: str(row["id"]))
    insert, parameters = insert_rows(session, _CLIENTS, rows)
    insert = insert.on_conflict_do_nothing()
    lock = key_lock(session, literal(_WAITING_PREFIX) + _CLIENTS.c.id)
    returning = (
        insert.returning(_CLIENTS.c.id) if lock is None else insert.returning(_CLIENTS.c.id, lock)
    )
    inserted = {row[0] for row in session.connection().execute(returning, parameters)}
    # What the welcome email is made from; not in the session, which has nothing to write
    # for it (a later read in this transaction loads the row).
    added = [
        (ctx, event, Client(**row_of[event.event_id]))
        for ctx, event in adds
        if event.client_id in inserted
    ]
    for ctx, event, _ in added:
        created = {**fields_of[event.event_id], "status": event.status}
        record_change(ctx.session, ctx.task_name, event, {"created": created})
    release_waiting_for_each(
        [(ctx, _WAITING_PREFIX + client.id) for ctx, _, client in added],
        locked=lock is not None,
    )
    for ctx, event, client in added:
        if event.send_welcome:
            ctx.emails.queue(
                client=client,
                recipient=holder_of(client),
                template=WELCOME_TEMPLATE,
                category="general",
            )
    return {event.event_id for _, event in adds if event.client_id not in inserted}


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
