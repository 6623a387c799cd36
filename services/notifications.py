"""notifications.send: one email per routed recipient, rendered now, delivered after commit;
alone, or several together (services/batch.py)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from models.clients import Client
from models.contracts import SendNotification
from services.actors import authorize
from services.context import HandlerContext
from services.routing import route_recipients


def send_notification(ctx: HandlerContext, event: SendNotification) -> None:
    _queue_emails(ctx, event, ctx.client(event.client_id))


def check_notification(ctx: HandlerContext, event: SendNotification) -> None:
    """What refuses a notification before its client is read: only admin and system send."""
    authorize(ctx.task_name, event, None)


def send_notifications(pairs: Sequence[tuple[HandlerContext, SendNotification]]) -> set[str]:
    """Several at once: their clients and contacts in two statements for all, each client
    row-locked as HandlerContext.client locks one (in id order, so two batches sharing
    clients lock them in the same order and never deadlock). Returns the ids of the events
    whose client is not there (yet), untouched: each goes on its own, to wait for its
    client as it would have."""
    if not pairs:
        return set()
    session = pairs[0][0].session
    clients = {
        client.id: client
        for client in session.scalars(
            select(Client)
            .where(Client.id.in_({event.client_id for _, event in pairs}))
            .order_by(Client.id)
            .with_for_update(key_share=True)
            .options(selectinload(Client.contacts))
            .execution_options(populate_existing=True)
        )
    }
    for ctx, event in pairs:
        client = clients.get(event.client_id)
        if client is not None:
            _queue_emails(ctx, event, client)
    return {event.event_id for _, event in pairs if event.client_id not in clients}


def _queue_emails(ctx: HandlerContext, event: SendNotification, client: Client) -> None:
    authorize(ctx.task_name, event, client)
    for recipient in route_recipients(client, event.category, ctx.opt_outs.required):
        ctx.emails.queue(
            client=client,
            recipient=recipient,
            template=event.template,
            category=event.category,
            context=event.context,
        )
