"""Client rules: duplicate emails, the welcome email, status changes with audit, actors."""

from __future__ import annotations

import payloads
import pytest
from conftest import Apply, Publisher
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import AuditEvent, Client, EmailMessage, RejectedEvent
from services import clients
from services.dispatch import Outcome
from services.errors import Transient


def test_add_client_persists_fields_and_queues_welcome(
    apply: Apply, db: Session, publisher: Publisher
) -> None:
    result = apply("clients.add", payloads.client("C1", companyname="Engines Ltd", country="gb"))

    assert result.outcome is Outcome.APPLIED
    client = db.get(Client, "C1")
    assert client is not None
    assert (client.firstname, client.companyname, client.country, client.status) == (
        "Ada",
        "Engines Ltd",
        "GB",
        "Active",
    )
    welcome = db.scalars(select(EmailMessage)).one()
    assert (welcome.to_address, welcome.template, welcome.status) == (
        "c1@example.com",
        "client_signup",
        "queued",
    )
    assert publisher.message_ids == [welcome.id]


def test_send_welcome_false_sends_nothing(apply: Apply, db: Session, publisher: Publisher) -> None:
    assert (
        apply("clients.add", payloads.client("C1", send_welcome=False)).outcome is Outcome.APPLIED
    )
    assert db.scalars(select(EmailMessage)).all() == []
    assert publisher.deliveries == []


def test_duplicate_email_refused_case_insensitively(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1", email="ada@example.com"))

    result = apply("clients.add", payloads.client("C2", email="ADA@Example.COM"))

    assert result.outcome is Outcome.REJECTED
    assert result.reason is not None
    assert "Duplicate Email Address" in result.reason
    assert db.get(Client, "C2") is None
    rejected = db.scalars(select(RejectedEvent)).one()
    assert rejected.task_name == "clients.add"
    assert "Duplicate Email Address" in rejected.reason


def test_update_to_another_clients_email_refused(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1", email="ada@example.com"))
    apply("clients.add", payloads.client("C2", email="grace@example.com"))

    result = apply("clients.update", payloads.event("C2", email="Ada@example.com"))

    assert result.outcome is Outcome.REJECTED
    client = db.get(Client, "C2")
    assert client is not None
    assert client.email == "grace@example.com"


def test_update_own_email_in_other_case_allowed(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1", email="ada@example.com"))
    assert apply("clients.update", payloads.event("C1", email="ADA@example.com")).outcome is (
        Outcome.APPLIED
    )


def test_same_client_id_twice_refused(apply: Apply) -> None:
    apply("clients.add", payloads.client("C1"))
    result = apply("clients.add", payloads.client("C1", email="other@example.com"))
    assert result.outcome is Outcome.REJECTED
    assert result.reason == "client 'C1' already exists"


def test_update_changes_only_given_fields_and_audits(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1", companyname="Old Ltd"))

    apply("clients.update", payloads.event("C1", city="Paris", companyname=None))

    client = db.get(Client, "C1")
    assert client is not None
    assert (client.city, client.companyname, client.firstname) == ("Paris", None, "Ada")
    audit = db.scalars(select(AuditEvent).where(AuditEvent.action == "clients.update")).one()
    assert audit.changes == {"city": ["London", "Paris"], "companyname": ["Old Ltd", None]}


def test_update_cannot_null_a_required_field(apply: Apply) -> None:
    apply("clients.add", payloads.client("C1"))
    result = apply("clients.update", payloads.event("C1", email=None))
    assert result.outcome is Outcome.REJECTED
    assert result.reason is not None
    assert "email cannot be null" in result.reason


def test_status_change_keeps_client_and_records_actor_and_time(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1"))
    payload = payloads.event("C1", status="Closed", actor={"kind": "admin"})

    assert apply("clients.set_status", payload).outcome is Outcome.APPLIED

    client = db.get(Client, "C1")
    assert client is not None
    assert client.status == "Closed"
    audit = db.scalars(select(AuditEvent).where(AuditEvent.action == "clients.set_status")).one()
    assert audit.changes == {"status": ["Active", "Closed"]}
    assert (audit.actor_kind, audit.event_id) == ("admin", payload["event_id"])
    assert audit.created_at.tzinfo is not None


def test_status_must_be_one_of_three(apply: Apply) -> None:
    apply("clients.add", payloads.client("C1"))
    result = apply("clients.set_status", payloads.event("C1", status="Suspended"))
    assert result.outcome is Outcome.REJECTED
    assert result.reason is not None
    assert "'Active', 'Inactive' or 'Closed'" in result.reason


def test_unknown_client_refused(apply: Apply) -> None:
    result = apply("clients.update", payloads.event("NOPE", city="Paris"))
    assert result.outcome is Outcome.REJECTED
    assert result.reason == "unknown client 'NOPE'"


def test_client_actor_updates_own_profile(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1"))
    payload = payloads.event("C1", city="Oxford", actor=payloads.client_actor("C1"))
    assert apply("clients.update", payload).outcome is Outcome.APPLIED
    audit = db.scalars(select(AuditEvent).where(AuditEvent.action == "clients.update")).one()
    assert (audit.actor_kind, audit.actor_client_id) == ("client", "C1")


def test_client_actor_cannot_touch_another_profile(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1"))
    apply("clients.add", payloads.client("C2"))
    payload = payloads.event("C2", city="Oxford", actor=payloads.client_actor("C1"))

    result = apply("clients.update", payload)

    assert result.outcome is Outcome.REJECTED
    assert result.reason == "client C1 may not act on client C2's records"
    client = db.get(Client, "C2")
    assert client is not None
    assert client.city == "London"


def test_client_actor_cannot_change_status_or_add_clients(apply: Apply) -> None:
    apply("clients.add", payloads.client("C1"))
    status = apply(
        "clients.set_status",
        payloads.event("C1", status="Inactive", actor=payloads.client_actor("C1")),
    )
    add = apply("clients.add", payloads.client("C9", actor=payloads.client_actor("C9")))
    assert status.outcome is Outcome.REJECTED
    assert add.outcome is Outcome.REJECTED
    assert status.reason is not None
    assert "only admin or system" in status.reason


def test_closed_client_cannot_act_but_admin_can(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1"))
    apply("clients.set_status", payloads.event("C1", status="Closed"))

    by_client = apply(
        "clients.update", payloads.event("C1", city="Oxford", actor=payloads.client_actor("C1"))
    )
    by_admin = apply("clients.update", payloads.event("C1", city="Leeds", actor={"kind": "admin"}))

    assert by_client.outcome is Outcome.REJECTED
    assert by_client.reason == "client C1 is Closed and cannot log in or act"
    assert by_admin.outcome is Outcome.APPLIED
    client = db.get(Client, "C1")
    assert client is not None
    assert client.city == "Leeds"


def test_an_add_whose_obstacle_is_gone_when_asked_is_retried_not_dropped(
    apply: Apply, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The insert skipped the client (its id or email taken), and by the time the reason is
    asked the client in the way has gone (deleted meanwhile): neither applied nor refused,
    but left for a retry, when the insert will find the way clear."""
    apply("clients.add", payloads.client("C1", send_welcome=False))
    monkeypatch.setattr(clients, "taken_clients", lambda session, events: {})

    with pytest.raises(Transient, match="'C1' was in the way and is gone"):
        apply("clients.add", payloads.client("C1", email="other@example.com"))

    assert db.scalars(select(RejectedEvent)).all() == []
    assert db.scalars(select(Client.email)).all() == ["c1@example.com"]
