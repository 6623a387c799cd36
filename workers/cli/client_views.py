"""How `clientflow clients` shows a client: its card and search results, as tables for people
and JSON records for scripts."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from models.billing import Invoice
from models.clients import Client, Contact
from services.client_lookup import ClientCard, ClientMatch, StatusChange
from services.money import format_money
from workers.cli.common import row_record, when
from workers.cli.email_views import email_record, emails_table
from workers.ops.render import literal

# The five WHMCS email categories, in WHMCS's order.
CATEGORIES = ("general", "product", "domain", "invoice", "support")


def match_record(match: ClientMatch) -> dict[str, object]:
    client = match.client
    return {
        "id": client.id,
        "name": client.full_name,
        "companyname": client.companyname,
        "email": client.email,
        "status": client.status,
        "matched": match.matched,
    }


def card_record(card: ClientCard) -> dict[str, object]:
    """`clients show --json`."""
    billing_id = card.billing_contact.id if card.billing_contact is not None else None
    return {
        "client": row_record(card.client),
        "status_history": [_change_record(change) for change in card.status_history],
        "history_complete": card.history_complete,
        "billing_contact_id": billing_id,
        "contacts": [_contact_record(c, billing=c.id == billing_id) for c in card.contacts],
        "services": [row_record(service) for service in card.services],
        "unpaid_invoices": [row_record(invoice) for invoice in card.unpaid_invoices],
        "last_emails": [email_record(message) for message in card.last_emails],
    }


def _change_record(change: StatusChange) -> dict[str, object]:
    return {
        "at": change.at,
        "old": change.old,
        "new": change.new,
        "action": change.action,
        "event_id": change.event_id,
        "actor": change.actor,
    }


def _contact_record(contact: Contact, *, billing: bool) -> dict[str, object]:
    record = row_record(contact)
    # The category flags together, as `categories`, beside the other fields.
    categories = {name: bool(record.pop(name)) for name in CATEGORIES}
    return {**record, "categories": categories, "billing": billing}


def matches_table(matches: Sequence[ClientMatch], text: str) -> Table:
    table = Table(title=Text(f"Clients matching {text!r} ({len(matches)} shown)"))
    for column in ("id", "name", "company", "email", "status", "matched"):
        table.add_column(column, overflow="fold")
    for match in matches:
        client = match.client
        table.add_row(
            literal(client.id),
            literal(client.full_name),
            literal(client.companyname or ""),
            literal(client.email),
            literal(client.status),
            literal(", ".join(match.matched)),
        )
    return table


def client_card(card: ClientCard) -> RenderableType:
    client = card.client
    return Group(
        Text("Client ", "bold") + literal(client.id, "bold"),
        _fields(client, card.billing_contact),
        _history(card),
        _contacts(card),
        _services(card),
        _invoices(card.unpaid_invoices),
        emails_table(card.last_emails, f"Last emails ({len(card.last_emails)} shown)", "left"),
    )


def _fields(client: Client, billing: Contact | None) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    address = ", ".join(
        part
        for part in (client.address1, client.address2, client.city, client.state,
                     client.postcode, client.country)
        if part
    )  # fmt: skip
    billed = (
        f"{billing.id}: {billing.full_name} <{billing.email}>"
        if billing is not None
        else "none (invoices go to the holder)"
    )
    for name, value in (
        ("name", client.full_name),
        ("company", client.companyname or "-"),
        ("email", client.email),
        ("status", client.status),
        ("address", address),
        ("phone", client.phonenumber),
        ("tax id", client.tax_id or "-"),
        ("language", client.language or "-"),
        ("invoice emails", "yes" if client.invoice_emails else "no (turned off by the holder)"),
        ("billing contact", billed),
        ("notes", client.notes or "-"),
        ("created (UTC)", when(client.created_at)),
        ("updated (UTC)", when(client.updated_at)),
    ):
        grid.add_row(name, literal(value))
    return grid


def _history(card: ClientCard) -> Table:
    title = "Status history"
    if not card.history_complete:
        title += " (older changes pruned from the audit trail by retention)"
    table = Table(title=title, title_justify="left")
    for column in ("when (UTC)", "from", "to", "by", "event", "event id"):
        table.add_column(column, overflow="fold")
    for change in card.status_history:
        table.add_row(
            when(change.at),
            literal(change.old or "-"),
            literal(change.new),
            literal(change.actor),
            literal(change.action),
            literal(change.event_id),
        )
    return table


def _contacts(card: ClientCard) -> Table:
    table = Table(title=f"Contacts ({len(card.contacts)})", title_justify="left")
    for column in ("id", "name", "email", *CATEGORIES, "billing"):
        table.add_column(column, overflow="fold")
    billing_id = card.billing_contact.id if card.billing_contact is not None else None
    for contact in card.contacts:
        flags = ["yes" if contact.receives(name) else "-" for name in CATEGORIES]
        table.add_row(
            literal(contact.id),
            literal(contact.full_name),
            literal(contact.email),
            *flags,
            "billing" if contact.id == billing_id else "",
        )
    return table


def _services(card: ClientCard) -> Table:
    table = Table(title=f"Services ({len(card.services)})", title_justify="left")
    for column in ("id", "product", "status", "amount", "cycle", "next due"):
        table.add_column(column, overflow="fold")
    for service in card.services:
        table.add_row(
            literal(service.id),
            literal(service.product),
            literal(service.status),
            format_money(service.amount, service.currency),
            literal(service.billing_cycle),
            service.next_due_date.isoformat() if service.next_due_date else "-",
        )
    return table


def _invoices(invoices: Sequence[Invoice]) -> Table:
    table = Table(title=f"Unpaid invoices ({len(invoices)})", title_justify="left")
    for column in ("id", "number", "date", "due", "total", "balance"):
        table.add_column(column, overflow="fold")
    for invoice in invoices:
        table.add_row(
            literal(invoice.id),
            literal(invoice.number),
            invoice.date.isoformat(),
            invoice.due_date.isoformat(),
            format_money(invoice.total, invoice.currency),
            format_money(invoice.balance, invoice.currency),
        )
    return table
