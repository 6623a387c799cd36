"""One invoice run: a ScheduledRun row, the generation pass, the notice pass, each in batches.

Each batch is its own transaction, so a run that crashes keeps what its finished batches
did (and their counts) and a rerun goes on from there: both passes select only work still
owed. The session of each batch is closed with it, so memory does not grow with the data.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Select, func, update

from models.base import utcnow
from models.billing import Invoice, Service
from models.company import CompanyLike
from models.ops import ScheduledRun
from services import outbox
from services.db import SessionFactory, UnitOfWork
from services.invoice_run.counting import counting_statements
from services.invoice_run.generate import generate_batch, select_services
from services.invoice_run.notify import notify_batch, select_invoices
from services.invoice_run.schedule import STAGES, NoticeSchedule
from services.opt_outs import DEFAULT_OPT_OUTS, OptOutPolicy
from services.outbox import DELIVER_TASK, Publish
from services.redaction import redact_addresses

log = logging.getLogger(__name__)

# A row of the pass being paged (a Service or an Invoice): what `after` and `.id` refer to.
Row = TypeVar("Row", Service, Invoice)

RUN_NAME = "invoices.run"
# A batch commits within seconds, and each commit moves the run's heartbeat; a `running` run
# silent for this long lost its worker (kill -9, OOM). Its redelivered task is a new run.
STALE_AFTER = timedelta(minutes=15)

MAX_PROBLEMS_KEPT = 20

# Called after each committed batch with the pass ("generate" | "notify"), the number of
# rows the batch looked at, and the run's counts so far (what the CLI's progress bar shows).
Progress = Callable[[str, int, dict[str, Any]], None]


@dataclass(frozen=True)
class RunPolicy:
    lead_days: int
    schedule: NoticeSchedule
    batch_size: int
    company_name: CompanyLike
    opt_outs: OptOutPolicy = DEFAULT_OPT_OUTS


def new_counts() -> dict[str, Any]:
    return {
        "generated": 0,
        "notices": {notice.value: 0 for notice in STAGES},
        "skipped": 0,
        "no_recipient": 0,
        "emails": 0,
        # Invoices the notice pass could not handle (left for the next run), and the last
        # few reasons, so ops can see which and why.
        "unhandled": 0,
        "problems": [],
        "batches": {"generate": 0, "notify": 0},
        # The most statements one batch's transaction sent, per pass.
        "queries_per_batch": {"generate": 0, "notify": 0},
    }


def run_invoices(
    session_factory: SessionFactory,
    publish: Publish,
    policy: RunPolicy,
    on: date,
    progress: Progress | None = None,
) -> ScheduledRun:
    """Run for day `on`; returns the finished ScheduledRun (succeeded, or failed and raises)."""
    run = _start(session_factory, on)
    counts = new_counts()
    try:
        _generate(session_factory, policy, on, run.id, counts, progress)
        _notify(session_factory, publish, policy, on, run.id, counts, progress)
    except BaseException as exc:
        try:
            error = redact_addresses("".join(traceback.format_exception(exc)))
            _finish(session_factory, run, counts, "failed", error)
        except Exception:  # often the same outage; the original error is the one to raise
            log.exception("could not record invoice run %s as failed", run.id)
        raise
    _finish(session_factory, run, counts, "succeeded", None)
    return run


def _generate(
    session_factory: SessionFactory,
    policy: RunPolicy,
    on: date,
    run_id: int,
    counts: dict[str, Any],
    progress: Progress | None,
) -> None:
    def handle(uow: UnitOfWork, services: list[Service]) -> None:
        generated = generate_batch(uow.session, services, on, policy.lead_days)
        counts["generated"] += generated.invoices

    _in_batches(
        session_factory,
        "generate",
        lambda after: select_services(on, policy.lead_days, after, policy.batch_size),
        handle,
        run_id,
        counts,
        progress,
    )


def _notify(
    session_factory: SessionFactory,
    publish: Publish,
    policy: RunPolicy,
    on: date,
    run_id: int,
    counts: dict[str, Any],
    progress: Progress | None,
) -> None:
    def handle(uow: UnitOfWork, invoices: list[Invoice]) -> None:
        notified = notify_batch(
            uow.session,
            invoices,
            on=on,
            schedule=policy.schedule,
            run_id=run_id,
            company_name=policy.company_name,
            opt_outs=policy.opt_outs,
        )
        staged = []
        if notified.email_ids:
            # One delivery per batch; the batches of a run spread over the workers.
            message = outbox.stage(uow.session, DELIVER_TASK, {"message_ids": notified.email_ids})
            uow.session.flush()
            staged.append(message.id)
        for notice, number in notified.sent.items():
            counts["notices"][notice] += number
        counts["skipped"] += notified.skipped
        counts["no_recipient"] += notified.no_recipient
        counts["emails"] += len(notified.email_ids)
        counts["unhandled"] += len(notified.problems)
        counts["problems"] = (counts["problems"] + notified.problems)[-MAX_PROBLEMS_KEPT:]
        uow.after_commit(partial(outbox.publish_staged, session_factory, staged, publish))

    _in_batches(
        session_factory,
        "notify",
        lambda after: select_invoices(on, policy.schedule, after, policy.batch_size),
        handle,
        run_id,
        counts,
        progress,
    )


def _in_batches(
    session_factory: SessionFactory,
    phase: str,
    select_batch: Callable[[str], Select[Row]],
    handle: Callable[[UnitOfWork, list[Row]], None],
    run_id: int,
    counts: dict[str, Any],
    progress: Progress | None,
) -> None:
    """Keyset paging by id, one transaction per batch: `handle` does the batch's work, and
    the run's counts commit with it (see _batch_done)."""
    after = ""
    while True:
        with UnitOfWork(session_factory) as uow, counting_statements(uow.session) as counter:
            rows = list(uow.session.scalars(select_batch(after)))
            if not rows:
                return
            handle(uow, rows)
            _batch_done(uow, run_id, counts, phase, counter.count)
            uow.commit()
        after = rows[-1].id
        if progress is not None:
            progress(phase, len(rows), counts)


