"""Events that arrive before the client or contact they name are held, then released."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import payloads
from conftest import Apply, Publisher
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from worker_process import wait_until

from models import Client, RejectedEvent
from services.context import HandlerContext
from services.db import UnitOfWork, make_engine, make_session_factory
from services.dispatch import Outcome, process_event
from services.mail.queue import EmailQueue
from services.waiting import release_waiting

CLIENT_FIELDS = {
    k: v for k, v in payloads.client("C1").items() if k not in ("event_id", "client_id")
}


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


def test_an_event_refused_while_its_client_is_being_added_is_released_not_lost(
    new_postgres_database: Callable[[], str],
) -> None:
    """The race of two worker processes: contacts.add finds no client (clients.add has not
    committed), and records its waiting row only after clients.add looked for waiting rows.
    The per-key lock makes the recorder wait for that commit, see the client, and release."""
    engine = make_engine(new_postgres_database())
    sessions = make_session_factory(engine)
    published: list[tuple[str, dict[str, Any]]] = []
    contact = payloads.contact("K1", "C1")

    def refuse_contact() -> None:
        process_event(
            "contacts.add",
            contact,
            session_factory=sessions,
            publish=lambda name, kwargs: published.append((name, kwargs)),
            company_name="T",
        )

    with UnitOfWork(sessions) as adding:
        adding.session.add(Client(id="C1", **CLIENT_FIELDS))
        adding.session.flush()
        ctx = HandlerContext("clients.add", adding.session, EmailQueue(adding.session, "e", "T"))
        assert release_waiting(ctx, "client:C1") == 0  # nothing waits yet; holds the lock
        refusing = threading.Thread(target=refuse_contact)
        refusing.start()
        # The contact was refused (no client visible) and its recorder now waits for the lock.
        wait_until(lambda: _advisory_lock_waiters(engine) == 1, "the recorder to wait")
        adding.commit()
    refusing.join(timeout=30)

    assert published == [("contacts.add", contact)]
    with sessions() as session:
        held = session.scalars(select(RejectedEvent)).one()
        assert (held.waiting_for, held.released_at is not None) == ("client:C1", True)
    engine.dispose()


def _advisory_lock_waiters(engine: Engine) -> int:
    with engine.connect() as conn:
        query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        return int(conn.exec_driver_sql(query).scalar_one())
