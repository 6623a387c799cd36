"""notifications.send: one email per routed recipient, rendered now, delivered after commit."""

from __future__ import annotations

from models.contracts import SendNotification
from services.actors import authorize
from services.context import HandlerContext
from services.routing import route_recipients


def send_notification(ctx: HandlerContext, event: SendNotification) -> None:
    client = ctx.client(event.client_id)
    authorize(ctx.task_name, event, client)
    for recipient in route_recipients(client, event.category, ctx.opt_outs.required):
        ctx.emails.queue(
            client=client,
            recipient=recipient,
            template=event.template,
            category=event.category,
            context=event.context,
        )
