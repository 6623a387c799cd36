"""Where a run's chunks meet: each one that ends adds its counts to the run's and, if it was
the last of its pass, plans the next pass or closes the run.

Every step holds the run's row lock (SELECT ... FOR NO KEY UPDATE) from adding to the run to
the commit, so two chunks ending at once take turns: the first sees the other still pending
and leaves the run open, the second sees both ended and closes it. A run closes once: only an
open run is closed, and the close commits before the next turn reads it.

A chunk's end adds to the run only what its batches added since its last end (the chunk's
`unfolded` counts, emptied as they are moved, under the chunk's row lock), and counts its own
change of state (planned, done, failed) in the run's tally: the run row is read and written
once per chunk end, whatever the number of chunks, and never summed again from them (500
chunks for 1,000,000 invoices made that quadratic). Doing an end again (a chunk task
delivered twice, a retry) adds nothing, and a copy of a chunk that commits a batch late puts
it in when it ends, even after the close.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.base import utcnow
from models.ops import ScheduledRun, ScheduledRunChunk
from services.db import SessionFactory, UnitOfWork
from services.invoice_run.chunks import DONE, FAILED, PENDING, ChunkKey
from services.invoice_run.handoff import Handoff
from services.invoice_run.plan import plan_pass
from services.invoice_run.policy import RunPolicy
from services.invoice_run.totals import PASSES, add_counts, new_counts

log = logging.getLogger(__name__)

RUNNING, SUCCEEDED, FAILED_RUN, ABANDONED = "running", "succeeded", "failed", "abandoned"
# An abandoned run is open still: it was given up for lost when nothing moved for a while,
# and should one of its chunks end after all (it waited in a long queue), it goes on.
OPEN = (RUNNING, ABANDONED)


@dataclass(frozen=True)
class Settled:
    closed: bool  # this turn ended the run
    planned: int  # chunks of the next pass this turn planned


def lock_run(session: Session, run_id: int) -> ScheduledRun | None:
    """The run's row, locked to the commit against other turns (and abandon_stale_runs).

    FOR NO KEY UPDATE, not FOR UPDATE: every batch's notice rows point at the run, and their
    foreign key check takes a KEY SHARE lock on it that FOR UPDATE would wait for. A chunk
    ending while a copy of it commits a batch then deadlocked: this turn held the chunk's
    row and waited for the run, the batch held the run's key and waited for the chunk's row
    (test_two_copies_of_a_chunk_at_once_...).
    """
    return session.scalars(
        select(ScheduledRun).where(ScheduledRun.id == run_id).with_for_update(key_share=True)
    ).first()


def settle(uow: UnitOfWork, run: ScheduledRun, policy: RunPolicy, handoff: Handoff) -> Settled:
    """With the run locked, and its counts up to date: plan its next pass once no chunk is
    pending, close it once no pass is left. Planned chunks go to `handoff`."""
    session = uow.session
    planned: list[ScheduledRunChunk] = []
    if run.status in OPEN and not _pending(run):
        # Read only when a pass has ended: once per pass, not once per chunk.
        for phase in _passes_to_plan(session, run.id):
            planned = plan_pass(session, run.id, phase, policy, _day(run))
            if planned:
                handoff(uow, planned)
                run.counts = _tallied(run.counts, planned=len(planned))
                break
    run.heartbeat_at = utcnow()
    if run.status not in OPEN:
        return Settled(closed=False, planned=0)  # closed before: its counts are added to
    failed = run.counts["chunks"]["failed"]
    run.error = _failures(session, run.id) if failed else None
    if _pending(run):
        if run.status == ABANDONED:
            log.warning("invoice run %s was given up for lost, but its chunks go on", run.id)
            run.status, run.finished_at = RUNNING, None
        return Settled(closed=False, planned=len(planned))
    run.status = FAILED_RUN if failed else SUCCEEDED
    run.finished_at = utcnow()
    return Settled(closed=True, planned=0)


def finish_chunk(
    session_factory: SessionFactory,
    key: ChunkKey,
    policy: RunPolicy,
    handoff: Handoff,
    error: str | None = None,
) -> Settled:
    """Record the chunk as done (or failed, with `error`), add what it did to its run, then
    settle the run.

    A chunk ends once: done from pending (or from failed, when a dead letter is replayed),
    failed only from pending, so a failure reported by one copy does not undo another
    copy's finished work.

    The chunk's row is locked before the run's, as a batch does (chunk_work._batch_done:
    its notice rows take only a key-share lock on the run, which FOR NO KEY UPDATE lets by).
    """
    with UnitOfWork(session_factory) as uow:
        session = uow.session
        chunk = session.scalars(
            select(ScheduledRunChunk).where(*key.where()).with_for_update()
        ).first()
        owed: dict[str, Any] = {}
        change: tuple[str, str] | None = None
        if chunk is not None:
            change = _end(chunk, error)
            owed = _take_unfolded(chunk)
        run = lock_run(session, key.run_id)
        if run is None:
            return Settled(closed=False, planned=0)
        run.counts = _tallied(add_counts(run.counts, owed), change=change)
        settled = settle(uow, run, policy, handoff)
        uow.commit()
    return settled


def fail_run(session_factory: SessionFactory, run_id: int, error: str) -> None:
    """End an open run as failed now, whatever chunks are left (its planner or the process
    running all its chunks stopped): what its chunks did stays in its counts."""
    with UnitOfWork(session_factory) as uow:
        owed = take_all_unfolded(uow.session, run_id)
        run = lock_run(uow.session, run_id)
        if run is None or run.status not in OPEN:
            return
        run.counts = add_counts(run.counts, owed)
        run.status, run.finished_at, run.error = FAILED_RUN, utcnow(), error
        uow.commit()


def take_all_unfolded(session: Session, run_id: int) -> dict[str, Any]:
    """What every chunk of the run did that the run's counts do not have yet (the batches of
    chunks still pending), emptied from the chunks: for a run ended before its chunks were.
    The chunks are locked first, in key order, as a chunk's end locks its own before the run.
    A whole run's chunks, once, when it ends early: never per chunk."""
    chunks = session.scalars(
        select(ScheduledRunChunk)
        .where(ScheduledRunChunk.run_id == run_id)
        .order_by(ScheduledRunChunk.phase, ScheduledRunChunk.seq)
        .with_for_update()
    ).all()
    owed: dict[str, Any] = {}
    for chunk in chunks:
        owed = add_counts(owed, _take_unfolded(chunk))
    return owed


