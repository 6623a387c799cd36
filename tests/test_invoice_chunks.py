"""The invoice run split into chunks, in process: how a pass is planned, chunks taken in any
order as workers take them, a chunk delivered twice or giving up, a run given up for lost;
on PostgreSQL, chunks ending at once and two copies of one chunk running at once."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import payloads
import pytest
from conftest import Apply, Publisher
from invoice_helpers import POLICY
from sqlalchemy import Connection, Engine, event, select, update
from sqlalchemy.orm import Session
from test_concurrent_events import applier, in_thread, lock_waiters
from worker_process import wait_until

from models.billing import Invoice, InvoiceNotice
from models.engine import make_engine
from models.ops import ScheduledRun, ScheduledRunChunk
from services.db import SessionFactory, make_session_factory
from services.invoice_run import chunk_work, fan_in
from services.invoice_run.chunk_work import ChunkOutcome, run_chunk
from services.invoice_run.chunks import ChunkKey
from services.invoice_run.fan_in import finish_chunk
from services.invoice_run.handoff import CHUNK_TASK, to_workers
from services.invoice_run.notify import invoices_owed
from services.invoice_run.ranges import IdRange, split_ids
from services.invoice_run.run import abandon_stale_runs, load_run, start_run

ON = date(2026, 3, 1)
# Batches of 3, chunks of 6: seven invoices make two chunks, the first of two batches.
CHUNKED = replace(POLICY, chunk_size=6)


@pytest.fixture
def client(apply: Apply) -> str:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    return "C1"


def add_invoices(apply: Apply, count: int, client_id: str = "C1") -> None:
    for number in range(count):
        apply("invoices.upsert", payloads.invoice(f"I{number}", client_id))


class Workers:
    """Takes the chunk tasks the run published, as workers would, in the order asked."""

    def __init__(self, sessions: SessionFactory, publisher: Publisher) -> None:
        self.sessions, self.publisher = sessions, publisher
        self.taken = 0

    def published(self) -> list[ChunkKey]:
        """Chunk tasks published and not taken yet, in publishing order."""
        keys = [ChunkKey(**kw) for name, kw in self.publisher.sent if name == CHUNK_TASK]
        return keys[self.taken :]

    def take(self, key: ChunkKey, **options: Any) -> ChunkOutcome:
        handoff = to_workers(self.sessions, self.publisher)
        return run_chunk(self.sessions, self.publisher, CHUNKED, key, handoff, **options)

    def start(self, on: date = ON, policy: Any = CHUNKED) -> ScheduledRun:
        return start_run(self.sessions, policy, on, to_workers(self.sessions, self.publisher))

    def take_all_published(self, reverse: bool = False) -> list[ChunkOutcome]:
        keys = self.published()
        self.taken += len(keys)
        return [self.take(key) for key in (reversed(keys) if reverse else keys)]


def database_of(sessions: SessionFactory) -> Connection | Engine:
    """What the sessions run their statements on (a connection, in the rolled-back tests)."""
    bind: Connection | Engine = sessions.kw["bind"]
    return bind


def chunk_rows(session: Session, run_id: int) -> list[ScheduledRunChunk]:
    session.expire_all()
    return list(
        session.scalars(
            select(ScheduledRunChunk)
            .where(ScheduledRunChunk.run_id == run_id)
            .order_by(ScheduledRunChunk.phase, ScheduledRunChunk.seq)
        )
    )


def test_a_pass_is_split_into_ranges_of_the_chunk_size_that_cover_every_id(
    apply: Apply, client: str, db: Session
) -> None:
    add_invoices(apply, 7)
    apply("invoices.upsert", payloads.invoice("H1", status="Paid", balance="0"))  # owes nothing

    def ranges(size: int, on: date = ON) -> list[IdRange]:
        return split_ids(db, Invoice.id, invoices_owed(on, POLICY.schedule), size)

    assert ranges(3) == [IdRange("", "I2"), IdRange("I2", "I5"), IdRange("I5", None)]
    # The last owed id ends no range: no empty chunk when the count is a multiple of the size.
    assert ranges(7) == [IdRange("", None)]
    ends = [f"I{n}" for n in range(6)]
    assert ranges(1) == [
        IdRange(after, through) for after, through in zip(["", *ends], [*ends, None], strict=True)
    ]
    assert ranges(3, on=date(2026, 2, 1)) == []  # dated after that day: nothing owed yet


def test_chunks_taken_in_any_order_end_the_run_once_with_exact_counts(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    for number in range(4):
        apply("services.upsert", payloads.service(f"S{number}", next_due_date="2026-03-10"))
    add_invoices(apply, 9)
    workers = Workers(session_factory, publisher)

    run = workers.start()

    # Generation first (4 services, chunks of 6: one); no notice chunk before it has ended,
    # since the invoices it makes owe their Invoice Created too.
    assert [(k.phase, k.seq) for k in workers.published()] == [("generate", 1)]
    assert (run.status, run.counts["chunks"]) == ("running", {"planned": 1, "done": 0, "failed": 0})
    (generated,) = workers.take_all_published()
    assert (generated.closed_run, generated.planned) == (False, 3)  # 13 invoices owe a notice
    assert [(k.phase, k.seq) for k in workers.published()] == [("notify", n) for n in (1, 2, 3)]

    ended = workers.take_all_published(reverse=True)

    assert [outcome.closed_run for outcome in ended] == [False, False, True]
    finished = load_run(session_factory, run.id)
    assert (finished.status, finished.error) == ("succeeded", None)
    assert finished.finished_at is not None
    counts = finished.counts
    assert counts["generated"] == 4
    assert counts["notices"]["invoice_created"] == 13
    assert counts["emails"] == len(publisher.message_ids) == 13
    assert counts["chunks"] == {"planned": 4, "done": 4, "failed": 0}
    assert counts["batches"] == {"generate": 2, "notify": 5}  # 4 = 3 + 1; 6 + 6 + 1 = 2 + 2 + 1
    assert set(db.scalars(select(InvoiceNotice.run_id))) == {run.id}
    assert len(db.scalars(select(InvoiceNotice)).all()) == 13


def test_a_chunk_delivered_again_counts_only_what_it_did_and_ends_once(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    add_invoices(apply, 7)
    workers = Workers(session_factory, publisher)
    run = workers.start()
    first, second = workers.published()

    def worker_lost(phase: str, examined: int, counts: dict[str, Any]) -> None:
        raise RuntimeError("worker lost")

    # Its first batch committed, then its worker died: the task is delivered again.
    with pytest.raises(RuntimeError, match="worker lost"):
        workers.take(first, progress=worker_lost)
    crashed = chunk_rows(db, run.id)[0]
    assert (crashed.status, crashed.counts["notices"]["invoice_created"]) == ("pending", 3)
    again = workers.take(first)
    third_time = workers.take(first)  # delivered once more after it ended: nothing to do
    assert (again.ran, again.closed_run, third_time.ran) == (True, False, False)
    assert chunk_rows(db, run.id)[0].counts["notices"]["invoice_created"] == 6
    assert chunk_rows(db, run.id)[0].counts["batches"]["notify"] == 2

    assert workers.take(second).closed_run
    closed = load_run(session_factory, run.id)
    # Its end told again (a retried task): summed again, the same; closed already.
    handoff = to_workers(session_factory, publisher)
    repeated = finish_chunk(session_factory, second, CHUNKED, handoff)
    assert (repeated.closed, repeated.planned) == (False, 0)
    after = load_run(session_factory, run.id)
    assert after.counts == closed.counts
    assert after.finished_at == closed.finished_at
    assert closed.counts["notices"]["invoice_created"] == 7
    assert closed.counts["emails"] == len(publisher.message_ids) == 7


def test_a_chunk_that_gives_up_fails_the_run_with_its_reason_when_the_last_chunk_ends(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    add_invoices(apply, 7)
    workers = Workers(session_factory, publisher)
    run = workers.start()
    first, second = workers.published()
    handoff = to_workers(session_factory, publisher)
    reason = "gave up after 4 attempts: OperationalError: the database went away"

    gave_up = finish_chunk(session_factory, first, CHUNKED, handoff, error=reason)

    # The other chunk is still to run: the run is not over, but says what went wrong.
    meanwhile = load_run(session_factory, run.id)
    assert (gave_up.closed, meanwhile.status) == (False, "running")
    assert meanwhile.error == f"chunk notify 1 of run {run.id}: {reason}"
    assert workers.take(second).closed_run
    failed = load_run(session_factory, run.id)
    assert (failed.status, failed.error) == ("failed", meanwhile.error)
    assert failed.counts["notices"]["invoice_created"] == 1  # I6, the second chunk's
    assert failed.counts["chunks"] == {"planned": 2, "done": 1, "failed": 1}

    # Replayed from its dead letter once the cause is fixed: its work is done and counted;
    # the run keeps the end it had.
    replayed = workers.take(first)
    assert (replayed.ran, replayed.closed_run) == (True, False)
    final = load_run(session_factory, run.id)
    assert (final.status, final.finished_at) == ("failed", failed.finished_at)
    assert final.counts["notices"]["invoice_created"] == 7
    assert final.counts["chunks"] == {"planned": 2, "done": 2, "failed": 0}
    assert len(publisher.message_ids) == 7


def test_a_run_is_abandoned_only_when_no_chunk_moved_and_goes_on_if_one_ends_after_all(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    add_invoices(apply, 7)
    workers = Workers(session_factory, publisher)
    run = workers.start()
    first, second = workers.published()
    workers.take(first)
    later = load_run(session_factory, run.id).heartbeat_at
    assert later is not None
    # A batch of the second chunk moves its heartbeat 10 minutes after the run's last one.
    db.execute(
        update(ScheduledRunChunk)
        .where(*second.where())
        .values(heartbeat_at=later + timedelta(minutes=10))
    )
    db.commit()

    assert abandon_stale_runs(session_factory, now=later + timedelta(minutes=20)) == 0
    assert abandon_stale_runs(session_factory, now=later + timedelta(minutes=30)) == 1
    abandoned = load_run(session_factory, run.id)
    assert abandoned.status == "abandoned"
    assert "its worker was lost" in (abandoned.error or "")
    assert abandoned.counts["notices"]["invoice_created"] == 6  # what the first chunk did

    # The second chunk was only waiting behind a long queue: it ends, and ends the run.
    assert workers.take(second).closed_run
    ended = load_run(session_factory, run.id)
    assert (ended.status, ended.error) == ("succeeded", None)
    assert ended.counts["notices"]["invoice_created"] == 7


# --- on PostgreSQL, with real commits on separate connections --------------------------------


@pytest.fixture
def database(new_postgres_database: Callable[[], str]) -> Iterator[Engine]:
    """A fresh PostgreSQL database of its own: these tests commit for real, from two threads
    at once (the savepoint-wrapped session_factory shares one connection)."""
    engine = make_engine(new_postgres_database())
    yield engine
    engine.dispose()


def pause_first_call(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str
) -> tuple[threading.Event, threading.Event]:
    """The first call of module.name runs, then waits (its transaction open) until `release`
    is set; `entered` is set when it got there. Later calls go straight through."""
    real = getattr(module, name)
    entered, release = threading.Event(), threading.Event()

    def then_wait(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        if not entered.is_set():
            entered.set()
            release.wait(timeout=30)
        return result

    monkeypatch.setattr(module, name, then_wait)
    return entered, release


def test_the_last_two_chunks_ending_at_once_close_the_run_exactly_once(
    database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first to end has the run locked while it adds its counts and sees the other still
    pending; the other waits for that lock, then sees both ended and closes the run. Without
    the lock both would read before either committed, and the run would never close."""
    sessions = make_session_factory(database)
    apply = applier(sessions)
    apply("clients.add", payloads.client("C1", send_welcome=False))
    for number in range(12):
        apply("invoices.upsert", payloads.invoice(f"I{number:02d}"))
    workers = Workers(sessions, Publisher())
    run = workers.start()
    first, second = workers.published()
    entered, release = pause_first_call(monkeypatch, fan_in, "settle")
    results: dict[str, Any] = {}

    threads = [in_thread(results, "first", lambda: workers.take(first))]
    assert entered.wait(timeout=30), "the first chunk never reached its end"
    threads.append(in_thread(results, "second", lambda: workers.take(second)))
    wait_until(lambda: lock_waiters(database), "the second chunk's end waiting on the run")
    release.set()
    for thread in threads:
        thread.join(timeout=30)

    assert isinstance(results["first"], ChunkOutcome), results
    assert isinstance(results["second"], ChunkOutcome), results
    assert (results["first"].closed_run, results["second"].closed_run) == (False, True)
    closed = load_run(sessions, run.id)
    assert closed.status == "succeeded"
    assert closed.counts["notices"]["invoice_created"] == 12
    assert closed.counts["chunks"] == {"planned": 2, "done": 2, "failed": 0}


