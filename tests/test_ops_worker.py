"""`clientflow ops` against real Redis, PostgreSQL and a real worker: status, exporter, ping."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import payloads
import pytest
from ops_helpers import exporter, run_ops, scrape, status_json
from servers import free_port
from smtp_sink import SmtpSink
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from worker_process import WorkerProcess, wait_until, worker_fixture

from models.base import utcnow
from models.ops import ScheduledRun, TaskStat
from services import task_stats
from workers.ops.queues import read_queues

pytestmark = pytest.mark.worker

QUEUES = ["celery", "emails", "events", "invoice_run"]

worker = worker_fixture()
stopped_worker = worker_fixture(name="stopped_worker", start=False)


@pytest.fixture
def worker_without_smtp(
    redis_url: str, new_postgres_database: Callable[[], str], tmp_path: Path
) -> Iterator[WorkerProcess]:
    """A worker whose SMTP server never answers, so every delivery is retried."""
    process = WorkerProcess(
        broker_url=redis_url,
        database_url=new_postgres_database(),
        smtp_url=f"smtp://127.0.0.1:{free_port()}",
        workdir=tmp_path / "worker",
        extra_settings={"smtp_timeout": "2"},
    )
    try:
        process.start()
        yield process
    finally:
        process.close()


def counted(worker: WorkerProcess, task_name: str, outcome: str) -> int:
    with worker.sessions() as session:
        return _count(session, task_name, outcome)


def _count(session: Session, task_name: str, outcome: str) -> int:
    total = session.scalar(
        select(func.sum(TaskStat.count)).where(
            TaskStat.task_name == task_name, TaskStat.outcome == outcome
        )
    )
    return int(total or 0)


def test_queue_depth_is_what_was_published_while_no_worker_runs(
    stopped_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    worker = stopped_worker
    before_first = time.time()
    first = payloads.client("C0")
    worker.publish("clients.add", first)
    after_first = time.time()
    events = [first] + [payloads.client(f"C{i}") for i in range(1, 5)]
    for payload in events[1:]:
        worker.publish("clients.add", payload)
    worker.app.send_task("emails.deliver", kwargs={"message_ids": []})

    # The oldest message is the first one published (kombu pushes left, workers pop right).
    readings = {r.name: r for r in read_queues(worker.app)}
    oldest = readings["events"].oldest_published_at
    assert oldest is not None
    assert before_first <= oldest <= after_first

    snapshot = status_json(worker)
    depth = {q.name: q.depth for q in snapshot.queues}
    assert depth == {"celery": 0, "emails": 1, "events": 5, "invoice_run": 0}
    by_name = {q.name: q for q in snapshot.queues}
    assert by_name["events"].oldest_age_seconds is not None
    assert by_name["celery"].oldest_age_seconds is None
    assert by_name["events"].unacked == 0
    assert snapshot.workers == []
    assert snapshot.problems == []
    done = run_ops(worker, "status", check=False)
    assert done.returncode == 1  # no worker online
    human = done.stdout
    assert "Workers: none online" in human
    # The queue's name, padded to the longest (invoice_run), then its depth.
    assert re.search(r"\bevents +│ +5 ", human), human

    worker.start()
    worker.wait_applied(*(p["event_id"] for p in events))
    smtp.wait_for(5)
    worker.wait_idle()
    wait_until(lambda: counted(worker, "clients.add", "succeeded") == 5, "5 counted runs")

    snapshot = status_json(worker)
    assert {q.name: q.depth for q in snapshot.queues} == dict.fromkeys(QUEUES, 0)
    assert snapshot.workers is not None
    assert [(w.name, w.queues) for w in snapshot.workers] == [(worker.hostname, QUEUES)]
    outcomes = {t.task_name: t for t in snapshot.tasks_last_hour or []}
    assert (outcomes["clients.add"].succeeded, outcomes["clients.add"].failed) == (5, 0)
    assert snapshot.emails is not None
    assert snapshot.emails.sent == 5


def test_failed_retried_and_rejected_runs_show_in_status_and_exporter(
    worker_without_smtp: WorkerProcess,
) -> None:
    worker = worker_without_smtp
    worker.publish("emails.deliver", {"message_ids": 5})  # not a list: fails, not retried
    payload = payloads.client("C1")
    worker.publish("clients.add", payload)  # its welcome email meets no SMTP server: retried
    worker.publish("clients.add", payloads.client("C2", country="XX"))  # refused: rejected
    worker.wait_applied(payload["event_id"])
    worker.wait_rejected(1)
    wait_until(lambda: counted(worker, "emails.deliver", "failed") == 1, "the failure counted")
    wait_until(lambda: counted(worker, "emails.deliver", "retried") >= 1, "a retry counted")
    wait_until(lambda: counted(worker, "clients.add", "rejected") == 1, "the refusal counted")

    snapshot = status_json(worker)
    outcomes = {t.task_name: t for t in snapshot.tasks_last_hour or []}
    assert outcomes["emails.deliver"].failed == 1
    assert outcomes["emails.deliver"].retried >= 1
    assert (outcomes["clients.add"].succeeded, outcomes["clients.add"].rejected) == (1, 1)
    assert snapshot.dead_letters is not None
    assert snapshot.dead_letters.total == 1
    (reason,) = snapshot.dead_letters.by_reason
    assert reason.reason == (
        "invalid arguments, not retried: message_ids: Input should be a valid list"
    )
    assert snapshot.emails is not None
    assert snapshot.emails.queued + snapshot.emails.sending == 1

    with exporter(worker) as url:
        samples = scrape(url)
    failed = counted(worker, "emails.deliver", "failed")
    assert (
        samples[
            ("clientflow_task_outcomes_total", (("outcome", "failed"), ("task", "emails.deliver")))
        ]
        == failed
    )
    assert (
        samples[
            ("clientflow_task_outcomes_total", (("outcome", "retried"), ("task", "emails.deliver")))
        ]
        >= 1
    )
    assert (
        samples[
            ("clientflow_task_outcomes_total", (("outcome", "rejected"), ("task", "clients.add")))
        ]
        == 1
    )
    assert (
        samples[
            (
                "clientflow_task_runtime_seconds_total",
                (("outcome", "succeeded"), ("task", "clients.add")),
            )
        ]
        > 0
    )
    assert samples[("clientflow_dead_letters", (("state", "new"),))] == 1
    assert samples[("clientflow_workers_online", ())] == 1
    assert samples[("clientflow_broker_up", ())] == 1
    assert samples[("clientflow_database_up", ())] == 1
    # The welcome email: still being retried, or failed once its attempts ran out.
    emails = [samples[("clientflow_emails", (("status", s),))] for s in ("queued", "sending",
                                                                          "failed")]  # fmt: skip
    assert sum(emails) == 1
    for queue in QUEUES:
        assert ("clientflow_queue_messages", (("queue", queue),)) in samples
        assert ("clientflow_queue_oldest_message_age_seconds", (("queue", queue),)) in samples
    for table in ("processed_events", "email_messages", "audit_events", "dead_letters"):
        assert samples[("clientflow_table_bytes", (("table", table),))] > 0
        assert ("clientflow_table_rows", (("table", table),)) in samples


def test_a_countdown_task_is_shown_as_unacked_and_scheduled(worker: WorkerProcess) -> None:
    payload = payloads.client("C1")
    worker.app.send_task("clients.add", kwargs=payload, countdown=600)

    def held() -> bool:
        snapshot = status_json(worker)
        events = next(q for q in snapshot.queues if q.name == "events")
        return events.unacked == 1 and events.scheduled == 1 and events.depth == 0

    wait_until(held, "the countdown task held by the worker")
    snapshot = status_json(worker)
    assert snapshot.workers is not None
    assert [w.scheduled for w in snapshot.workers] == [1]


def test_ping_answers_zero_with_a_worker_and_one_without(stopped_worker: WorkerProcess) -> None:
    down = run_ops(stopped_worker, "ping", check=False)
    assert down.returncode == 1, down.stdout
    assert "FAIL workers: no worker answered" in down.stdout
    assert "ok   broker" in down.stdout
    assert "ok   database" in down.stdout

    stopped_worker.start()
    up = run_ops(stopped_worker, "ping")
    assert f"ok   workers: {stopped_worker.hostname}" in up.stdout


def test_housekeeping_folds_old_counters_and_abandons_dead_runs_on_a_real_worker(
    worker: WorkerProcess,
) -> None:
    long_ago = utcnow() - timedelta(days=5)
    for _ in range(3):
        task_stats.record_outcome(worker.sessions, "clients.add", "succeeded", 0.1, at=long_ago)
    with worker.sessions() as session:
        # A run whose worker was killed a day ago, and one making progress now.
        session.add_all(
            [
                ScheduledRun(name="invoices.run", status="running", started_at=long_ago),
                ScheduledRun(name="invoices.run", status="running", heartbeat_at=utcnow()),
            ]
        )
        session.commit()
    worker.publish("ops.housekeeping", {})

    def folded(session: Session) -> bool:
        buckets = set(
            session.scalars(select(TaskStat.bucket).where(TaskStat.task_name == "clients.add"))
        )
        return buckets == {task_stats.ALL_EARLIER}

    worker.wait_for_db(folded, "the old minute folded into the all-time row")
    assert counted(worker, "clients.add", "succeeded") == 3
    wait_until(
        lambda: counted(worker, "ops.housekeeping", "succeeded") == 1,
        "the housekeeping counted as a succeeded task",
    )
    with worker.sessions() as session:
        runs = session.scalars(select(ScheduledRun).order_by(ScheduledRun.id)).all()
    assert [run.status for run in runs] == ["abandoned", "running"]
    assert "its worker was lost" in (runs[0].error or "")
