"""Two workers applying events on the same records at the same moment, made deterministic in
one process: the other worker's transaction runs, on its own connection and thread, at the
point where a race puts it (tests/test_many_workers.py races real workers and found both).

Real databases with real commits (the savepoint-wrapped `session_factory` fixture shares one
connection, so it cannot show one transaction committing under another).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import payloads
import pytest
from conftest import COMPANY, Publisher
from sqlalchemy import Engine, func, select, text, update
from worker_process import wait_until

from models.clients import Client
from models.contracts import AddClient, DeleteContact, Event
from models.engine import make_engine
from models.records import AuditEvent, ProcessedEvent, RejectedEvent
from services.context import HandlerContext
from services.db import SessionFactory, make_session_factory
from services.dispatch import HANDLERS, Outcome, Result, process_event
from services.errors import Transient


@pytest.fixture
def database(new_postgres_database: Callable[[], str]) -> Iterator[Engine]:
    """A fresh, migrated PostgreSQL database of its own: these tests commit for real. (Not
    SQLite: a transaction there reads one snapshot, and writing after another commit fails
    as "database is locked", a transient error retried, so these races cannot happen.)"""
    engine = make_engine(new_postgres_database())
    yield engine
    engine.dispose()


def applier(sessions: SessionFactory) -> Callable[[str, dict[str, Any]], Result]:
    def apply(task_name: str, payload: dict[str, Any]) -> Result:
        return process_event(
            task_name, payload, session_factory=sessions, publish=Publisher(),
            company_name=COMPANY,
        )  # fmt: skip

    return apply


def first_copy_in_flight(
    monkeypatch: pytest.MonkeyPatch, event: type[Event]
) -> tuple[threading.Event, threading.Event]:
    """Make the next event of this type stop in its handler, its transaction open (its inbox
    row written, not committed), until `release` is set; `entered` is set when it got there."""
    handler = HANDLERS[event]
    entered, release = threading.Event(), threading.Event()

    def pause_then_handle(ctx: HandlerContext, event: Any) -> None:
        if not entered.is_set():
            entered.set()
            release.wait(timeout=30)
        handler(ctx, event)

    monkeypatch.setitem(HANDLERS, event, pause_then_handle)
    return entered, release


# Makes the next event of a type stop at some point of its transaction, until `release` is
# set; `entered` is set when it got there: (entered, release).
Hold = Callable[[pytest.MonkeyPatch, type[Event]], tuple[threading.Event, threading.Event]]


def race(
    database: Engine,
    monkeypatch: pytest.MonkeyPatch,
    event: type[Event],
    first: Callable[[], Result],
    copy: Callable[[], Result],
    *,
    hold: Hold = first_copy_in_flight,
    waits: str = "the copy waiting on the first one's inbox row",
) -> tuple[Any, Any]:
    """The first delivery stops inside its transaction (where `hold` stops it); the copy
    (another worker's) starts meanwhile and must wait on a lock the first holds (`waits`
    says which); then the first commits. What each returned or raised."""
    entered, release = hold(monkeypatch, event)
    results: dict[str, Any] = {}
    threads = [in_thread(results, "first", first)]
    assert entered.wait(timeout=30), "the first delivery never reached where it is held"
    threads.append(in_thread(results, "copy", copy))
    wait_until(lambda: lock_waiters(database), waits)
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    return results["first"], results["copy"]


def in_thread(results: dict[str, Any], name: str, work: Callable[[], object]) -> threading.Thread:
    """Run work in a thread of its own, keeping what it returned or raised as results[name]."""

    def keep() -> None:
        try:
            results[name] = work()
        except BaseException as exc:  # what the task would retry or bury, kept for the test
            results[name] = exc

    thread = threading.Thread(target=keep, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("event", "task_name", "payload"),
    [
        # Checked before the first committed, the copy's "client 'C1' already exists" would
        # refuse it once the first had; it waits and sees the first's inbox row instead.
        (AddClient, "clients.add", payloads.client("C1", send_welcome=False)),
        # It would not find the contact the first deleted, and be held until a contact K1
        # is added again.
        (DeleteContact, "contacts.delete", payloads.event("C1", contact_id="K1")),
    ],
)
def test_a_copy_taken_while_the_first_is_in_flight_is_a_duplicate_not_a_refusal(
    database: Engine,
    monkeypatch: pytest.MonkeyPatch,
    event: type[Event],
    task_name: str,
    payload: dict[str, Any],
) -> None:
    sessions = make_session_factory(database)
    apply = applier(sessions)
    if task_name != "clients.add":
        apply("clients.add", payloads.client("C1", send_welcome=False))
        apply("contacts.add", payloads.contact("K1", "C1"))

    first, copy = race(
        database,
        monkeypatch,
        event,
        lambda: apply(task_name, payload),
        lambda: apply(task_name, payload),
    )

    assert first.outcome is Outcome.APPLIED, first.reason
    assert copy.outcome is Outcome.DUPLICATE, copy.reason
    with sessions() as session:
        assert session.scalars(select(RejectedEvent)).all() == []
        assert session.get(ProcessedEvent, payload["event_id"]) is not None


def test_a_copy_with_another_payload_is_still_refused_for_its_reused_id(
    database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply = applier(make_session_factory(database))
    first = payloads.client("C1", send_welcome=False)
    reused = {**first, "firstname": "Augusta"}

    applied, refused = race(
        database,
        monkeypatch,
        AddClient,
        lambda: apply("clients.add", first),
        lambda: apply("clients.add", reused),
    )

    assert applied.outcome is Outcome.APPLIED, applied.reason
    assert refused.outcome is Outcome.REJECTED
    assert refused.reason == (
        f"event id {first['event_id']!r} was already used by a clients.add event with a "
        "different payload; a changed event needs an event id of its own"
    )


def lock_waiters(engine: Engine) -> int:
    """Sessions of this database waiting for a row lock another transaction holds."""
    with engine.connect() as connection:
        return (
            connection.scalar(
                select(func.count())
                .select_from(text("pg_stat_activity"))
                .where(text("datname = current_database()"), text("wait_event_type = 'Lock'"))
            )
            or 0
        )


def test_an_event_on_a_client_waits_for_a_change_in_flight_and_audits_what_it_replaced(
    database: Engine,
) -> None:
    """Without the client's row lock the update read city 'Origin', waited only when it wrote,
    and its audit row said Origin -> Newtown over the other worker's Elsewhere."""
    sessions = make_session_factory(database)
    apply = applier(sessions)
    apply("clients.add", payloads.client("C1", city="Origin", send_welcome=False))
    ours = payloads.event("C1", city="Newtown")
    results: list[Result] = []
    with database.connect() as other:
        # Another worker's change to C1, applied but not committed yet.
        other.execute(update(Client).where(Client.id == "C1").values(city="Elsewhere"))
        thread = threading.Thread(
            target=lambda: results.append(apply("clients.update", ours)), daemon=True
        )
        thread.start()
        wait_until(lambda: lock_waiters(database), "the update waiting for the other change")
        other.commit()
    thread.join(timeout=30)
    assert [r.outcome for r in results] == [Outcome.APPLIED]
    with sessions() as session:
        (row,) = session.scalars(select(AuditEvent).where(AuditEvent.event_id == ours["event_id"]))
        assert row.changes == {"city": ["Elsewhere", "Newtown"]}
        assert session.get(Client, "C1").city == "Newtown"  # type: ignore[union-attr]


