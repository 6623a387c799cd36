"""Retention of finished runs: a run that ended long ago goes, with its chunks, in small steps.

Its notices stay: each is the claim that makes an invoice's notice exactly-once, and later runs
must still find it. They only stop naming the run (run_id set to NULL) before it is deleted.
Each step is its own short transaction over at most `batch_size` rows, taken with the run's row
locked as a chunk's end locks it, and asks again that the run is finished and old: a run that is
running (or went on after being abandoned) is never touched.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.billing import InvoiceNotice
from models.ops import ScheduledRun, ScheduledRunChunk
from services.db import SessionFactory
from services.invoice_run.fan_in import ABANDONED, FAILED_RUN, SUCCEEDED

# Ended. An abandoned run is open in principle (a chunk ending after all takes it up again,
# fan_in.py), but one abandoned longer ago than any retention has no chunk left in a queue.
FINISHED = (SUCCEEDED, FAILED_RUN, ABANDONED)


def prune_finished_runs(
    session_factory: SessionFactory, ended_before: datetime, batch_size: int, max_batches: int
) -> int:
    """Delete runs that finished before `ended_before`, oldest first, in at most `max_batches`
    transactions; how many runs went. What is left waits for the next time (hourly)."""
    pruned, steps = 0, 0
    while steps < max_batches:
        with session_factory() as session:
            run_id = session.scalar(
                select(ScheduledRun.id)
                .where(*_finished(ended_before))
                .order_by(ScheduledRun.finished_at, ScheduledRun.id)
                .limit(1)
            )
        if run_id is None:
            break
        left = max_batches - steps
        taken, gone = _prune_run(session_factory, run_id, ended_before, batch_size, left)
        steps += taken
        if not gone:
            break  # out of steps, or it could not go yet: the next time
        pruned += 1
    return pruned


def _prune_run(
    session_factory: SessionFactory,
    run_id: int,
    ended_before: datetime,
    batch_size: int,
    max_steps: int,
) -> tuple[int, bool]:
    """Detach the run's notices, then delete its chunks, a batch per step, then the run;
    (steps taken, whether the run went)."""
    for step in range(1, max_steps + 1):
        with session_factory() as session:
            if not _lock_if_finished(session, run_id, ended_before):
                return step, False
            if _detach_notices(session, run_id, batch_size) or _delete_chunks(
                session, run_id, batch_size
            ):
                session.commit()
                continue
            try:
                session.execute(delete(ScheduledRun).where(ScheduledRun.id == run_id))
                session.commit()
            except IntegrityError:
                # A replayed chunk of it wrote a notice since: detached the next time.
                session.rollback()
                return step, False
            return step, True
    return max_steps, False


def _lock_if_finished(session: Session, run_id: int, ended_before: datetime) -> bool:
    """The run's row locked (FOR NO KEY UPDATE, as fan_in.lock_run) if it is still finished and
    old: a chunk's end waits for this step instead of meeting a half-pruned run."""
    found = session.scalars(
        select(ScheduledRun.id)
        .where(ScheduledRun.id == run_id, *_finished(ended_before))
        .with_for_update(key_share=True)
    ).first()
    return found is not None


def _detach_notices(session: Session, run_id: int, batch_size: int) -> int:
    invoice_ids = list(
        session.scalars(
            select(InvoiceNotice.invoice_id)
            .where(InvoiceNotice.run_id == run_id)
            .limit(batch_size)
        )
    )
    if invoice_ids:
        session.execute(
            update(InvoiceNotice)
            .where(InvoiceNotice.run_id == run_id, InvoiceNotice.invoice_id.in_(invoice_ids))
            .values(run_id=None)
            .execution_options(synchronize_session=False)
        )
    return len(invoice_ids)


def _delete_chunks(session: Session, run_id: int, batch_size: int) -> int:
    keys: list[tuple[Any, ...]] = [
        tuple(row)
        for row in session.execute(
            select(ScheduledRunChunk.phase, ScheduledRunChunk.seq)
            .where(ScheduledRunChunk.run_id == run_id)
            .limit(batch_size)
        )
    ]
    if keys:
        session.execute(
            delete(ScheduledRunChunk)
            .where(
                ScheduledRunChunk.run_id == run_id,
                tuple_(ScheduledRunChunk.phase, ScheduledRunChunk.seq).in_(keys),
            )
            .execution_options(synchronize_session=False)
        )
    return len(keys)


def _finished(ended_before: datetime) -> tuple[ColumnElement[bool], ...]:
    return (ScheduledRun.status.in_(FINISHED), ScheduledRun.finished_at < ended_before)
