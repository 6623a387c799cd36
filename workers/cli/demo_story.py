"""The scripted story `clientflow demo` publishes: what an upstream billing system would send."""

from __future__ import annotations

from typing import Any

Event = tuple[str, dict[str, Any]]

_ADA = {
    "firstname": "Ada",
    "lastname": "Lovelace",
    "companyname": "Analytical Engines Ltd",
    "email": "ada@analytical.example",
    "address1": "12 St James's Square",
    "city": "London",
    "state": "Greater London",
    "postcode": "SW1Y 4JH",
    "country": "GB",
    "phonenumber": "+44 20 7946 0000",
}
_GRACE = {
    "firstname": "Grace",
    "lastname": "Hopper",
    "email": "grace@cobol.example",
    "address1": "1 Navy Yard",
    "city": "Arlington",
    "state": "VA",
    "postcode": "22202",
    "country": "US",
    "phonenumber": "+1 703 555 0100",
}


_FRANKFURT = {
    "event_id": "demo-008",
    "client_id": "C1001",
    "category": "general",
    "template": "general_announcement",
    "context": {
        "title": "New data centre in Frankfurt",
        "message": "You can now order services hosted in Frankfurt.",
    },
}


def story() -> list[Event]:
    """Each (task name, keyword arguments) pair, in publishing order."""
    return [
        ("clients.add", {"event_id": "demo-001", "client_id": "C1001", **_ADA}),
        (
            "clients.add",
            {"event_id": "demo-002", "client_id": "C1002", **_GRACE, "send_welcome": False},
        ),
        (
            "contacts.add",
            {
                "event_id": "demo-003",
                "client_id": "C1001",
                "contact_id": "K1",
                "firstname": "Charles",
                "lastname": "Babbage",
                "email": "accounts@analytical.example",
                "invoice": True,
                "general": True,
            },
        ),
        (
            "contacts.add",
            {
                "event_id": "demo-004",
                "client_id": "C1001",
                "contact_id": "K2",
                "firstname": "Mary",
                "lastname": "Somerville",
                "email": "tech@analytical.example",
                "product": True,
                "domain": True,
            },
        ),
        # Added by Ada herself from the client area, for general mail only.
        (
            "contacts.add",
            {
                "event_id": "demo-005",
                "client_id": "C1001",
                "contact_id": "K3",
                "firstname": "Augustus",
                "lastname": "De Morgan",
                "email": "augustus@analytical.example",
                "general": True,
                "actor": {"kind": "client", "client_id": "C1001"},
            },
        ),
        # A contact with no category ticked: it receives nothing.
        (
            "contacts.add",
            {
                "event_id": "demo-014",
                "client_id": "C1001",
                "contact_id": "K4",
                "firstname": "Michael",
                "lastname": "Faraday",
                "email": "michael@analytical.example",
            },
        ),
        (
            "clients.set_billing_contact",
            {"event_id": "demo-006", "client_id": "C1001", "contact_id": "K1"},
        ),
        (
            "notifications.send",
            {
                "event_id": "demo-007",
                "client_id": "C1001",
                "category": "product",
                "template": "service_notice",
                "context": {
                    "service": "Shared Hosting Pro",
                    "headline": "maintenance on 1 December",
                    "message": "Your server moves to new hardware between 02:00 and 03:00 UTC.",
                },
            },
        ),
        ("notifications.send", _FRANKFURT),
        (
            "clients.set_status",
            {
                "event_id": "demo-009",
                "client_id": "C1002",
                "status": "Inactive",
                "actor": {"kind": "admin"},
            },
        ),
        # Upstream retried a publish: the same event id again changes nothing, sends nothing.
        ("notifications.send", _FRANKFURT),
        # Refused: the email is Ada's in other letter case.
        (
            "clients.add",
            {
                "event_id": "demo-010",
                "client_id": "C1003",
                **{**_ADA, "email": "ADA@Analytical.Example"},
            },
        ),
        # Refused: a client may not touch another client's contacts.
        (
            "contacts.delete",
            {
                "event_id": "demo-011",
                "client_id": "C1001",
                "contact_id": "K2",
                "actor": {"kind": "client", "client_id": "C1002"},
            },
        ),
        # Ada removes the contact she added herself; demo-015 no longer reaches it.
        (
            "contacts.delete",
            {
                "event_id": "demo-012",
                "client_id": "C1001",
                "contact_id": "K3",
                "actor": {"kind": "client", "client_id": "C1001"},
            },
        ),
        (
            "notifications.send",
            {
                "event_id": "demo-013",
                "client_id": "C1001",
                "category": "domain",
                "template": "domain_renewal",
                "context": {"domain": "analytical.example", "expiry_date": "2027-01-15"},
            },
        ),
        (
            "notifications.send",
            {
                "event_id": "demo-015",
                "client_id": "C1001",
                "category": "general",
                "template": "general_announcement",
                "context": {
                    "title": "Support hours over the holidays",
                    "message": "Our support desk is open every day.",
                },
            },
        ),
    ]
