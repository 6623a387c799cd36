"""How `clientflow emails` shows the message log: tables for people, JSON records for scripts.

Every value from a message goes through `literal` (shown, never obeyed as markup or a terminal
escape); the JSON keeps the exact text.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, JustifyMethod, RenderableType
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from models.emails import EmailMessage
from services.mail.lookup import EmailView
from workers.cli.common import when
from workers.ops.render import literal

PRUNED_NOTE = (
    "pruned by retention (CLIENTFLOW_EMAIL_BODIES_KEEP_DAYS): only its headers and delivery "
    "record are kept, and it cannot be resent"
)


def email_record(message: EmailMessage) -> dict[str, object]:
    """One row of `emails list --json`."""
    return {
        "id": message.id,
        "created_at": message.created_at,
        "client_id": message.client_id,
        "to_address": message.to_address,
        "to_name": message.to_name,
        "subject": message.subject,
        "template": message.template,
        "category": message.category,
        "event_id": message.event_id,
        "status": message.status,
        "attempts": message.attempts,
        "last_error": message.last_error,
        "sent_at": message.sent_at,
        "resend_of": message.resend_of,
    }


def email_detail_record(view: EmailView) -> dict[str, object]:
    """`emails show --json`: the list's fields and what show adds."""
    message = view.message
    return {
        **email_record(message),
        "updated_at": message.updated_at,
        "idempotency_key": message.idempotency_key,
        "headers": view.headers,
        "compose_error": view.compose_error,
        "resends": view.resends,
        "body_pruned": view.body_pruned,
        "body_text": None if view.body_pruned else message.body_text,
    }


def emails_table(
    messages: Sequence[EmailMessage], title: str, justify: JustifyMethod = "center"
) -> Table:
    table = Table(title=title, title_justify=justify)
    columns = ("id", "when (UTC)", "client", "to", "subject", "template", "event", "status")
    for column in (*columns, "attempts", "last error"):
        table.add_column(column, overflow="fold")
    for m in messages:
        event = literal(m.event_id) + (Text(" (resend)", "italic") if m.resend_of else "")
        table.add_row(
            literal(m.id),
            when(m.created_at),
            literal(m.client_id),
            literal(m.to_address),
            literal(m.subject),
            literal(m.template),
            event,
            literal(m.status),
            str(m.attempts),
            literal(m.last_error or ""),
        )
    return table


def email_card(view: EmailView) -> RenderableType:
    """`emails show`: the headers as sent, the row's fields, the text part."""
    message = view.message
    headers = Table.grid(padding=(0, 2))
    headers.add_column(style="bold")
    headers.add_column(overflow="fold")
    for name, value in view.headers.items():
        headers.add_row(f"{name}:", literal(value))
    if view.compose_error is not None:
        headers.add_row("headers:", literal(f"cannot be composed: {view.compose_error}", "red"))
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    resends = ", ".join(view.resends) or "-"
    for name, value in (
        ("idempotency key", message.idempotency_key),
        ("event", message.event_id),
        ("template", f"{message.template} (category {message.category})"),
        ("client", message.client_id),
        ("status", message.status),
        ("attempts", str(message.attempts)),
        ("last error", message.last_error or "-"),
        ("created (UTC)", when(message.created_at)),
        ("sent (UTC)", when(message.sent_at)),
        ("resend of", message.resend_of or "-"),
        ("resends", resends),
    ):
        fields.add_row(name, literal(value))
    body: RenderableType = (
        Text(f"body {PRUNED_NOTE}", "bold yellow")
        if view.body_pruned
        else literal(message.body_text)
    )
    return Group(
        Text(f"Email {message.id}", "bold"),
        headers,
        Text(),
        fields,
        Rule("text part", align="left"),
        body,
    )
