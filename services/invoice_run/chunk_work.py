"""One chunk's work: its range of one pass paged in batches, each batch its own transaction
that adds its counts to the chunk's row, then the chunk's end (fan_in.finish_chunk).

A chunk task delivered again (its worker died, a retry) finds only what is still owed in its
range, since both passes select only that: its batches add only what they did themselves, so
the chunk's counts, and the run's added from them as each chunk ends, stay exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Select, select, update

from models.base import utcnow
from models.billing import Invoice, Service
from models.ops import ScheduledRun, ScheduledRunChunk
from services import outbox
from services.db import SessionFactory, UnitOfWork
from services.invoice_run.chunks import DONE, ChunkKey
from services.invoice_run.counting import StatementCounter, counting_statements
from services.invoice_run.fan_in import finish_chunk
from services.invoice_run.generate import generate_batch, select_services
from services.invoice_run.handoff import Handoff
from services.invoice_run.notify import notify_batch, select_invoices
from services.invoice_run.policy import RunPolicy
from services.invoice_run.ranges import IdRange
from services.invoice_run.totals import GENERATE, NOTIFY, add_counts, new_counts
from services.mail.queue import DeliverNow, claim_for_sending
from services.outbox import DELIVER_TASK, Publish

# A row of the pass being paged (a Service or an Invoice): what `after` and `.id` refer to.
Row = TypeVar("Row", Service, Invoice)

# Called after each committed batch with the pass ("generate" | "notify"), the number of
# rows the batch looked at, and its chunk's counts so far (the CLI's progress bar).
Progress = Callable[[str, int, dict[str, Any]], None]


class ChunkMissing(LookupError):
    """The task names a chunk that is not in the database (hand-published, or its run
    deleted): nothing to do, and retrying will not change that."""


@dataclass(frozen=True)
class ChunkOutcome:
    ran: bool  # False: the chunk was done already (a copy of its task), nothing was done
    closed_run: bool  # its end closed the run
    planned: int  # chunks of the next pass its end planned


def run_chunk(
    session_factory: SessionFactory,
    publish: Publish,
    policy: RunPolicy,
    key: ChunkKey,
    handoff: Handoff,
    progress: Progress | None = None,
    deliver_now: DeliverNow | None = None,
) -> ChunkOutcome:
    """Run the chunk's batches, then its end. With `deliver_now` (a worker's), each notice
    batch's emails are sent by this process right after the batch commits, while it is
    ready; otherwise, and without it, each batch stages an emails.deliver task."""
    with session_factory() as session:
        chunk = session.scalars(select(ScheduledRunChunk).where(*key.where())).first()
        run = session.get(ScheduledRun, key.run_id)
    if chunk is None or run is None or run.run_date is None:
        raise ChunkMissing(f"no {key} to run")
    if chunk.status == DONE:
        if chunk.unfolded:
            # A copy of it committed a batch after its end and died before its own: what that
            # batch did reaches the run now.
            finish_chunk(session_factory, key, policy, handoff)
        return ChunkOutcome(ran=False, closed_run=False, planned=0)
    span = IdRange(chunk.after_id, chunk.through_id)
    work = Batches(session_factory, key, progress)
    if key.phase == GENERATE:
        _generate(work, policy, run.run_date, span)
    elif key.phase == NOTIFY:
        _notify(work, publish, policy, run.run_date, span, deliver_now)
    else:
        raise ChunkMissing(f"no pass {key.phase!r}: {key}")
    settled = finish_chunk(session_factory, key, policy, handoff)
    return ChunkOutcome(ran=True, closed_run=settled.closed, planned=settled.planned)


def _generate(work: Batches, policy: RunPolicy, on: date, span: IdRange) -> None:
    def handle(uow: UnitOfWork, services: list[Service], counts: dict[str, Any]) -> None:
        counts["generated"] += generate_batch(uow.session, services, on, policy.lead_days).invoices

    work.page(
        GENERATE,
        span.after,
        lambda after: select_services(on, policy.lead_days, after, span.through, policy.batch_size),
        handle,
    )


def _notify(
    work: Batches,
    publish: Publish,
    policy: RunPolicy,
    on: date,
    span: IdRange,
    deliver_now: DeliverNow | None,
) -> None:
    def handle(uow: UnitOfWork, invoices: list[Invoice], counts: dict[str, Any]) -> None:
        notified = notify_batch(
            uow.session,
            invoices,
            on=on,
            schedule=policy.schedule,
            run_id=work.key.run_id,
            company_name=policy.company_name,
            opt_outs=policy.opt_outs,
        )
        staged, claimed = [], []
        if notified.emails and deliver_now is not None and deliver_now.ready():
            # Sent by this task right after the batch's commit: no delivery task, no outbox
            # row, and no second read of what was just rendered (services.mail.queue).
            claimed = claim_for_sending(notified.emails)
        elif notified.emails:
            # One delivery per batch; the batches of a run spread over the workers.
            ids = [email.id for email in notified.emails]
            message = outbox.stage(uow.session, DELIVER_TASK, {"message_ids": ids})
            uow.session.flush()
            staged.append(message.id)
        for notice, number in notified.sent.items():
            counts["notices"][notice] += number
        counts["skipped"] += notified.skipped
        counts["no_recipient"] += notified.no_recipient
        counts["emails"] += len(notified.emails)
        counts["unhandled"] += len(notified.problems)
        counts["problems"] += notified.problems
        uow.after_commit(partial(outbox.publish_staged, work.session_factory, staged, publish))
        if claimed and deliver_now is not None:
            uow.after_commit(partial(deliver_now, claimed))

    work.page(
        NOTIFY,
        span.after,
        lambda after: select_invoices(on, policy.schedule, after, span.through, policy.batch_size),
        handle,
    )


@dataclass(frozen=True)
class Batches:
    session_factory: SessionFactory
    key: ChunkKey
    progress: Progress | None

    def page(
        self,
        phase: str,
        after: str,
        select_batch: Callable[[str], Select[Row]],
        handle: Callable[[UnitOfWork, list[Row], dict[str, Any]], None],
    ) -> None:
        """Keyset paging by id from `after`, one transaction per batch: `handle` does the
        batch's work and counts it, and the counts commit with it (see _batch_done)."""
        while True:
            with (
                UnitOfWork(self.session_factory) as uow,
                counting_statements(uow.session) as counter,
            ):
                rows = list(uow.session.scalars(select_batch(after)))
                if not rows:
                    return
                counts = new_counts()
                handle(uow, rows, counts)
                chunk_counts = self._batch_done(uow, counts, phase, counter)
                uow.commit()
            after = rows[-1].id
            if self.progress is not None:
                self.progress(phase, len(rows), chunk_counts)

    def _batch_done(
        self, uow: UnitOfWork, counts: dict[str, Any], phase: str, counter: StatementCounter
    ) -> dict[str, Any]:
        """The batch's counts added to its chunk's row, in the batch's transaction, so a chunk
        that dies keeps what its finished batches did. The row is locked for it: a copy of
        the chunk running at the same time adds its own batches in turn, not over them.

        The statement count includes this UPDATE (sent right after it is taken).
        """
        chunk = uow.session.scalars(
            select(ScheduledRunChunk).where(*self.key.where()).with_for_update()
        ).one()
        counts["batches"][phase] = 1
        counts["queries_per_batch"][phase] = counter.count + 1
        summed = add_counts(chunk.counts, counts)
        # Also owed to the run, until the chunk's end adds it there (fan_in.finish_chunk).
        unfolded = add_counts(chunk.unfolded or {}, counts)
        uow.session.execute(
            update(ScheduledRunChunk)
            .where(*self.key.where())
            .values(counts=summed, unfolded=unfolded, heartbeat_at=utcnow())
        )
        return summed
