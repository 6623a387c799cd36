"""`clientflow clients`: look a client up (find) and see everything about one (show)."""

from __future__ import annotations

import typer

from services.client_lookup import DEFAULT_FIND_LIMIT, client_card, find_clients
from services.errors import BadFilter
from workers.cli import client_views
from workers.cli.common import console, database, print_json, refuse

clients_app = typer.Typer(help="Clients: find one, show one.", no_args_is_help=True)


@clients_app.command("show")
def clients_show(
    client_id: str = typer.Argument(..., metavar="ID", help="The client's id."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
) -> None:
    """A client: its fields, status history, contacts and their email categories, billing
    contact, services, unpaid invoices and last emails."""
    with database() as session:
        card = client_card(session, client_id)
    if card is None:
        refuse(f"no client {client_id!r} (`clientflow clients find TEXT` looks one up)")
    if as_json:
        print_json(client_views.card_record(card))
        return
    console.print(client_views.client_card(card))


@clients_app.command("find")
def clients_find(
    text: str = typer.Argument(..., help="Part of a name, company or email (any case), or an id."),
    limit: int = typer.Option(DEFAULT_FIND_LIMIT, min=1, max=1000, help="At most this many."),
    as_json: bool = typer.Option(False, "--json", help="One JSON array, for scripts."),
) -> None:
    """Clients whose name, company or email (or a contact's) contains TEXT, by name."""
    with database() as session:
        try:
            matches = find_clients(session, text, limit)
        except BadFilter as exc:
            raise typer.BadParameter(str(exc), param_hint="'TEXT'") from exc
    if as_json:
        print_json([client_views.match_record(match) for match in matches])
        return
    console.print(client_views.matches_table(matches, text))
