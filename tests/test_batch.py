"""Events applied together (services/batch.py): the same outcome, row for row, as one at a time.

What is applied together is only the simple case; every other event of the batch is left
(None) to be applied on its own afterwards, and the tests apply those the way the worker does
(process_event) to check the whole batch ends as the same events one at a time would.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import payloads
import pytest
from conftest import COMPANY, Apply, Publisher
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import AuditEvent, Client, EmailMessage, ProcessedEvent, RejectedEvent
from models.emails import EmailStatus
from services import batch
from services.batch import process_batch
from services.db import SessionFactory
from services.dispatch import Outcome, Result


def _count(db: Session, model: type[Any]) -> int:
    return db.scalar(select(func.count()).select_from(model)) or 0


def _batch(
    session_factory: SessionFactory,
    publisher: Publisher,
    events: Sequence[dict[str, Any]],
    task_name: str = "clients.add",
    deliver_now: Any = None,
) -> list[Result | None]:
    wire = [json.loads(json.dumps(payload)) for payload in events]
    return process_batch(
        task_name,
        wire,
        session_factory=session_factory,
        publish=publisher,
        company_name=COMPANY,
        deliver_now=deliver_now,
    )


def _then_each_on_its_own(
    apply: Apply, events: Sequence[dict[str, Any]], results: list[Result | None]
) -> list[Outcome]:
    """What the worker does after a batch: apply each event it left, in order."""
    return [
        result.outcome if result is not None else apply("clients.add", payload).outcome
        for payload, result in zip(events, results, strict=True)
    ]


def test_new_clients_are_applied_together_with_their_rows_and_emails(
    session_factory: SessionFactory, publisher: Publisher, db: Session
) -> None:
    events = [payloads.client(f"B{n}") for n in range(5)]

    results = _batch(session_factory, publisher, events)

    assert [r.outcome if r else None for r in results] == [Outcome.APPLIED] * 5
    assert db.scalars(select(Client.id).order_by(Client.id)).all() == [f"B{n}" for n in range(5)]
    assert _count(db, ProcessedEvent) == 5
    audits = db.scalars(select(AuditEvent).order_by(AuditEvent.client_id)).all()
    assert [(a.client_id, a.event_id, a.action) for a in audits] == [
        (f"B{n}", events[n]["event_id"], "clients.add") for n in range(5)
    ]
    assert audits[0].changes["created"]["email"] == "b0@example.com"
    welcome = db.scalars(select(EmailMessage).order_by(EmailMessage.to_address)).all()
    assert [m.to_address for m in welcome] == [f"b{n}@example.com" for n in range(5)]
    # Each event's email is its own: its id in the result, its event's idempotency key.
    for n, result in enumerate(results):
        assert result is not None
        assert result.email_ids == [welcome[n].id]
        assert welcome[n].event_id == events[n]["event_id"]
    # No deliver_now: each event's delivery is owed through the outbox, as on its own.
    assert sorted(publisher.message_ids) == sorted(m.id for m in welcome)


def test_a_redelivered_batch_is_all_duplicates_on_its_own(
    session_factory: SessionFactory, publisher: Publisher, apply: Apply, db: Session
) -> None:
    events = [payloads.client(f"B{n}") for n in range(3)]
    _batch(session_factory, publisher, events)

    again = _batch(session_factory, publisher, events)

    assert again == [None, None, None]
    assert _then_each_on_its_own(apply, events, again) == [Outcome.DUPLICATE] * 3
    assert _count(db, Client) == 3
    assert _count(db, EmailMessage) == 3


def test_events_that_are_not_the_simple_case_are_left_to_be_applied_on_their_own(
    session_factory: SessionFactory, publisher: Publisher, apply: Apply, db: Session
) -> None:
    apply("clients.add", payloads.client("OLD", email="taken@example.com"))
    first = payloads.client("B1")
    events = [
        first,
        payloads.client("B2"),
        dict(first),  # the same event twice in one batch
        payloads.client("B3", email="taken@example.com"),  # an existing client's email
        payloads.client("B4", email="B1@example.com"),  # an email earlier in the batch
        payloads.client("B1"),  # a client id earlier in the batch, another event
        payloads.client("B5", email="not an address"),  # invalid
        payloads.client("B6", actor={"kind": "client", "client_id": "B0"}),  # forbidden
        payloads.client("B7"),
    ]

    results = _batch(session_factory, publisher, events)

    applied = [r.outcome if r else None for r in results]
    assert applied == [Outcome.APPLIED, Outcome.APPLIED] + [None] * 6 + [Outcome.APPLIED]
    assert _then_each_on_its_own(apply, events, results) == [
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.DUPLICATE,
        Outcome.REJECTED,
        Outcome.REJECTED,
        Outcome.REJECTED,
        Outcome.REJECTED,
        Outcome.REJECTED,
        Outcome.APPLIED,
    ]
    reasons = db.scalars(select(RejectedEvent.reason).order_by(RejectedEvent.id)).all()
    assert reasons[:3] == [
        "Duplicate Email Address: taken@example.com is already used by client 'OLD'",
        "Duplicate Email Address: B1@example.com is already used by client 'B1'",
        "client 'B1' already exists",
    ]
    assert "email" in reasons[3]
    assert "may not" in reasons[4]
    assert len(reasons) == 5
    assert sorted(db.scalars(select(Client.id)).all()) == ["B1", "B2", "B7", "OLD"]


def test_events_waiting_for_a_client_are_released_by_the_batch_that_adds_it(
    session_factory: SessionFactory, publisher: Publisher, apply: Apply, db: Session
) -> None:
    contact = payloads.contact("K1", "B2", "invoice")
    assert apply("contacts.add", contact).outcome is Outcome.REJECTED
    publisher.sent.clear()

    _batch(session_factory, publisher, [payloads.client(f"B{n}") for n in range(4)])

    assert [kw for name, kw in publisher.sent if name == "contacts.add"] == [contact]
    held = db.scalars(select(RejectedEvent)).one()
    assert held.released_at is not None


def test_a_failure_while_applying_keeps_nothing_and_leaves_every_event(
    session_factory: SessionFactory,
    publisher: Publisher,
    apply: Apply,
    db: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def collide(*_: Any) -> set[str]:
        raise IntegrityError("INSERT", {}, Exception("duplicate key (a concurrent worker)"))

    kind = next(iter(batch.TOGETHER))
    monkeypatch.setitem(batch.TOGETHER, kind, batch.TOGETHER[kind].__class__(
        check=batch.TOGETHER[kind].check, apply=collide, keys=batch.TOGETHER[kind].keys,
    ))  # fmt: skip
    events = [payloads.client(f"B{n}") for n in range(3)]

    results = _batch(session_factory, publisher, events)

    assert results == [None, None, None]
    assert (_count(db, ProcessedEvent), _count(db, Client), publisher.sent) == (0, 0, [])
    monkeypatch.undo()
    assert _then_each_on_its_own(apply, events, results) == [Outcome.APPLIED] * 3


def test_a_batch_of_one_or_of_other_events_is_left_alone(
    session_factory: SessionFactory, publisher: Publisher, db: Session
) -> None:
    assert _batch(session_factory, publisher, [payloads.client("B1")]) == [None]
    contacts = [payloads.contact(f"K{n}", "B1") for n in range(3)]
    assert _batch(session_factory, publisher, contacts, task_name="contacts.add") == [None] * 3
    assert _count(db, ProcessedEvent) == 0


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def ready(self) -> bool:
        return True

    def __call__(self, messages: list[EmailMessage]) -> None:
        self.calls.append([m.id for m in messages])


def test_the_batch_sends_its_emails_in_one_delivery_after_its_commit(
    session_factory: SessionFactory, publisher: Publisher, db: Session
) -> None:
    sent = Recorder()

    events = [payloads.client(f"B{n}") for n in range(4)]

    results = _batch(session_factory, publisher, events, deliver_now=sent)

    assert len(sent.calls) == 1
    assert sent.calls[0] == [i for r in results if r for i in r.email_ids]
    claimed = db.scalars(select(EmailMessage.status)).all()
    assert claimed == [EmailStatus.SENDING] * 4
    assert publisher.sent == []  # no outbox row, no delivery task: sent here
