"""Who may do what: clients act only on their own records, and a Closed client not at all."""

from __future__ import annotations

from models.clients import Client, ClientStatus
from models.contracts import Event
from services.errors import Forbidden

# What a client may do from the client area; the rest is for admins and upstream systems.
CLIENT_AREA_EVENTS = frozenset(
    {
        "clients.update",
        "clients.set_billing_contact",
        "clients.set_email_preferences",
        "contacts.add",
        "contacts.update",
        "contacts.delete",
        # The token, not the actor, says whose mail it turns off; a client actor still acts
        # on its own client only.
        "recipients.unsubscribe",
    }
)


def authorize(task_name: str, event: Event, client: Client | None) -> None:
    actor = event.actor
    if actor.kind in ("admin", "system"):
        return
    if task_name not in CLIENT_AREA_EVENTS:
        raise Forbidden(f"a client actor may not publish {task_name}; only admin or system may")
    if actor.client_id != event.client_id:
        raise Forbidden(
            f"client {actor.client_id} may not act on client {event.client_id}'s records"
        )
    if client is not None and client.status == ClientStatus.CLOSED:
        raise Forbidden(f"client {client.id} is Closed and cannot log in or act")
