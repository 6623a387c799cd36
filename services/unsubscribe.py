"""recipients.unsubscribe: a one-click unsubscribe link's token turns its category off for its
recipient (the holder's preference, or the contact's tick), once the token is verified."""

from __future__ import annotations

from models.clients import Client, Contact, holder_flag
from models.contracts import UnsubscribeRecipient
from models.contracts.unsubscribe_token import UnsubscribeClaims
from services.actors import authorize
from services.audit import diff, record_change
from services.context import HandlerContext
from services.errors import Rejected, UnknownReference


def unsubscribe_recipient(ctx: HandlerContext, event: UnsubscribeRecipient) -> None:
    # The token first: nothing a forged one names is looked up, locked or waited for.
    claims = ctx.opt_outs.verified_claims(event.token)
    if claims.client_id != event.client_id:
        raise Rejected(
            f"unsubscribe token is for client {claims.client_id!r}, not {event.client_id!r}"
        )
    if claims.category in ctx.opt_outs.required:
        raise Rejected(
            f"{claims.category} emails are required by this business "
            "(CLIENTFLOW_REQUIRED_EMAIL_CATEGORIES): they cannot be unsubscribed from, and "
            "their emails carry no unsubscribe link any more"
        )
    client = _client_of(ctx, claims)
    authorize(ctx.task_name, event, client)
    record: Client | Contact
    if claims.contact_id is None:
        record, changes = client, {holder_flag(claims.category): False}
        audit: dict[str, object] = {"recipient": "holder"}
    else:
        record, changes = _contact_of(ctx, client, claims.contact_id), {claims.category: False}
        audit = {"recipient": "contact", "contact_id": claims.contact_id}
    before = {name: getattr(record, name) for name in changes}
    for name, value in changes.items():
        setattr(record, name, value)
    # Recorded even when the flag was off already (a second click): the trail shows each one.
    record_change(ctx.session, ctx.task_name, event, {**audit, **diff(before, changes)})


def _client_of(ctx: HandlerContext, claims: UnsubscribeClaims) -> Client:
    """The token's client; its event never waits for it (a token is issued for a client that
    exists, so one that does not will not come)."""
    try:
        return ctx.client(claims.client_id)
    except UnknownReference as exc:
        raise UnknownReference(exc.reason) from None


def _contact_of(ctx: HandlerContext, client: Client, contact_id: str) -> Contact:
    contact = ctx.session.get(Contact, contact_id)
    if contact is None or contact.client_id != client.id:
        raise Rejected(
            f"client {client.id!r} has no contact {contact_id!r} any more: it was deleted "
            "after the email was sent, and gets no email to unsubscribe from"
        )
    return contact
