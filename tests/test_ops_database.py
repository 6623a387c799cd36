"""What ops reads from the database, on PostgreSQL and SQLite: task counters and summaries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from models.dead_letters import DeadLetter
from models.emails import EmailMessage
from models.ops import ScheduledRun, TaskStat
from models.records import ProcessedEvent, RejectedEvent
from models.settings import Settings
from services import task_stats
from services.db import SessionFactory
from workers.ops import stats, storage, tables
from workers.ops.snapshot import TaskOutcomes

NOW = datetime(2026, 11, 25, 12, 30, 40, tzinfo=UTC)


def test_outcomes_of_one_minute_add_up_in_one_row(session_factory: SessionFactory) -> None:
    task_stats.record_outcome(session_factory, "clients.add", "succeeded", 0.5, at=NOW)
    task_stats.record_outcome(session_factory, "clients.add", "succeeded", 0.25, at=NOW)
    task_stats.record_outcome(session_factory, "clients.add", "failed", 2.0, at=NOW)
    task_stats.record_outcome(
        session_factory, "clients.add", "succeeded", 1.0, at=NOW + timedelta(minutes=1)
    )

    with session_factory() as session:
        rows = session.execute(
            select(
                TaskStat.bucket, TaskStat.outcome, TaskStat.count, TaskStat.runtime_total
            ).order_by(TaskStat.bucket, TaskStat.outcome)
        ).all()
    minute = NOW.replace(second=0)
    assert [tuple(r) for r in rows] == [
        (minute, "failed", 1, 2.0),
        (minute, "succeeded", 2, 0.75),
        (minute + timedelta(minutes=1), "succeeded", 1, 1.0),
    ]


@pytest.mark.parametrize(
    ("state", "result", "outcome"),
    [
        ("SUCCESS", "applied", "succeeded"),
        ("SUCCESS", "duplicate", "succeeded"),
        ("SUCCESS", {"sent": 1, "failed": 0}, "succeeded"),
        ("SUCCESS", "rejected", "rejected"),
        ("FAILURE", "rejected", "failed"),
        ("RETRY", None, "retried"),
        ("REVOKED", None, None),
    ],
)
def test_a_run_that_refused_its_event_counts_as_rejected(
    state: str, result: object, outcome: str | None
) -> None:
    assert task_stats.outcome_of(state, result) == outcome


def test_unknown_outcome_is_refused(session_factory: SessionFactory) -> None:
    with pytest.raises(ValueError, match="unknown outcome"):
        task_stats.record_outcome(session_factory, "clients.add", "exploded", 0.1)


def test_last_hour_sums_per_task_and_leaves_older_minutes_out(
    session_factory: SessionFactory, db: Session
) -> None:
    for outcome, runtime in [("succeeded", 1.0), ("succeeded", 3.0), ("retried", 2.0)]:
        task_stats.record_outcome(session_factory, "emails.deliver", outcome, runtime, at=NOW)
    task_stats.record_outcome(
        session_factory, "emails.deliver", "failed", 9.0, at=NOW - timedelta(hours=2)
    )
    task_stats.record_outcome(
        session_factory, "clients.add", "failed", 0.5, at=NOW - timedelta(minutes=59)
    )
    task_stats.record_outcome(session_factory, "clients.add", "rejected", 0.1, at=NOW)

    assert stats.last_hour(db, NOW) == [
        TaskOutcomes(
            task_name="clients.add",
            succeeded=0,
            rejected=1,
            failed=1,
            retried=0,
            runtime_avg_seconds=0.3,
        ),
        TaskOutcomes(
            task_name="emails.deliver",
            succeeded=2,
            rejected=0,
            failed=0,
            retried=1,
            runtime_avg_seconds=2.0,
        ),
    ]
    totals = {
        (t.task_name, t.outcome): (t.count, t.runtime_seconds) for t in stats.outcome_totals(db)
    }
    assert totals == {
        ("clients.add", "failed"): (1, 0.5),
        ("clients.add", "rejected"): (1, 0.1),
        ("emails.deliver", "failed"): (1, 9.0),
        ("emails.deliver", "retried"): (1, 2.0),
        ("emails.deliver", "succeeded"): (2, 4.0),
    }


def _dead_letter(reason: str, at: datetime, replayed: bool = False) -> DeadLetter:
    return DeadLetter(
        task_name="emails.deliver",
        kwargs={},
        errors=[],
        reason=reason,
        created_at=at,
        replayed_at=at if replayed else None,
        replay_count=int(replayed),
    )


def test_dead_letters_and_rejections_are_grouped_by_reason(db: Session) -> None:
    db.add_all(
        [
            _dead_letter("gave up after 3 attempts: OperationalError", NOW - timedelta(hours=1)),
            _dead_letter("gave up after 3 attempts: OperationalError", NOW, replayed=True),
            _dead_letter("unexpected error, not retried: ArgumentError", NOW),
            RejectedEvent(
                task_name="clients.add", payload="{}", reason="invalid event: email", created_at=NOW
            ),
            RejectedEvent(
                task_name="contacts.add",
                payload="{}",
                reason="unknown client 'C9'",
                waiting_for="client:C9",
                created_at=NOW,
            ),
        ]
    )
    db.commit()

    letters = tables.dead_letters(db)
    assert (letters.total, letters.not_replayed) == (3, 2)
    assert [(r.reason, r.count, r.last_at) for r in letters.by_reason] == [
        ("gave up after 3 attempts: OperationalError", 2, NOW),
        ("unexpected error, not retried: ArgumentError", 1, NOW),
    ]
    rejected = tables.rejected_events(db)
    assert (rejected.total, rejected.waiting) == (2, 1)
    assert sorted((r.reason, r.count) for r in rejected.by_reason) == [
        ("invalid event: email", 1),
        ("unknown client 'C9'", 1),
    ]


def test_email_counts_name_every_status(db: Session) -> None:
    for index, status in enumerate(["sent", "sent", "failed", "queued"]):
        db.add(
            EmailMessage(
                id=f"m{index}",
                idempotency_key=f"k{index}",
                event_id="e1",
                client_id="C1",
                template="client_signup",
                category="general",
                to_address="a@example.com",
                to_name="A",
                subject="s",
                body_text="t",
                body_html="h",
                status=status,
            )
        )
    db.commit()
    assert tables.email_counts(db).model_dump() == {
        "queued": 1,
        "sending": 0,
        "sent": 2,
        "failed": 1,
    }


def test_last_invoice_run_and_last_successes(db: Session) -> None:
    assert tables.last_run(db) is None
    day = timedelta(days=1)
    db.add_all(
        [
            ScheduledRun(
                name="invoices.run",
                run_date=date(2026, 11, 24),
                status="succeeded",
                started_at=NOW - day,
                finished_at=NOW - day + timedelta(minutes=3),
                counts={"invoices": 12, "emails": 12},
            ),
            ScheduledRun(
                name="invoices.run",
                run_date=date(2026, 11, 25),
                status="failed",
                started_at=NOW,
                finished_at=NOW + timedelta(seconds=5),
                counts={"invoices": 1},
                error="OperationalError: server closed the connection",
            ),
            ScheduledRun(name="other.job", status="running", started_at=NOW, counts={}),
        ]
    )
    db.commit()

    run = tables.last_run(db)
    assert run is not None
    assert (run.status, run.run_date, run.counts, run.error) == (
        "failed",
        date(2026, 11, 25),
        {"invoices": 1},
        "OperationalError: server closed the connection",
    )
    assert tables.last_successes(db) == {"invoices.run": NOW - day + timedelta(minutes=3)}


def test_compaction_folds_old_minutes_and_keeps_every_total(
    session_factory: SessionFactory,
) -> None:
    for hours_ago, outcome, runtime in [
        (72, "succeeded", 1.0),
        (72, "succeeded", 2.0),
        (50, "failed", 4.0),
        (49, "succeeded", 8.0),
        (1, "succeeded", 16.0),
        (0, "retried", 32.0),
    ]:
        task_stats.record_outcome(
            session_factory, "emails.deliver", outcome, runtime, at=NOW - timedelta(hours=hours_ago)
        )
    with session_factory() as session:
        totals_before = stats.outcome_totals(session)
        last_hour_before = stats.last_hour(session, now=NOW)

    folded = task_stats.compact(session_factory, keep=timedelta(hours=48), now=NOW)

    assert folded == 3  # the minutes 72 h (one row, two runs), 50 h and 49 h ago
    with session_factory() as session:
        assert stats.outcome_totals(session) == totals_before
        assert stats.last_hour(session, now=NOW) == last_hour_before
        buckets = sorted(set(session.scalars(select(TaskStat.bucket))))
    assert buckets == [
        task_stats.ALL_EARLIER,
        (NOW - timedelta(hours=1)).replace(second=0),
        NOW.replace(second=0),
    ]

    # Again, later, with more old minutes: the all-time rows grow, nothing is counted twice.
    assert task_stats.compact(session_factory, keep=timedelta(hours=48), now=NOW) == 0
    task_stats.compact(session_factory, keep=timedelta(hours=48), now=NOW + timedelta(hours=50))
    with session_factory() as session:
        assert stats.outcome_totals(session) == totals_before
        rows = session.execute(select(TaskStat.bucket, TaskStat.outcome, TaskStat.count)).all()
    assert sorted((b == task_stats.ALL_EARLIER, o, n) for b, o, n in rows) == [
        (True, "failed", 1),
        (True, "retried", 1),
        (True, "succeeded", 4),
    ]


def test_table_sizes_of_the_growing_tables_with_their_retention(db: Session) -> None:
    db.add_all(
        ProcessedEvent(event_id=f"E{n}", task_name="clients.add", payload_sha256=None)
        for n in range(3)
    )
    db.flush()
    postgres = db.get_bind().dialect.name == "postgresql"
    if postgres:  # its figures are the planner's statistics, which ANALYZE brings up to date
        db.execute(text("ANALYZE processed_events"))
    settings = Settings(processed_events_keep_days=30, audit_keep_days=0)

    sizes = {t.table: t for t in storage.table_sizes(db, settings)}

    assert list(sizes) == [
        "processed_events", "email_messages", "rejected_events", "audit_events",
        "scheduled_run_chunks", "dead_letters",
    ]  # fmt: skip
    assert sizes["processed_events"].rows == 3
    assert sizes["email_messages"].rows == 0
    assert sizes["processed_events"].kept == "30 days"
    assert sizes["email_messages"].kept == "90 days (bodies)"
    assert sizes["audit_events"].kept == "for ever"
    assert sizes["dead_letters"].kept == "until purged"
    assert sizes["scheduled_run_chunks"].kept == "90 days (finished runs)"
    if postgres:
        assert all(t.bytes is not None and t.bytes > 0 for t in sizes.values())
    else:
        assert all(t.bytes is None for t in sizes.values())
