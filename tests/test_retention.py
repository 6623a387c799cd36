"""Retention: the idempotency window, email bodies, refused events, audit rows and finished
invoice runs, pruned in small batches by the hourly housekeeping."""

from __future__ import annotations

from datetime import date, timedelta

import payloads
import pytest
from conftest import Apply, Publisher
from invoice_helpers import POLICY
from invoice_helpers import run as run_invoices
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from worker_process import WorkerProcess, worker_fixture

from models.base import utcnow
from models.billing import InvoiceNotice
from models.emails import EmailMessage, EmailStatus
from models.ops import ScheduledRun, ScheduledRunChunk
from models.records import AuditEvent, ProcessedEvent, RejectedEvent
from services.db import SessionFactory
from services.dispatch import Outcome
from services.invoice_run.fan_in import fail_run
from services.invoice_run.handoff import to_workers
from services.invoice_run.run import start_run
from services.retention import Retention, prune

WINDOW = timedelta(days=90)
ONLY_INBOX = Retention(
    processed_events=WINDOW, email_bodies=None, rejected_events=None, audit_events=None
)
LONG_AGO = utcnow() - timedelta(days=100)

worker = worker_fixture()


def age_inbox_row(session: Session, event_id: str) -> None:
    session.execute(
        update(ProcessedEvent)
        .where(ProcessedEvent.event_id == event_id)
        .values(processed_at=LONG_AGO)
    )
    session.commit()