def test_two_copies_of_a_chunk_at_once_send_each_notice_once_and_count_it_once(
    database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One copy holds its first batch's invoices while the other runs the whole chunk: the
    other skips them (SKIP LOCKED), ends the chunk and closes the run; the first commits its
    batch after the close, and its end adds it to the run's counts."""
    sessions = make_session_factory(database)
    apply = applier(sessions)
    apply("clients.add", payloads.client("C1", send_welcome=False))
    for number in range(6):
        apply("invoices.upsert", payloads.invoice(f"I{number}"))
    publisher = Publisher()
    workers = Workers(sessions, publisher)
    run = workers.start()
    (chunk,) = workers.published()
    entered, release = pause_first_call(monkeypatch, chunk_work, "notify_batch")
    results: dict[str, Any] = {}

    held = in_thread(results, "held", lambda: workers.take(chunk))
    assert entered.wait(timeout=30), "the first copy never reached its first batch"
    in_thread(results, "other", lambda: workers.take(chunk)).join(timeout=30)
    between = load_run(sessions, run.id)
    release.set()
    held.join(timeout=30)

    assert isinstance(results["held"], ChunkOutcome), results
    assert isinstance(results["other"], ChunkOutcome), results
    assert (results["other"].closed_run, results["held"].closed_run) == (True, False)
    assert (between.status, between.counts["notices"]["invoice_created"]) == ("succeeded", 3)
    final = load_run(sessions, run.id)
    assert (final.status, final.finished_at) == ("succeeded", between.finished_at)
    assert final.counts["notices"]["invoice_created"] == 6
    assert final.counts["batches"]["notify"] == 2
    with sessions() as session:
        assert sorted(session.scalars(select(InvoiceNotice.invoice_id))) == [
            f"I{n}" for n in range(6)
        ]
    assert sorted(publisher.message_ids) == sorted(set(publisher.message_ids))
    assert len(publisher.message_ids) == 6


def test_many_small_chunks_each_add_their_own_counts_to_the_run_exactly(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    """Forty chunks of one invoice, taken in a shuffled order, some delivered twice: after
    each end the run has exactly what the ended chunks did (each end adds its own counts to
    the run's instead of summing every chunk again), and each end reads no other chunk's row
    unless it ends a pass."""
    add_invoices(apply, 40)
    workers = Workers(session_factory, publisher)
    run = workers.start(policy=replace(CHUNKED, chunk_size=1))
    keys = workers.published()
    assert len(keys) == 40
    order = keys[:]
    random.Random(12).shuffle(order)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    for ended, key in enumerate(order, start=1):
        statements.clear()
        event.listen(database_of(session_factory), "before_cursor_execute", seen)
        try:
            outcome = run_chunk(
                session_factory, publisher, replace(CHUNKED, chunk_size=1), key,
                to_workers(session_factory, publisher),
            )  # fmt: skip
        finally:
            event.remove(database_of(session_factory), "before_cursor_execute", seen)
        if ended % 7 == 0:  # delivered again once it ended: nothing to do, nothing added
            again = workers.take(key)
            assert (again.ran, again.closed_run) == (False, False)
        counts = load_run(session_factory, run.id).counts
        assert counts["notices"]["invoice_created"] == ended
        assert counts["emails"] == ended
        assert counts["batches"]["notify"] == ended
        assert counts["chunks"] == {"planned": 40, "done": ended, "failed": 0}
        assert outcome.closed_run == (ended == 40)
        if ended < 40:
            # Only its own chunk's row (by its key) and the run's: no read of the others.
            on_chunks = [s for s in statements if "scheduled_run_chunks" in s]
            assert on_chunks, "no statement on the chunk's row seen"
            whole_run = [s for s in on_chunks if "scheduled_run_chunks.seq = " not in s]
            assert whole_run == [], whole_run

    finished = load_run(session_factory, run.id)
    assert (finished.status, finished.error) == ("succeeded", None)
    assert finished.counts["notices"]["invoice_created"] == 40
    assert len(publisher.message_ids) == 40
    assert sorted(c.status for c in chunk_rows(db, run.id)) == ["done"] * 40
    assert all(c.unfolded == {} for c in chunk_rows(db, run.id))
