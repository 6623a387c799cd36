"""route_recipients as a pure function: no database, just a client and its contacts."""

from __future__ import annotations

import pytest

from models import Client, Contact
from services.routing import route_invoice_recipients, route_recipients

CATEGORIES = ("general", "product", "domain", "invoice", "support")
NOTHING_REQUIRED: frozenset[str] = frozenset()


def _client(*contacts: Contact, **holder_flags: bool) -> Client:
    # Set here as the column defaults would set them on insert (every category on).
    flags = {f"{c}_emails": holder_flags.get(c, True) for c in CATEGORIES}
    client = Client(id="C1", firstname="Ada", lastname="Lovelace", email="ada@example.com", **flags)
    client.contacts = list(contacts)
    return client


def _contact(contact_id: str, email: str, **flags: bool) -> Contact:
    return Contact(
        id=contact_id,
        firstname="C",
        lastname=contact_id,
        email=email,
        **{c: flags.get(c, False) for c in CATEGORIES},
    )


def test_holder_alone_receives_every_category() -> None:
    for category in CATEGORIES:
        routed = route_recipients(_client(), category, NOTHING_REQUIRED)
        assert [r.email for r in routed] == ["ada@example.com"]


def test_ticked_contacts_follow_the_holder_in_order() -> None:
    client = _client(
        _contact("K1", "b@example.com", invoice=True),
        _contact("K2", "c@example.com", support=True),
        _contact("K3", "d@example.com", invoice=True, support=True),
    )
    routed = route_recipients(client, "invoice", NOTHING_REQUIRED)
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
    assert [r.email for r in route_recipients(client, "general", NOTHING_REQUIRED)] == [
        "ada@example.com",
        "x@example.com",
    ]


@pytest.mark.parametrize("category", CATEGORIES)
def test_a_holder_who_opted_out_gets_only_the_other_categories(category: str) -> None:
    client = _client(_contact("K1", "k1@example.com", **{category: True}), **{category: False})
    assert [r.email for r in route_recipients(client, category, NOTHING_REQUIRED)] == [
        "k1@example.com"
    ]
    for other in set(CATEGORIES) - {category}:
        assert [r.email for r in route_recipients(client, other, NOTHING_REQUIRED)] == [
            "ada@example.com"
        ]


def test_a_holder_who_opted_out_and_no_contact_ticked_leaves_nobody() -> None:
    assert route_recipients(_client(support=False), "support", NOTHING_REQUIRED) == []


def test_a_required_category_reaches_the_holder_whatever_the_flag_says() -> None:
    client = _client(invoice=False, support=False, general=False)
    required = frozenset({"invoice", "support"})
    for category in ("invoice", "support"):
        assert [r.role for r in route_recipients(client, category, required)] == ["holder"]
    assert route_recipients(client, "general", required) == []
    assert [r.role for r in route_invoice_recipients(client, required)] == ["holder"]
    assert route_invoice_recipients(client, NOTHING_REQUIRED) == []


def test_the_billing_contact_gets_invoices_by_its_role_not_by_a_preference() -> None:
    billing = _contact("KB", "bill@example.com", invoice=True)
    client = _client(billing, _contact("K2", "k2@example.com", invoice=True))
    client.billing_contact_id = "KB"
    routed = route_invoice_recipients(client, NOTHING_REQUIRED)
    assert [(r.email, r.by_preference) for r in routed] == [
        ("ada@example.com", True),
        ("bill@example.com", False),
        ("k2@example.com", True),
    ]
