"""Retention: the idempotency window, email bodies, refused events and audit rows, pruned in
small batches by the hourly housekeeping."""

from __future__ import annotations

from datetime import timedelta

import payloads
import pytest
from conftest import Apply, Publisher
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from worker_process import WorkerProcess, worker_fixture

from models.base import utcnow
from models.emails import EmailMessage, EmailStatus
from models.records import AuditEvent, ProcessedEvent, RejectedEvent
from services.db import SessionFactory
from services.dispatch import Outcome
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


@pytest.mark.worker
def test_the_hourly_housekeeping_prunes_the_inbox_on_a_real_worker(worker: WorkerProcess) -> None:
    update_event = payloads.event("C1", firstname="Grace")
    add = payloads.client("C1", send_welcome=False)
    worker.publish("clients.add", add)
    worker.wait_applied(add["event_id"])
    worker.publish("clients.update", update_event)
    worker.wait_applied(update_event["event_id"])
    with worker.sessions() as session:
        age_inbox_row(session, update_event["event_id"])

    worker.publish("ops.housekeeping", {})

    worker.wait_for_db(
        lambda s: s.get(ProcessedEvent, update_event["event_id"]) is None,
        "the update's inbox row pruned (90 days by default)",
    )
    with worker.sessions() as session:
        assert session.get(ProcessedEvent, add["event_id"]) is not None
        audits_before = count(session, AuditEvent)
    # Replayed outside the window, the update is applied again: a second audit row says so.
    worker.publish("clients.update", update_event)
    worker.wait_for_db(
        lambda s: count(s, AuditEvent) == audits_before + 1, "the replayed update applied"
    )