def held_before_its_commit(
    monkeypatch: pytest.MonkeyPatch, event: type[Event]
) -> tuple[threading.Event, threading.Event]:
    """Make the next event of this type run its handler (a clients.add: its client inserted,
    the lock of the events waiting for it taken) and then stop, its transaction open, until
    `release` is set; `done` is set when it got there."""
    handler = HANDLERS[event]
    done, release = threading.Event(), threading.Event()

    def handle_then_pause(ctx: HandlerContext, event: Any) -> None:
        handler(ctx, event)
        if not done.is_set():
            done.set()
            release.wait(timeout=30)

    monkeypatch.setitem(HANDLERS, event, handle_then_pause)
    return done, release


def test_a_contact_held_for_its_client_while_the_client_commits_is_retried_not_left_waiting(
    database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The add takes the waiting events' lock in its insert: the contact, finding no client
    yet, waits on that lock to be held, then sees the client and asks for a retry. Without
    the lock it would be held after the add had looked for held events: held for good."""
    sessions = make_session_factory(database)
    apply = applier(sessions)
    contact = payloads.contact("K1", "C1")

    added, held = race(
        database,
        monkeypatch,
        AddClient,
        lambda: apply("clients.add", payloads.client("C1")),
        lambda: apply("contacts.add", contact),
        hold=held_before_its_commit,
        waits="the contact waiting for the add's lock",
    )

    assert isinstance(added, Result)
    assert added.outcome is Outcome.APPLIED
    assert isinstance(held, Transient), held
    with sessions() as session:
        assert session.scalars(select(RejectedEvent)).all() == []
    assert apply("contacts.add", contact).outcome is Outcome.APPLIED


def test_a_client_with_an_email_being_added_waits_for_it_and_is_refused_by_name(
    database: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The second insert waits for the first add's transaction and then skips its row: the
    specific refusal at once, not a unique-constraint error and a second try."""
    apply = applier(make_session_factory(database))
    first = payloads.client("C1", email="same@example.com")
    second = payloads.client("C2", email="Same@EXAMPLE.com")

    with caplog.at_level(logging.INFO, logger="services.dispatch"):
        added, refused = race(
            database,
            monkeypatch,
            AddClient,
            lambda: apply("clients.add", first),
            lambda: apply("clients.add", second),
            hold=held_before_its_commit,
            waits="the second add waiting for the first",
        )

    assert isinstance(added, Result)
    assert added.outcome is Outcome.APPLIED
    assert isinstance(refused, Result)
    assert refused.outcome is Outcome.REJECTED
    email = AddClient.model_validate(second).email
    assert refused.reason == f"Duplicate Email Address: {email} is already used by client 'C1'"
    assert "met a concurrent change" not in caplog.text
