"""notifications.send applied together (services/batch.py, services/notifications.py): each
routed as on its own, and every event that is not the simple case left to its own path."""

from __future__ import annotations

from collections import Counter
from typing import Any

import payloads
import pytest
from conftest import Apply, Publisher
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_batch import _batch

from models import EmailMessage, RejectedEvent
from services.db import SessionFactory
from services.dispatch import Outcome, Result

SEND = "notifications.send"


@pytest.fixture
def two_clients(apply: Apply) -> None:
    """C1 with two contacts ticked for general and one not; C2 alone."""
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("contacts.add", payloads.contact("K1", "C1", "general"))
    apply("contacts.add", payloads.contact("K2", "C1", "general"))
    apply("contacts.add", payloads.contact("K3", "C1", "invoice"))
    apply("clients.add", payloads.client("C2", send_welcome=False))


def _outcomes(
    apply: Apply, events: list[dict[str, Any]], results: list[Result | None]
) -> list[tuple[Outcome, bool]]:
    """(outcome, applied together) of each event, those left applied on their own after."""
    return [
        (result.outcome, True) if result is not None else (apply(SEND, event).outcome, False)
        for event, result in zip(events, results, strict=True)
    ]


def test_notifications_are_routed_together_as_each_would_be_alone(
    two_clients: None, session_factory: SessionFactory, publisher: Publisher, db: Session
) -> None:
    events = [
        payloads.notification("C1"),
        payloads.notification("C2"),
        payloads.notification("C1", context={"title": "Again", "message": "Same client."}),
    ]

    results = _batch(session_factory, publisher, events, task_name=SEND)

    assert [r.outcome if r else None for r in results] == [Outcome.APPLIED] * 3
    messages = db.scalars(select(EmailMessage)).all()
    by_event = Counter((m.event_id, m.to_address) for m in messages)
    assert set(by_event.values()) == {1}
    # The holder and the two contacts ticked for general, not the one ticked for invoice.
    for event in (events[0], events[2]):
        assert {a for e, a in by_event if e == event["event_id"]} == {
            "c1@example.com", "k1@example.com", "k2@example.com",
        }  # fmt: skip
    assert {a for e, a in by_event if e == events[1]["event_id"]} == {"c2@example.com"}
    assert {m.subject for m in messages if m.event_id == events[2]["event_id"]} == {"Again"}
    # Each event's own emails in its result, and their delivery owed through the outbox.
    for event, result in zip(events, results, strict=True):
        assert result is not None
        assert sorted(result.email_ids) == sorted(
            m.id for m in messages if m.event_id == event["event_id"]
        )
    assert sorted(publisher.message_ids) == sorted(m.id for m in messages)


def test_what_is_not_the_simple_case_goes_on_its_own_with_its_own_outcome(
    two_clients: None,
    apply: Apply,
    session_factory: SessionFactory,
    publisher: Publisher,
    db: Session,
) -> None:
    first = payloads.notification("C1")
    events = [
        first,
        payloads.notification("GHOST"),  # no such client (yet)
        payloads.notification("C2", actor=payloads.client_actor("C2")),  # admin or system only
        dict(first),  # the same event twice in one batch
        payloads.notification("C2"),
    ]

    results = _batch(session_factory, publisher, events, task_name=SEND)

    assert _outcomes(apply, events, results) == [
        (Outcome.APPLIED, True),
        (Outcome.REJECTED, False),  # parked, as on its own, until its client is added
        (Outcome.REJECTED, False),
        (Outcome.DUPLICATE, False),
        (Outcome.APPLIED, True),
    ]
    rejected = {row.event_id: row for row in db.scalars(select(RejectedEvent))}
    assert rejected[events[1]["event_id"]].waiting_for == "client:GHOST"
    assert "may not publish notifications.send" in rejected[events[2]["event_id"]].reason
    assert Counter(m.event_id for m in db.scalars(select(EmailMessage))) == {
        first["event_id"]: 3,
        events[4]["event_id"]: 1,
    }


def test_a_template_that_refuses_one_event_leaves_each_to_its_own_path(
    two_clients: None,
    apply: Apply,
    session_factory: SessionFactory,
    publisher: Publisher,
    db: Session,
) -> None:
    events = [
        payloads.notification("C1"),
        payloads.notification("C2", context={"message": "No title."}),  # the template needs one
        payloads.notification("C2"),
    ]

    results = _batch(session_factory, publisher, events, task_name=SEND)

    assert results == [None, None, None]  # nothing of the batch kept
    assert db.scalars(select(EmailMessage)).all() == []
    assert _outcomes(apply, events, results) == [
        (Outcome.APPLIED, False),
        (Outcome.REJECTED, False),
        (Outcome.APPLIED, False),
    ]
    [reason] = db.scalars(select(RejectedEvent.reason)).all()
    assert "cannot render" in reason