def count(session: Session, model: type[object]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_outside_the_window_an_event_is_applied_again_inside_it_is_a_duplicate(
    apply: Apply, publisher: Publisher, session_factory: SessionFactory, db: Session
) -> None:
    add = payloads.client("C1")
    assert apply("clients.add", add).outcome is Outcome.APPLIED
    notice = payloads.notification("C1")
    assert apply("notifications.send", notice).outcome is Outcome.APPLIED
    emails_before = count(db, EmailMessage)
    deliveries_before = len(publisher.deliveries)
    age_inbox_row(db, notice["event_id"])

    pruned = prune(session_factory, ONLY_INBOX)

    assert pruned["processed_events_pruned"] == 1
    # Outside the window: applied again. Its email is already in the log under the same
    # idempotency key, so nothing is queued or sent a second time.
    assert apply("notifications.send", notice).outcome is Outcome.APPLIED
    assert count(db, EmailMessage) == emails_before
    assert len(publisher.deliveries) == deliveries_before
    # Inside the window: still a duplicate.
    assert apply("clients.add", add).outcome is Outcome.DUPLICATE


def test_old_bodies_refusals_and_audit_rows_go_in_batches_and_owed_work_stays(
    apply: Apply, session_factory: SessionFactory, db: Session
) -> None:
    for client_id in ("C1", "C2", "C3"):
        apply("clients.add", payloads.client(client_id))
    apply("clients.add", payloads.client("C1", email="c1@example.com"))  # refused: exists
    apply("contacts.add", payloads.contact("K1", "C9"))  # waits for client C9
    sent = db.scalars(select(EmailMessage.id).order_by(EmailMessage.to_address)).all()[:2]
    db.execute(update(EmailMessage).where(EmailMessage.id.in_(sent)).values(status="sent"))
    for model, column in [(EmailMessage, EmailMessage.created_at),
                          (RejectedEvent, RejectedEvent.created_at),
                          (AuditEvent, AuditEvent.created_at)]:  # fmt: skip
        db.execute(update(model).values({column: LONG_AGO}))
    db.commit()

    days = timedelta(days=90)
    pruned = prune(
        session_factory,
        Retention(processed_events=None, email_bodies=days, rejected_events=days,
                  audit_events=days),
        batch_size=2,
    )  # fmt: skip

    assert pruned == {
        "processed_events_pruned": 0,
        "email_bodies_pruned": 2,
        "rejected_events_pruned": 1,
        "audit_events_pruned": 3,
        "scheduled_runs_pruned": 0,
    }
    db.expire_all()
    bodies = {m.status: (m.body_text, m.body_html) for m in db.scalars(select(EmailMessage))}
    assert bodies[EmailStatus.SENT] == ("", "")
    assert all(bodies[EmailStatus.QUEUED])  # still owed: its body stays
    assert count(db, EmailMessage) == 3  # rows stay: their keys still stop a second send
    [waiting] = db.scalars(select(RejectedEvent)).all()
    assert waiting.waiting_for == "client:C9"
    assert count(db, AuditEvent) == 0
    assert count(db, ProcessedEvent) == 3  # the three adds: not past any retention given


def age_run(session: Session, run_id: int, days: float) -> None:
    """As if the run had started and finished `days` ago (finished only if it had)."""
    then = utcnow() - timedelta(days=days)
    run = session.get(ScheduledRun, run_id)
    assert run is not None
    run.started_at = then
    if run.finished_at is not None:
        run.finished_at = then
    session.commit()


RUNS_ONLY = Retention(None, None, None, None, scheduled_runs=WINDOW)


def test_finished_runs_go_with_their_chunks_in_small_batches_and_their_notices_stay(
    apply: Apply, publisher: Publisher, session_factory: SessionFactory, db: Session
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    for number in range(7):
        apply("invoices.upsert", payloads.invoice(f"I{number}"))
    # Old and succeeded: 7 notices over two chunks (chunks of 6).
    old = run_invoices(session_factory, publisher, "2026-03-01")
    assert (old.status, old.counts["chunks"]["planned"]) == ("succeeded", 2)
    # Finished within the window (nothing left to do that day): kept.
    recent = run_invoices(session_factory, publisher, "2026-03-01")
    # Old and failed by its planner before its one chunk ran; old and still running: never
    # pruned, however old.
    apply("invoices.upsert", payloads.invoice("J1"))
    handoff = to_workers(session_factory, publisher)
    failed = start_run(session_factory, POLICY, date(2026, 3, 1), handoff)
    fail_run(session_factory, failed.id, "the planner stopped")
    running = start_run(session_factory, POLICY, date(2026, 3, 1), handoff)
    for run_id in (old.id, failed.id, running.id):
        age_run(db, run_id, 100)
    chunks_before = {
        run_id: number
        for run_id, number in db.execute(
            select(ScheduledRunChunk.run_id, func.count()).group_by(ScheduledRunChunk.run_id)
        )
    }
    assert chunks_before == {old.id: 2, failed.id: 1, running.id: 1}
    notices_before = count(db, InvoiceNotice)
    assert notices_before == 7

    # Two rows a step: the old run's 7 notices take 4 steps, its chunks one, itself one; a
    # prune of 5 steps leaves the rest to the next.
    first = prune(session_factory, RUNS_ONLY, batch_size=2, max_batches=5)
    assert first["scheduled_runs_pruned"] == 0
    db.expire_all()
    assert set(db.scalars(select(InvoiceNotice.run_id))) == {None}
    assert count(db, ScheduledRun) == 4
    pruned = prune(session_factory, RUNS_ONLY, batch_size=2)

    assert pruned["scheduled_runs_pruned"] == 2
    db.expire_all()
    assert set(db.scalars(select(ScheduledRun.id))) == {running.id, recent.id}
    assert set(db.scalars(select(ScheduledRunChunk.run_id))) == {running.id}
    # The notices stay (each keeps its notice exactly-once), no longer naming the run.
    assert count(db, InvoiceNotice) == notices_before
    assert set(db.scalars(select(InvoiceNotice.run_id))) == {None}
    # A run for the same day again finds every notice sent: nothing is sent twice.
    emails_before = len(publisher.message_ids)
    again = run_invoices(session_factory, publisher, "2026-03-01")
    assert again.counts["notices"]["invoice_created"] == 1  # J1, which the failed run left
    assert len(publisher.message_ids) == emails_before + 1


@pytest.mark.worker
def test_the_hourly_housekeeping_prunes_the_inbox_and_old_runs_on_a_real_worker(
    worker: WorkerProcess,
) -> None:
    update_event = payloads.event("C1", firstname="Grace")
    add = payloads.client("C1", send_welcome=False)
    worker.publish("clients.add", add)
    worker.wait_applied(add["event_id"])
    worker.publish("clients.update", update_event)
    worker.wait_applied(update_event["event_id"])
    with worker.sessions() as session:
        age_inbox_row(session, update_event["event_id"])
        # Both started long ago; one ended then, the other still beats (not stale).
        finished, running = (
            ScheduledRun(name="invoices.run", run_date=date(2026, 3, 1), status=status,
                         started_at=LONG_AGO, finished_at=ended, heartbeat_at=beat, counts={})
            for status, ended, beat in (("succeeded", LONG_AGO, LONG_AGO),
                                        ("running", None, utcnow()))
        )  # fmt: skip
        session.add_all([finished, running])
        session.flush()
        session.add_all(
            ScheduledRunChunk(run_id=run.id, phase="notify", seq=1, after_id="", status=state,
                              counts={}, unfolded={})
            for run, state in ((finished, "done"), (running, "pending"))
        )  # fmt: skip
        session.commit()
        finished_id, running_id = finished.id, running.id

    worker.publish("ops.housekeeping", {})

    worker.wait_for_db(
        lambda s: s.get(ProcessedEvent, update_event["event_id"]) is None,
        "the update's inbox row pruned (90 days by default)",
    )
    worker.wait_for_db(
        lambda s: s.get(ScheduledRun, finished_id) is None,
        "the run finished 100 days ago pruned (90 days by default)",
    )
    with worker.sessions() as session:
        assert session.get(ProcessedEvent, add["event_id"]) is not None
        # Started as long ago, but running: kept, with its chunk.
        still = session.get(ScheduledRun, running_id)
        assert still is not None
        assert still.status == "running"
        assert list(session.scalars(select(ScheduledRunChunk.run_id))) == [running_id]
        audits_before = count(session, AuditEvent)
    # Replayed outside the window, the update is applied again: a second audit row says so.
    worker.publish("clients.update", update_event)
    worker.wait_for_db(
        lambda s: count(s, AuditEvent) == audits_before + 1, "the replayed update applied"
    )