def _batch_done(
    uow: UnitOfWork, run_id: int, counts: dict[str, Any], phase: str, statements: int
) -> None:
    """Counts commit with the batch, so a crashed run still shows what it did.

    The statement count includes this UPDATE (sent right after it is taken).
    """
    counts["batches"][phase] += 1
    most = counts["queries_per_batch"]
    most[phase] = max(most[phase], statements + 1)
    uow.session.execute(
        update(ScheduledRun)
        .where(ScheduledRun.id == run_id)
        .values(counts=_copy(counts), heartbeat_at=utcnow())
    )


def _copy(counts: dict[str, Any]) -> dict[str, Any]:
    # A fresh structure each time: the JSON type compares by value to decide what to write.
    return {
        k: dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v
        for k, v in counts.items()
    }


def _start(session_factory: SessionFactory, on: date) -> ScheduledRun:
    abandon_stale_runs(session_factory)
    with session_factory() as session:
        run = ScheduledRun(
            name=RUN_NAME,
            run_date=on,
            status="running",
            counts=new_counts(),
            heartbeat_at=utcnow(),
        )
        session.add(run)
        session.commit()
        return run


def abandon_stale_runs(session_factory: SessionFactory, now: datetime | None = None) -> int:
    """Mark `running` runs whose heartbeat stopped STALE_AFTER ago as abandoned.

    Without this a run whose worker died stays `running` in `clientflow ops status` for good.
    What it did is kept (its counts were committed batch by batch); the notices it did not
    reach are sent by the run that took over, since each notice is claimed by a unique row.
    """
    moment = now or utcnow()
    with session_factory() as session:
        result = session.execute(
            update(ScheduledRun)
            .where(
                ScheduledRun.status == "running",
                func.coalesce(ScheduledRun.heartbeat_at, ScheduledRun.started_at)
                < moment - STALE_AFTER,
            )
            .values(
                status="abandoned",
                finished_at=moment,
                error=f"no progress for over {STALE_AFTER}: its worker was lost",
            )
        )
        session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def _finish(
    session_factory: SessionFactory,
    run: ScheduledRun,
    counts: dict[str, Any],
    status: str,
    error: str | None,
) -> None:
    with session_factory() as session:
        session.execute(
            update(ScheduledRun)
            .where(ScheduledRun.id == run.id)
            .values(status=status, finished_at=utcnow(), counts=_copy(counts), error=error)
        )
        session.commit()
    run.status, run.counts, run.error = status, _copy(counts), error
