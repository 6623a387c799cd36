"""The optional contract_version of every event: a worker refuses an event newer than it knows,
naming both versions, and takes older or equal ones as they are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import payloads
import pytest
from conftest import Apply
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import AuditEvent, Client, RejectedEvent
from models.contracts import CONTRACT_VERSION, EVENTS, json_schemas, version
from services.dispatch import Outcome, parse_event
from services.errors import Rejected

# One valid payload per event of the contract (the envelope and what each event requires).
VALID: dict[str, Callable[[], dict[str, Any]]] = {
    "clients.add": lambda: payloads.client("C1"),
    "clients.update": lambda: payloads.event("C1", companyname="Engines Ltd"),
    "clients.set_status": lambda: payloads.event("C1", status="Inactive"),
    "clients.set_billing_contact": lambda: payloads.event("C1", contact_id="K1"),
    "clients.close": lambda: payloads.event("C1"),
    "clients.set_email_preferences": lambda: payloads.event("C1", general=False),
    "recipients.unsubscribe": lambda: payloads.unsubscribe("claims.signature", client_id="C1"),
    "contacts.add": lambda: payloads.contact("K1", "C1"),
    "contacts.update": lambda: payloads.event("C1", contact_id="K1", firstname="Charles"),
    "contacts.delete": lambda: payloads.event("C1", contact_id="K1"),
    "notifications.send": lambda: payloads.notification("C1"),
    "services.upsert": lambda: payloads.service("S1", "C1"),
    "invoices.upsert": lambda: payloads.invoice("I1", "C1"),
    "invoices.record_payment": lambda: payloads.payment("I1", "1.00", "C1"),
}


def newer_reason(declared: int, known: int) -> str:
    return (
        f"contract version {declared} is newer than this worker's {known}: upgrade the "
        f"workers before publishing version {declared} events, then publish this one again"
    )


def reason_for(task: str, payload: dict[str, Any]) -> str:
    with pytest.raises(Rejected) as info:
        parse_event(task, payload)
    return info.value.reason


def test_every_event_has_a_payload_here() -> None:
    assert set(VALID) == set(EVENTS)


@pytest.mark.parametrize("task", sorted(EVENTS))
def test_every_event_takes_the_current_version_or_none(task: str) -> None:
    assert parse_event(task, VALID[task]()).contract_version is None
    event = parse_event(task, {**VALID[task](), "contract_version": CONTRACT_VERSION})
    assert event.contract_version == CONTRACT_VERSION


@pytest.mark.parametrize("task", sorted(EVENTS))
def test_every_event_refuses_a_newer_version_naming_both(task: str) -> None:
    newer = CONTRACT_VERSION + 1
    reason = reason_for(task, {**VALID[task](), "contract_version": newer})
    assert reason == newer_reason(newer, CONTRACT_VERSION)


def test_a_newer_event_with_fields_this_worker_lacks_is_refused_for_its_version() -> None:
    """What a newer event usually looks like to an old worker: the version is the reason,
    not the fields it cannot know."""
    payload = {**payloads.client("C1"), "contract_version": 7, "loyalty_tier": "gold"}
    assert reason_for("clients.add", payload) == newer_reason(7, CONTRACT_VERSION)


def test_older_and_equal_versions_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only version 1 exists so far: pretend this worker knows 3 to have older ones.
    monkeypatch.setattr(version, "CONTRACT_VERSION", 3)
    for declared in (1, 2, 3):
        event = parse_event("clients.add", {**payloads.client("C1"), "contract_version": declared})
        assert event.contract_version == declared
    reason = reason_for("clients.add", {**payloads.client("C1"), "contract_version": 4})
    assert reason == newer_reason(4, 3)


def test_the_model_itself_refuses_a_newer_version() -> None:
    """Not only parse_event: an event built from the contract directly cannot be newer."""
    model = EVENTS["clients.add"]
    with pytest.raises(ValidationError) as info:
        model.model_validate({**payloads.client("C1"), "contract_version": CONTRACT_VERSION + 1})
    assert newer_reason(CONTRACT_VERSION + 1, CONTRACT_VERSION) in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "contract_version: Input should be greater than or equal to 1"),
        (-2, "contract_version: Input should be greater than or equal to 1"),
        ("2", "contract_version: Input should be a valid integer"),
        (1.0, "contract_version: Input should be a valid integer"),
        (True, "contract_version: Input should be a valid integer"),
        ([1], "contract_version: Input should be a valid integer"),
    ],
)
def test_a_version_that_is_not_a_whole_number_from_1_is_invalid(value: Any, expected: str) -> None:
    reason = reason_for("clients.add", {**payloads.client("C1"), "contract_version": value})
    assert reason.startswith("invalid event: ")
    assert expected in reason


def test_a_newer_event_is_recorded_as_a_rejection(apply: Apply, db: Session) -> None:
    payload = {**payloads.client("C1"), "contract_version": CONTRACT_VERSION + 2}

    result = apply("clients.add", payload)

    assert result.outcome is Outcome.REJECTED
    assert result.reason == newer_reason(CONTRACT_VERSION + 2, CONTRACT_VERSION)
    rejected = db.scalars(select(RejectedEvent)).one()
    assert (rejected.event_id, rejected.task_name, rejected.waiting_for) == (
        payload["event_id"],
        "clients.add",
        None,
    )
    assert rejected.reason == result.reason
    assert db.get(Client, "C1") is None


def test_the_version_is_envelope_not_a_field_to_store_or_change(apply: Apply, db: Session) -> None:
    """Handlers copy an event's fields onto records; the version is not one of them."""
    add = {**payloads.client("C1"), "contract_version": CONTRACT_VERSION}
    assert apply("clients.add", add).outcome is Outcome.APPLIED
    update = payloads.event("C1", companyname="Engines Ltd", contract_version=CONTRACT_VERSION)
    assert apply("clients.update", update).outcome is Outcome.APPLIED
    contact = {**payloads.contact("K1", "C1"), "contract_version": CONTRACT_VERSION}
    assert apply("contacts.add", contact).outcome is Outcome.APPLIED

    client = db.get(Client, "C1")
    assert client is not None
    assert client.companyname == "Engines Ltd"
    audit = db.scalars(select(AuditEvent).where(AuditEvent.action == "clients.update")).one()
    assert audit.changes == {"companyname": [None, "Engines Ltd"]}
    only_version = payloads.event("C1", contract_version=CONTRACT_VERSION)
    assert reason_for("clients.update", only_version) == (
        "invalid event: payload: Value error, names no field to change"
    )


def test_the_schema_offers_the_version_without_requiring_it() -> None:
    for name, schema in json_schemas().items():
        assert "contract_version" in schema["properties"], name
        assert "contract_version" not in schema["required"], name
