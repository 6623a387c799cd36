"""One invoice run: a ScheduledRun row, its passes split into chunks, and its end.

`start_run` records the run and plans its first pass; the chunks go to a Handoff, which on
the workers makes each a task any worker takes (handoff.to_workers, the invoices.run task),
so adding workers adds speed. `run_invoices` runs every chunk in this process instead
(`clientflow invoices run`, the tests), with the same chunks, counts and end.

Each batch of a chunk is its own transaction, so a run whose worker crashes keeps what its
finished batches did (and their counts) and the chunk's next delivery goes on from there: both
passes select only work still owed. The session of each batch is closed with it, so memory
does not grow with the data.
"""

from __future__ import annotations

import logging
import traceback
from datetime import date, datetime, timedelta

from sqlalchemy import exists, func, select

from models.base import utcnow
from models.ops import ScheduledRun, ScheduledRunChunk
from services.db import SessionFactory, UnitOfWork
from services.invoice_run.chunk_work import Progress, run_chunk
from services.invoice_run.chunks import PENDING, ChunkKey
from services.invoice_run.fan_in import (
    ABANDONED,
    RUNNING,
    fail_run,
    lock_run,
    new_run_counts,
    settle,
    take_all_unfolded,
)
from services.invoice_run.handoff import Handoff, kept_here
from services.invoice_run.policy import RunPolicy
from services.invoice_run.totals import add_counts
from services.outbox import Publish
from services.redaction import redact_addresses

log = logging.getLogger(__name__)

RUN_NAME = "invoices.run"
# A batch commits within seconds, and each commit moves its chunk's heartbeat (each chunk's
# end, the run's); a `running` run silent for this long lost its workers (kill -9, OOM).
STALE_AFTER = timedelta(minutes=15)


def start_run(
    session_factory: SessionFactory, policy: RunPolicy, on: date, handoff: Handoff
) -> ScheduledRun:
    """Record a run for day `on` and plan its first pass, its chunks handed to `handoff`.

    A run with nothing to do ends here (succeeded). If planning fails the run is recorded
    as failed, with the error, and the error raised.
    """
    run_id = _start(session_factory, on)
    try:
        with UnitOfWork(session_factory) as uow:
            run = lock_run(uow.session, run_id)
            if run is None:
                raise LookupError(f"scheduled run {run_id} vanished as it started")
            settle(uow, run, policy, handoff)
            uow.commit()
    except BaseException as exc:
        _record_failure(session_factory, run_id, exc)
        raise
    return load_run(session_factory, run_id)


def run_invoices(
    session_factory: SessionFactory,
    publish: Publish,
    policy: RunPolicy,
    on: date,
    progress: Progress | None = None,
) -> ScheduledRun:
    """Run for day `on` in this process, chunk after chunk; returns the finished ScheduledRun
    (succeeded, or failed and raises)."""
    run = start_run(session_factory, policy, on, kept_here)
    try:
        while (key := _next_pending(session_factory, run.id)) is not None:
            run_chunk(session_factory, publish, policy, key, kept_here, progress)
    except BaseException as exc:
        _record_failure(session_factory, run.id, exc)
        raise
    return load_run(session_factory, run.id)


def load_run(session_factory: SessionFactory, run_id: int) -> ScheduledRun:
    with session_factory() as session:
        run = session.get(ScheduledRun, run_id)
        if run is None:
            raise LookupError(f"no scheduled run {run_id}")
        return run


def _next_pending(session_factory: SessionFactory, run_id: int) -> ChunkKey | None:
    with session_factory() as session:
        chunk = session.scalars(
            select(ScheduledRunChunk)
            .where(ScheduledRunChunk.run_id == run_id, ScheduledRunChunk.status == PENDING)
            .order_by(ScheduledRunChunk.phase, ScheduledRunChunk.seq)
            .limit(1)
        ).first()
        return None if chunk is None else ChunkKey.of(chunk)


def _start(session_factory: SessionFactory, on: date) -> int:
    abandon_stale_runs(session_factory)
    with session_factory() as session:
        run = ScheduledRun(
            name=RUN_NAME,
            run_date=on,
            status=RUNNING,
            counts=new_run_counts(),
            heartbeat_at=utcnow(),
        )
        session.add(run)
        session.commit()
        return run.id


def _record_failure(session_factory: SessionFactory, run_id: int, exc: BaseException) -> None:
    try:
        error = redact_addresses("".join(traceback.format_exception(exc)))
        fail_run(session_factory, run_id, error)
    except Exception:  # often the same outage; the original error is the one to raise
        log.exception("could not record invoice run %s as failed", run_id)


def abandon_stale_runs(session_factory: SessionFactory, now: datetime | None = None) -> int:
    """Mark `running` runs whose heartbeats stopped STALE_AFTER ago as abandoned.

    Without this a run whose workers died stays `running` in `clientflow ops status` for good.
    What it did is kept (what its pending chunks' batches did is added to its counts); the
    notices it did not reach are sent by a later run, since each notice is claimed by a unique
    row. Should one of its chunks still end (it was only waiting in a long queue), the run goes
    on (fan_in.py).
    """
    cutoff = (now or utcnow()) - STALE_AFTER
    chunk_moved = exists().where(
        ScheduledRunChunk.run_id == ScheduledRun.id, ScheduledRunChunk.heartbeat_at >= cutoff
    )
    stale = (
        ScheduledRun.status == RUNNING,
        func.coalesce(ScheduledRun.heartbeat_at, ScheduledRun.started_at) < cutoff,
        ~chunk_moved,
    )
    with session_factory() as session:
        candidates = list(session.scalars(select(ScheduledRun.id).where(*stale)))
    abandoned = 0
    for run_id in candidates:
        with UnitOfWork(session_factory) as uow:
            # The chunks' rows before the run's, as a chunk's end takes them.
            owed = take_all_unfolded(uow.session, run_id)
            # Asked again under the lock: a chunk may have ended since.
            run = uow.session.scalars(
                select(ScheduledRun)
                .where(ScheduledRun.id == run_id, *stale)
                .with_for_update(key_share=True)
            ).first()
            if run is None:
                continue  # rolled back: the chunks keep what they owe
            run.counts = add_counts(run.counts, owed)
            run.status, run.finished_at = ABANDONED, now or utcnow()
            run.error = f"no progress for over {STALE_AFTER}: its worker was lost"
            uow.commit()
            abandoned += 1
    return abandoned
