"""route_recipients as a pure function: no database, just a client and its contacts."""

from __future__ import annotations

from models import Client, Contact
from services.routing import route_recipients


def _client(*contacts: Contact) -> Client:
    client = Client(id="C1", firstname="Ada", lastname="Lovelace", email="ada@example.com")
    client.contacts = list(contacts)
    return client


def _contact(contact_id: str, email: str, **flags: bool) -> Contact:
    return Contact(
        id=contact_id,
        firstname="C",
        lastname=contact_id,
        email=email,
        **{c: flags.get(c, False) for c in ("general", "product", "domain", "invoice", "support")},
    )


def test_holder_alone_receives_every_category() -> None:
    for category in ("general", "product", "domain", "invoice", "support"):
        assert [r.email for r in route_recipients(_client(), category)] == ["ada@example.com"]


def test_ticked_contacts_follow_the_holder_in_order() -> None:
    client = _client(
        _contact("K1", "b@example.com", invoice=True),
        _contact("K2", "c@example.com", support=True),
        _contact("K3", "d@example.com", invoice=True, support=True),
    )
    routed = route_recipients(client, "invoice")
    assert [(r.email, r.role, r.contact_id) for r in routed] == [
        ("ada@example.com", "holder", None),
        ("b@example.com", "contact", "K1"),
        ("d@example.com", "contact", "K3"),
    ]


def test_addresses_deduplicated_case_insensitively() -> None:
    client = _client(
        _contact("K1", "ADA@example.com", general=True),
        _contact("K2", "x@example.com", general=True),
        _contact("K3", "X@EXAMPLE.COM", general=True),
    )
    assert [r.email for r in route_recipients(client, "general")] == [
        "ada@example.com",
        "x@example.com",
    ]