def new_run_counts() -> dict[str, Any]:
    """A new run's counts: nothing done, no chunk planned."""
    return {**new_counts(), "chunks": {"planned": 0, "done": 0, "failed": 0}}


def _end(chunk: ScheduledRunChunk, error: str | None) -> tuple[str, str] | None:
    """Move the chunk to its end; the (from, to) states, or None if it stays as it was."""
    before = chunk.status
    if error is None and before in (PENDING, FAILED):
        chunk.status, chunk.error, chunk.finished_at = DONE, None, utcnow()
    elif error is not None and before == PENDING:
        chunk.status, chunk.error, chunk.finished_at = FAILED, error, utcnow()
    else:
        return None
    return before, chunk.status


def _take_unfolded(chunk: ScheduledRunChunk) -> dict[str, Any]:
    owed = dict(chunk.unfolded or {})
    if owed:
        chunk.unfolded = {}
    return owed


def _tallied(
    counts: dict[str, Any], planned: int = 0, change: tuple[str, str] | None = None
) -> dict[str, Any]:
    """`counts` with its chunk tally moved on: chunks planned, or one chunk's change of state
    (a fresh structure: the JSON column compares by value to decide what to write)."""
    tally = dict(counts.get("chunks") or {"planned": 0, "done": 0, "failed": 0})
    tally["planned"] += planned
    if change is not None:
        before, after = change
        if before != PENDING:
            tally[before] -= 1
        tally[after] += 1
    return {**counts, "chunks": tally}


def _pending(run: ScheduledRun) -> bool:
    tally = run.counts["chunks"]
    return bool(tally["planned"] - tally["done"] - tally["failed"])


def _passes_to_plan(session: Session, run_id: int) -> tuple[str, ...]:
    """The passes after the last one that has chunks; all of them before any has. (A pass
    with nothing to do has no chunks: it is planned in the same turn as the pass after it.)"""
    reached = [
        PASSES.index(phase)
        for phase in session.scalars(
            select(ScheduledRunChunk.phase).where(ScheduledRunChunk.run_id == run_id).distinct()
        )
    ]
    return PASSES[max(reached) + 1 :] if reached else PASSES


def _failures(session: Session, run_id: int) -> str | None:
    failed = session.scalars(
        select(ScheduledRunChunk)
        .where(ScheduledRunChunk.run_id == run_id, ScheduledRunChunk.status == FAILED)
        .order_by(ScheduledRunChunk.phase, ScheduledRunChunk.seq)
    ).all()
    if not failed:
        return None
    return "\n".join(f"{ChunkKey.of(chunk)}: {chunk.error}" for chunk in failed)


def _day(run: ScheduledRun) -> date:
    if run.run_date is None:
        raise ValueError(f"scheduled run {run.id} has no day to run for")
    return run.run_date
