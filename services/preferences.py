"""clients.set_email_preferences: the holder's own choice per email category, audited."""

from __future__ import annotations

from models.clients import holder_flag
from models.contracts import SetEmailPreferences
from services.actors import authorize
from services.audit import diff, record_change
from services.context import HandlerContext


def set_email_preferences(ctx: HandlerContext, event: SetEmailPreferences) -> None:
    client = ctx.client(event.client_id)
    authorize(ctx.task_name, event, client)
    choices = event.choices()
    # Refused as a whole, not applied in part: the publisher learns at once that the holder
    # keeps getting a required category, instead of believing it turned off.
    ctx.opt_outs.refuse_holder_opt_out(c for c, receives in choices.items() if not receives)
    changes = {holder_flag(category): receives for category, receives in choices.items()}
    before = {name: getattr(client, name) for name in changes}
    for name, value in changes.items():
        setattr(client, name, value)
    record_change(ctx.session, ctx.task_name, event, diff(before, changes))
