"""Where a run's chunks meet: each one that ends adds the run up again and, if it was the last
of its pass, plans the next pass or closes the run.

Every step holds the run's row lock (SELECT ... FOR UPDATE) from reading the chunks to the
commit, so two chunks ending at once take turns: the first sees the other still pending and
leaves the run open, the second sees both ended and closes it. A run closes once: only an open
run is closed, and the close commits before the next turn reads it. The counts are summed from
the chunk rows each time rather than added to, so doing it again (a chunk task delivered
twice, a retry) changes nothing, and a copy of a chunk that commits a batch late puts it in
when it ends, even after the close.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.base import utcnow
from models.ops import ScheduledRun, ScheduledRunChunk
from services.db import SessionFactory, UnitOfWork
from services.invoice_run.chunks import DONE, FAILED, PENDING, ChunkKey, chunks_of
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
    """With the run locked: plan its next pass once no chunk is pending, close it once no pass
    is left, and add up its counts in any case. Planned chunks go to `handoff`."""
    session = uow.session
    chunks = chunks_of(session, run.id)
    planned: list[ScheduledRunChunk] = []
    if run.status in OPEN and not _pending(chunks):
        for phase in _passes_to_plan(chunks):
            planned = plan_pass(session, run.id, phase, policy, _day(run))
            if planned:
                handoff(uow, planned)
                chunks += planned
                break
    run.counts = fold(chunks)
    run.heartbeat_at = utcnow()
    if run.status not in OPEN:
        return Settled(closed=False, planned=0)  # closed before: its counts are refreshed
    failed = [chunk for chunk in chunks if chunk.status == FAILED]
    run.error = _failures(failed)
    if _pending(chunks):
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
    """Record the chunk as done (or failed, with `error`), then settle its run.

    A chunk ends once: done from pending (or from failed, when a dead letter is replayed),
    failed only from pending, so a failure reported by one copy does not undo another
    copy's finished work.
    """
    with UnitOfWork(session_factory) as uow:
        ended_from = (PENDING, FAILED) if error is None else (PENDING,)
        uow.session.execute(
            update(ScheduledRunChunk)
            .where(*key.where(), ScheduledRunChunk.status.in_(ended_from))
            .values(status=DONE if error is None else FAILED, error=error, finished_at=utcnow())
        )
        run = lock_run(uow.session, key.run_id)
        if run is None:
            return Settled(closed=False, planned=0)
        settled = settle(uow, run, policy, handoff)
        uow.commit()
    return settled


def fail_run(session_factory: SessionFactory, run_id: int, error: str) -> None:
    """End an open run as failed now, whatever chunks are left (its planner or the process
    running all its chunks stopped): what its chunks did stays in its counts."""
    with UnitOfWork(session_factory) as uow:
        run = lock_run(uow.session, run_id)
        if run is None or run.status not in OPEN:
            return
        refold(uow.session, run)
        run.status, run.finished_at, run.error = FAILED_RUN, utcnow(), error
        uow.commit()


def refold(session: Session, run: ScheduledRun) -> None:
    """The run's counts summed from its chunks again; a run without chunks keeps its own."""
    chunks = chunks_of(session, run.id)
    if chunks:
        run.counts = fold(chunks)


def fold(chunks: list[ScheduledRunChunk]) -> dict[str, Any]:
    """The run's counts: the sum of its chunks', and how many chunks there are and ended."""
    counts = new_counts()
    for chunk in chunks:
        counts = add_counts(counts, chunk.counts)
    counts["chunks"] = {
        "planned": len(chunks),
        "done": sum(1 for chunk in chunks if chunk.status == DONE),
        "failed": sum(1 for chunk in chunks if chunk.status == FAILED),
    }
    return counts


def _pending(chunks: list[ScheduledRunChunk]) -> bool:
    return any(chunk.status == PENDING for chunk in chunks)


def _passes_to_plan(chunks: list[ScheduledRunChunk]) -> tuple[str, ...]:
    """The passes after the last one that has chunks; all of them before any has. (A pass
    with nothing to do has no chunks: it is planned in the same turn as the pass after it.)"""
    reached = [PASSES.index(chunk.phase) for chunk in chunks]
    return PASSES[max(reached) + 1 :] if reached else PASSES


def _failures(failed: list[ScheduledRunChunk]) -> str | None:
    if not failed:
        return None
    return "\n".join(f"{ChunkKey.of(chunk)}: {chunk.error}" for chunk in failed)


def _day(run: ScheduledRun) -> date:
    if run.run_date is None:
        raise ValueError(f"scheduled run {run.id} has no day to run for")
    return run.run_date
