"""Event payloads for tests, as an upstream publisher would send them (plain JSON data)."""

from __future__ import annotations

import itertools
from typing import Any

_counter = itertools.count(1)


def event_id() -> str:
    return f"evt-{next(_counter)}"


def client(client_id: str = "C1", **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": event_id(),
        "client_id": client_id,
        "firstname": "Ada",
        "lastname": "Lovelace",
        "email": f"{client_id.lower()}@example.com",
        "address1": "12 St James's Square",
        "city": "London",
        "state": "Greater London",
        "postcode": "SW1Y 4JH",
        "country": "GB",
        "phonenumber": "+44 20 7946 0000",
    }
    payload.update(overrides)
    return payload


def contact(
    contact_id: str, client_id: str = "C1", *categories: str, **overrides: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": event_id(),
        "client_id": client_id,
        "contact_id": contact_id,
        "firstname": "Charles",
        "lastname": contact_id,
        "email": f"{contact_id.lower()}@example.com",
        **{category: True for category in categories},
    }
    payload.update(overrides)
    return payload


def notification(
    client_id: str = "C1", category: str = "general", **overrides: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": event_id(),
        "client_id": client_id,
        "category": category,
        "template": "general_announcement",
        "context": {"title": "Maintenance", "message": "Tonight."},
    }
    payload.update(overrides)
    return payload


def event(client_id: str = "C1", **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id(), "client_id": client_id, **fields}


def unsubscribe(token: str, **overrides: Any) -> dict[str, Any]:
    """recipients.unsubscribe as a link's handler publishes it: an event id and the token."""
    return {"event_id": event_id(), "token": token, **overrides}


def client_actor(client_id: str) -> dict[str, Any]:
    return {"kind": "client", "client_id": client_id}


def service(
    service_id: str, client_id: str = "C1", next_due_date: str = "2026-03-01", **overrides: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": event_id(),
        "client_id": client_id,
        "service_id": service_id,
        "product": "Shared Hosting Pro",
        "status": "Active",
        "amount": "12.50",
        "currency": "USD",
        "billing_cycle": "Monthly",
        "next_due_date": next_due_date,
    }
    payload.update(overrides)
    return payload


def invoice(
    invoice_id: str,
    client_id: str = "C1",
    date: str = "2026-03-01",
    due_date: str = "2026-03-15",
    **overrides: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": event_id(),
        "client_id": client_id,
        "invoice_id": invoice_id,
        "number": f"INV-{invoice_id}",
        "date": date,
        "due_date": due_date,
        "currency": "GBP",
        "items": [
            {"description": "Shared Hosting Pro (2026-03-15 - 2026-04-14)", "amount": "1000.00"},
            {"description": "Domain renewal example.com", "amount": "12.99"},
        ],
        "subtotal": "1012.99",
        "tax": "202.60",
        "total": "1215.59",
        "balance": "1215.59",
        "status": "Unpaid",
    }
    payload.update(overrides)
    return payload


def payment(
    invoice_id: str, amount: str, client_id: str = "C1", **overrides: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": event_id(),
        "client_id": client_id,
        "invoice_id": invoice_id,
        "amount": amount,
        "date": "2026-03-10",
    }
    payload.update(overrides)
    return payload
