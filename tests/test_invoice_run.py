"""The invoice run on PostgreSQL and SQLite: generation, the notice timeline, catch-up,
reruns and crashes, and a constant number of queries per batch."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import payloads
import pytest
from conftest import Apply, Publisher
from invoice_helpers import notices, run, sent
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from models import EmailMessage, Invoice, ScheduledRun, Service
from models.base import utcnow
from services.db import SessionFactory
from services.invoice_run.generate import add_months


@pytest.fixture
def client(apply: Apply) -> str:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    return "C1"


def test_active_services_falling_due_get_one_invoice_per_period(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    apply("services.upsert", payloads.service("S1", next_due_date="2026-03-14"))  # in lead time
    apply("services.upsert", payloads.service("S2", next_due_date="2026-03-16"))  # beyond it
    for status in ("Pending", "Suspended", "Terminated", "Cancelled"):
        apply("services.upsert", payloads.service(f"S-{status}", status=status))
    apply("services.upsert", payloads.service("S3", billing_cycle="One Time", amount="99"))
    apply("services.upsert", payloads.service("S4", billing_cycle="Free Account", amount="0"))
    # The client's status does not stop invoicing while its services are active.
    apply("clients.set_status", payloads.event("C1", status="Closed"))

    first = run(session_factory, publisher, "2026-02-28")
    again = run(session_factory, publisher, "2026-02-28")

    invoices = {i.id: i for i in db.scalars(select(Invoice))}
    assert sorted(invoices) == ["auto:S1:20260314", "auto:S3:20260301"]
    monthly = invoices["auto:S1:20260314"]
    assert (monthly.client_id, monthly.date, monthly.due_date, monthly.total) == (
        "C1",
        date(2026, 2, 28),
        date(2026, 3, 14),
        Decimal("12.50"),
    )
    assert monthly.items == [
        {"description": "Shared Hosting Pro (2026-03-14 - 2026-04-13)", "amount": "12.50"}
    ]
    assert (monthly.status, monthly.balance, monthly.service_id) == (
        "Unpaid",
        Decimal("12.50"),
        "S1",
    )
    due = {s.id: s.next_due_date for s in db.scalars(select(Service))}
    assert due["S1"] == date(2026, 4, 14)
    assert due["S3"] is None  # One Time: billed once
    assert due["S2"] == date(2026, 3, 16)
    assert (first.counts["generated"], again.counts["generated"]) == (2, 0)
    assert first.counts["notices"]["invoice_created"] == 2
    assert again.counts["notices"]["invoice_created"] == 0


def test_a_service_behind_gets_every_missed_period_and_months_end_stay_valid(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    apply("services.upsert", payloads.service("S1", next_due_date="2026-01-31"))
    run(session_factory, publisher, "2026-03-20", lead_days=0)
    ids = sorted(db.scalars(select(Invoice.id)))
    assert ids == ["auto:S1:20260131", "auto:S1:20260228"]
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2026, 11, 30), 3) == date(2027, 2, 28)


def test_each_notice_on_its_day_once_whatever_the_number_of_runs(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    apply("invoices.upsert", payloads.invoice("I1", date="2026-03-01", due_date="2026-03-15"))
    timeline = []
    day = date(2026, 2, 28)
    while day <= date(2026, 3, 31):
        before = sent(db)
        for _ in range(2):  # every run twice: the second finds nothing owed
            run(session_factory, publisher, day.isoformat())
        after = sent(db)
        assert len(after) - len(before) <= 1
        timeline += [(day.isoformat(), template) for template, _ in set(after) - set(before)]
        day = date.fromordinal(day.toordinal() + 1)

    assert sorted(timeline) == [
        ("2026-03-01", "invoice_created"),
        ("2026-03-08", "invoice_payment_reminder"),
        ("2026-03-16", "invoice_overdue_first"),
        ("2026-03-22", "invoice_overdue_second"),
        ("2026-03-29", "invoice_overdue_third"),
    ]
    assert set(notices(db, "I1").values()) == {"sent"}
    runs = db.scalars(select(ScheduledRun).where(ScheduledRun.name == "invoices.run")).all()
    assert len(runs) == 2 * 32
    assert {r.status for r in runs} == {"succeeded"}
    assert all(r.finished_at is not None for r in runs)


def test_after_missed_days_only_the_notice_due_now_is_sent_and_the_rest_recorded_skipped(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    apply("invoices.upsert", payloads.invoice("I1", date="2026-03-01", due_date="2026-03-15"))
    # Upstream created this one late: already overdue when first seen.
    apply("invoices.upsert", payloads.invoice("I2", date="2026-03-01", due_date="2026-03-02"))
    run(session_factory, publisher, "2026-03-01")

    missed = run(session_factory, publisher, "2026-03-23")  # no run for three weeks
    later = run(session_factory, publisher, "2026-03-24")

    assert sent(db, "I1") == [
        ("invoice_created", "c1@example.com"),
        ("invoice_overdue_second", "c1@example.com"),
    ]
    assert notices(db, "I1") == {
        "invoice_created": "sent",
        "payment_reminder": "skipped",
        "overdue_first": "skipped",
        "overdue_second": "sent",
    }
    assert sent(db, "I2") == [
        ("invoice_created", "c1@example.com"),
        ("invoice_overdue_third", "c1@example.com"),
    ]
    assert missed.counts["skipped"] == 4
    assert missed.counts["notices"] == {
        "invoice_created": 0,
        "payment_reminder": 0,
        "overdue_first": 0,
        "overdue_second": 1,
        "overdue_third": 1,
    }
    assert later.counts["emails"] == 0


def test_an_invoice_first_seen_after_its_reminder_day_gets_invoice_created_not_both(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    apply("invoices.upsert", payloads.invoice("I1", date="2026-03-10", due_date="2026-03-12"))
    run(session_factory, publisher, "2026-03-10")
    run(session_factory, publisher, "2026-03-11")
    assert [t for t, _ in sent(db)] == ["invoice_created"]
    assert notices(db, "I1") == {"invoice_created": "sent", "payment_reminder": "skipped"}


@pytest.mark.parametrize("status", ["Paid", "Cancelled", "Refunded"])
def test_no_notice_for_an_invoice_that_is_not_unpaid(
    status: str,
    apply: Apply,
    client: str,
    db: Session,
    session_factory: SessionFactory,
    publisher: Publisher,
) -> None:
    apply("invoices.upsert", payloads.invoice("I1", status=status, balance="0"))
    apply("invoices.upsert", payloads.invoice("I2"))
    for day in ("2026-03-01", "2026-03-08", "2026-03-16", "2026-03-22", "2026-03-29"):
        run(session_factory, publisher, day)
    assert notices(db, "I1") == {}
    assert len(notices(db, "I2")) == 5


def test_paid_between_two_runs_stops_the_notices(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    apply("invoices.upsert", payloads.invoice("I1"))
    run(session_factory, publisher, "2026-03-01")
    apply("invoices.record_payment", payloads.payment("I1", "1215.59"))
    for day in ("2026-03-08", "2026-03-16", "2026-03-29"):
        run(session_factory, publisher, day)
    assert [t for t, _ in sent(db)] == ["invoice_created", "invoice_payment_confirmation"]


def test_a_run_that_crashes_half_way_is_finished_by_the_next_without_repeats(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    for number in range(7):
        apply("invoices.upsert", payloads.invoice(f"I{number}"))

    def crash_after_first_batch(phase: str, examined: int, counts: dict[str, Any]) -> None:
        if phase == "notify":
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        run(session_factory, publisher, "2026-03-01", progress=crash_after_first_batch)
    crashed = db.scalars(select(ScheduledRun)).one()
    assert crashed.status == "failed"
    assert crashed.error is not None
    assert "RuntimeError: worker lost" in crashed.error
    # The first batch (3 invoices) committed with its counts; the rest did not happen.
    assert crashed.counts["notices"]["invoice_created"] == 3
    assert len(sent(db)) == 3

    rerun = run(session_factory, publisher, "2026-03-01")

    assert rerun.counts["notices"]["invoice_created"] == 4
    keys = db.scalars(select(EmailMessage.event_id)).all()
    assert sorted(keys) == [f"invoice:I{n}:invoice_created" for n in range(7)]
    # Every email owed was handed to delivery, batch by batch.
    assert len(publisher.message_ids) == 7


def test_queries_per_batch_do_not_depend_on_what_the_batch_holds(
    apply: Apply,
    client: str,
    db: Session,
    engine: Engine,
    session_factory: SessionFactory,
    publisher: Publisher,
) -> None:
    apply("clients.add", payloads.client("C2", send_welcome=False))
    for number in range(4):
        apply("contacts.add", payloads.contact(f"K{number}", "C2", "invoice"))
    apply("clients.set_billing_contact", payloads.event("C2", contact_id="K0"))
    apply("clients.add", payloads.client("C3", invoice_emails=False, send_welcome=False))
    # Batches of 3, in id order: A* have one recipient, B* five, C* none, D* owe a notice
    # after missed days (two skipped rows each) and E* a mix.
    shapes = {
        "A": ("C1", "2026-03-01", "2026-03-15"),
        "B": ("C2", "2026-03-01", "2026-03-15"),
        "C": ("C3", "2026-03-01", "2026-03-15"),
        "D": ("C1", "2026-02-01", "2026-02-10"),
        "E": ("C2", "2026-02-01", "2026-02-10"),
    }
    for prefix, (client_id, day, due) in shapes.items():
        for number in range(3):
            apply("invoices.upsert", payloads.invoice(f"{prefix}{number}", client_id, day, due))
    run(session_factory, publisher, "2026-02-01")  # D* and E*: Invoice Created
    statements: list[int] = []
    marks: list[int] = []

    def count(*_: Any) -> None:
        statements.append(1)

    event.listen(engine, "before_cursor_execute", count)
    try:
        finished = run(
            session_factory,
            publisher,
            "2026-03-01",
            progress=lambda phase, n, counts: marks.append(len(statements)),
            # One chunk: between two batches nothing but the second batch (a chunk's end
            # and the next one's start would fall between some of them).
            chunk_size=1000,
        )
    finally:
        event.remove(engine, "before_cursor_execute", count)

    per_batch = [b - a for a, b in pairwise(marks)]
    assert finished.counts["batches"]["notify"] == 5
    assert len(per_batch) == 4  # the first batch also carries the run's start
    # B (15 emails), D (3 emails, 9 skipped rows) and E (15 emails, 9 skipped): the same count.
    # C owes no email, so it has no email insert and no delivery to stage and publish.
    with_emails, without = [per_batch[0], per_batch[2], per_batch[3]], per_batch[1]
    assert len(set(with_emails)) == 1, per_batch
    assert without < with_emails[0] <= 16, per_batch
    # D* and E* owe the Third Overdue: their reminder, First and Second are skipped.
    assert finished.counts["skipped"] == 18
    assert finished.counts["notices"]["overdue_third"] == 6
    assert finished.counts["no_recipient"] == 3
    assert finished.counts["emails"] == 3 + 15 + 3 + 15


def test_a_run_whose_worker_died_is_marked_abandoned_by_the_next(
    apply: Apply, client: str, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    apply("invoices.upsert", payloads.invoice("I1"))
    now = utcnow()
    # kill -9 leaves no trace but the row: still `running`, its heartbeat stopped 20 min ago.
    # Another run is alive and well (two beats fired at once).
    dead = ScheduledRun(
        name="invoices.run",
        status="running",
        started_at=now - timedelta(minutes=30),
        heartbeat_at=now - timedelta(minutes=20),
    )
    alive = ScheduledRun(name="invoices.run", status="running", heartbeat_at=now)
    db.add_all([dead, alive])
    db.commit()

    finished = run(session_factory, publisher, "2026-03-01")

    db.expire_all()
    assert (dead.status, alive.status, finished.status) == ("abandoned", "running", "succeeded")
    assert dead.finished_at is not None
    assert "its worker was lost" in (dead.error or "")
    assert finished.counts["notices"]["invoice_created"] == 1
