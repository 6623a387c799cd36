"""Events that arrive before the client or contact they name are held, then released."""

from __future__ import annotations

import payloads
import pytest
from conftest import Apply, Publisher
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import RejectedEvent
from services.db import SessionFactory
from services.dispatch import Outcome
from services.errors import Transient
from services.waiting import park


def _replay_published(apply: Apply, publisher: Publisher) -> list[Outcome]:
    """Act as the broker: feed every released event back in, as a worker would receive it."""
    released = [(name, kw) for name, kw in publisher.sent if name != "emails.deliver"]
    publisher.sent.clear()
    return [apply(name, kwargs).outcome for name, kwargs in released]


def test_contact_before_its_client_is_applied_once_the_client_is(
    apply: Apply, db: Session, publisher: Publisher
) -> None:
    contact = payloads.contact("K1", "C1", "invoice")
    early = apply("contacts.add", contact)
    assert early.outcome is Outcome.REJECTED
    held = db.scalars(select(RejectedEvent)).one()
    assert (held.waiting_for, held.released_at) == ("client:C1", None)

    apply("clients.add", payloads.client("C1", send_welcome=False))

    assert [name for name, _ in publisher.sent] == ["contacts.add"]
    assert publisher.sent[0][1] == contact
    assert _replay_published(apply, publisher) == [Outcome.APPLIED]
    db.refresh(held)
    assert held.released_at is not None


def test_a_released_event_is_released_only_once(
    apply: Apply, db: Session, publisher: Publisher
) -> None:
    apply("contacts.add", payloads.contact("K1", "C1"))
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("clients.update", payloads.event("C1", city="Leeds"))
    assert [name for name, _ in publisher.sent] == ["contacts.add"]


def test_delete_before_its_contact_waits_for_the_contact(
    apply: Apply, db: Session, publisher: Publisher
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    delete = payloads.event("C1", contact_id="K1")
    assert apply("contacts.delete", delete).outcome is Outcome.REJECTED

    apply("contacts.add", payloads.contact("K1", "C1"))

    assert _replay_published(apply, publisher) == [Outcome.APPLIED]


def test_another_clients_contact_is_refused_without_waiting(
    apply: Apply, db: Session, publisher: Publisher
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("clients.add", payloads.client("C2", send_welcome=False))
    apply("contacts.add", payloads.contact("K1", "C1"))

    apply("contacts.delete", payloads.event("C2", contact_id="K1"))

    refused = db.scalars(select(RejectedEvent)).one()
    assert refused.waiting_for is None


def test_bad_input_never_waits(apply: Apply, db: Session) -> None:
    apply("contacts.add", payloads.contact("K1", "C1", email="nope"))
    assert db.scalars(select(RejectedEvent)).one().waiting_for is None


def test_parking_for_a_client_that_now_exists_asks_for_a_retry(
    apply: Apply, db: Session, session_factory: SessionFactory
) -> None:
    """The race: the contact looked for its client just before the client's add committed.

    Parking checks again under the key's lock; finding the client, it refuses to park and
    the event is retried (and then applied) instead of waiting forever.
    """
    apply("clients.add", payloads.client("C1", send_welcome=False))
    contact = payloads.contact("K1", "C1")
    with pytest.raises(Transient, match="client:C1 was added meanwhile"):
        park(session_factory, "contacts.add", contact, "unknown client 'C1'", "client:C1")
    assert db.scalars(select(RejectedEvent)).all() == []
    assert apply("contacts.add", contact).outcome is Outcome.APPLIED
