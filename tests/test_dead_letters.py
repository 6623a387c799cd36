"""Dead letters: tasks that exhausted their retries or hit a bug, kept, listed and replayed."""

from __future__ import annotations

import subprocess
import sys

import payloads
import psycopg
import pytest
from conftest import Apply, Publisher
from servers import environ_without_settings
from smtp_sink import SmtpSink
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from worker_process import WorkerProcess, wait_until, worker_fixture

from models import DeadLetter, ProcessedEvent
from services.db import SessionFactory
from services.dead_letters import list_dead_letters, purge, record_dead_letter, replay
from services.dispatch import Outcome


def _letter(session_factory: SessionFactory, payload: dict[str, object]) -> DeadLetter:
    return record_dead_letter(
        session_factory,
        task_name="clients.add",
        task_id="t-1",
        kwargs=payload,
        errors=[{"at": "2026-01-01T00:00:00+00:00", "error": "OperationalError: gone"}],
        reason="gave up after 1 attempts: OperationalError: gone",
    )


def test_replay_publishes_again_and_twice_is_harmless(
    session_factory: SessionFactory, publisher: Publisher, apply: Apply
) -> None:
    payload = payloads.client("C1")
    letter = _letter(session_factory, payload)

    assert replay(session_factory, publisher, [letter.id]) == [letter.id]
    assert replay(session_factory, publisher, [letter.id]) == [letter.id]

    assert publisher.sent == [("clients.add", payload), ("clients.add", payload)]
    outcomes = [apply(name, kwargs).outcome for name, kwargs in list(publisher.sent)]
    assert outcomes == [Outcome.APPLIED, Outcome.DUPLICATE]
    (listed,) = list_dead_letters(session_factory)
    assert listed.replay_count == 2


def test_replay_all_takes_only_letters_not_yet_replayed(
    session_factory: SessionFactory, publisher: Publisher
) -> None:
    first = _letter(session_factory, payloads.client("C1"))
    replay(session_factory, publisher, [first.id])
    second = _letter(session_factory, payloads.client("C2"))
    assert replay(session_factory, publisher) == [second.id]


def test_purge_all_or_only_replayed(session_factory: SessionFactory, publisher: Publisher) -> None:
    replayed = _letter(session_factory, payloads.client("C1"))
    _letter(session_factory, payloads.client("C2"))
    replay(session_factory, publisher, [replayed.id])
    assert purge(session_factory, replayed_only=True) == 1
    assert purge(session_factory) == 1
    assert list_dead_letters(session_factory) == []


# --- through a real worker -------------------------------------------------------------------

LOCK_TIMEOUT = "?options=-c%20lock_timeout%3D300"


# A worker that gives up after 2 retries and waits at most 0.3 s for a table lock.
impatient_worker = worker_fixture(
    name="impatient_worker",
    database_url_suffix=LOCK_TIMEOUT,
    extra_settings={"event_max_retries": "2"},
)


def _cli(worker: WorkerProcess, *args: str) -> str:
    env = environ_without_settings()
    env.update(
        CLIENTFLOW_DATABASE_URL=worker.database_url,
        CLIENTFLOW_BROKER_URL=worker.broker_url,
        COLUMNS="250",
    )
    done = subprocess.run(
        [sys.executable, "-c", "from workers.cli import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.mark.worker
def test_exhausted_retries_land_in_the_dlq_and_replay_applies_once(
    impatient_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    worker = impatient_worker
    libpq_url = worker.database_url.replace("+psycopg", "").removesuffix(LOCK_TIMEOUT)
    payload = payloads.client("C1")
    with psycopg.connect(libpq_url) as blocker:
        # Every attempt meets a lock it cannot get: a transient error, retried, then buried.
        blocker.execute("LOCK TABLE clients IN ACCESS EXCLUSIVE MODE")
        worker.publish("clients.add", payload)
        (letter,) = worker.wait_for_db(
            lambda s: list(s.scalars(select(DeadLetter))), "a dead letter"
        )
    assert letter.task_name == "clients.add"
    assert letter.kwargs == payload
    assert len(letter.errors) == 3
    assert all("LockNotAvailable" in e["error"] for e in letter.errors)
    assert letter.reason.startswith("gave up after 3 attempts: OperationalError")
    assert "gave up after 3 attempts" in _cli(worker, "dlq", "list")
    assert '"task_name": "clients.add"' in _cli(worker, "dlq", "show", str(letter.id))

    assert "replayed 1" in _cli(worker, "dlq", "replay", str(letter.id))
    worker.wait_applied(payload["event_id"])
    assert "replayed 1" in _cli(worker, "dlq", "replay", str(letter.id))  # once more
    assert "replayed 0" in _cli(worker, "dlq", "replay", "--all")  # nothing left unreplayed

    smtp.wait_for(1)
    worker.wait_idle()
    assert len(smtp.messages) == 1
    with worker.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ProcessedEvent)) == 1


@pytest.mark.worker
def test_malformed_task_arguments_are_buried_at_once_and_the_worker_goes_on(
    impatient_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    worker = impatient_worker
    worker.publish("emails.deliver", {"message_ids": 5})
    worker.publish("invoices.run", {"run_date": "the first of March"})
    payload = payloads.client("C1")
    worker.publish("clients.add", payload)

    def letters(session: Session) -> dict[str, DeadLetter]:
        found = {letter.task_name: letter for letter in session.scalars(select(DeadLetter))}
        return found if len(found) == 2 else {}

    buried = worker.wait_for_db(letters, "two dead letters")
    assert buried["emails.deliver"].reason == (
        "invalid arguments, not retried: message_ids: Input should be a valid list"
    )
    assert buried["invoices.run"].reason.startswith(
        "invalid arguments, not retried: run_date: Input should be a valid date"
    )
    assert buried["invoices.run"].kwargs == {"run_date": "the first of March"}
    assert all(len(letter.errors) == 1 for letter in buried.values())
    worker.wait_applied(payload["event_id"])
    wait_until(lambda: len(smtp.messages) == 1, "the welcome email")
    assert worker.alive
