"""Two workers applying events on the same records at the same moment, made deterministic in
one process: the other worker's transaction runs, on its own connection, at the point where a
race puts it (tests/test_many_workers.py races real workers and found both of these).

Real databases with real commits (the savepoint-wrapped `session_factory` fixture shares one
connection, so it cannot show one transaction committing under another).
"""

from __future__ import annotations

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


def other_copy_first(
    monkeypatch: pytest.MonkeyPatch, event: type[Event], run_copy: Callable[[], Result]
) -> list[Result]:
    """Make the next event of this type meet another worker's copy: right after its inbox
    check found nothing, and before its handler's checks, the copy runs from start to commit
    (on its own connection). Returns the list the copy's result lands in."""
    handler = HANDLERS[event]
    copies: list[Result] = []
    entered: list[bool] = []

    def copy_then_handle(ctx: HandlerContext, event: Any) -> None:
        entered.append(True)
        if len(entered) == 1:  # ours; the copy's own call only runs the handler
            copies.append(run_copy())
        handler(ctx, event)

    monkeypatch.setitem(HANDLERS, event, copy_then_handle)
    return copies


@pytest.mark.parametrize(
    ("event", "task_name", "payload"),
    [
        # The handler's "client 'C1' already exists" would refuse it.
        (AddClient, "clients.add", payloads.client("C1", send_welcome=False)),
        # The handler would not find the contact the other copy deleted, and hold the event
        # until a contact K1 is added again.
        (DeleteContact, "contacts.delete", payloads.event("C1", contact_id="K1")),
    ],
)
def test_a_copy_applied_by_another_worker_meanwhile_is_a_duplicate_not_a_refusal(
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
    copies = other_copy_first(monkeypatch, event, lambda: apply(task_name, payload))

    ours = apply(task_name, payload)

    assert [c.outcome for c in copies] == [Outcome.APPLIED]
    assert ours.outcome is Outcome.DUPLICATE, ours.reason
    with sessions() as session:
        assert session.scalars(select(RejectedEvent)).all() == []
        assert session.get(ProcessedEvent, payload["event_id"]) is not None


def test_a_copy_with_another_payload_is_still_refused_for_its_reused_id(
    database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inbox look after a refusal tells a copy from a publisher reusing an event id."""
    apply = applier(make_session_factory(database))
    first = payloads.client("C1", send_welcome=False)
    reused = {**first, "firstname": "Augusta"}
    copies = other_copy_first(monkeypatch, AddClient, lambda: apply("clients.add", first))

    ours = apply("clients.add", reused)

    assert [c.outcome for c in copies] == [Outcome.APPLIED]
    assert ours.outcome is Outcome.REJECTED
    assert ours.reason == (
        f"event id {first['event_id']!r} was already used by a clients.add event with a "
        "different payload; a changed event needs an event id of its own"
    )


def lock_waiters(engine: Engine) -> int:
    """Sessions of this database waiting for a row lock another transaction holds."""
    with engine.connect() as connection:
        return connection.scalar(
            select(func.count())
            .select_from(text("pg_stat_activity"))
            .where(
                text("datname = current_database()"), text("wait_event_type = 'Lock'")
            )
        ) or 0


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
