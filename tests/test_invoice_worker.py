"""The invoice run through a real worker: Redis, PostgreSQL, the SMTP sink, two runs at once,
a pool process killed mid-run (tests/test_invoice_fanout.py spreads one over two workers)."""

from __future__ import annotations

import os
import signal
from collections import Counter
from datetime import timedelta
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import payloads
import pytest
from smtp_sink import SmtpSink
from sqlalchemy import select
from sqlalchemy.orm import Session
from worker_process import WorkerProcess, worker_fixture

from models.billing import InvoiceNotice
from models.emails import EmailMessage, EmailStatus
from models.ops import ScheduledRun, ScheduledRunChunk
from services.dispatch import Outcome, process_event
from services.outbox import relay

pytestmark = pytest.mark.worker

CLIENTS = 30
INVOICES_PER_CLIENT = 4
# Small batches and chunks, so the two runs below interleave over many transactions and tasks.
stopped_worker = worker_fixture(
    name="stopped_worker",
    start=False,
    extra_settings={"invoice_batch_size": "8", "invoice_chunk_size": "24"},
)


def load(worker: WorkerProcess, task: str, payload: dict[str, Any]) -> None:
    """Apply an event straight to the worker's database (fast set-up; nothing to deliver)."""
    result = process_event(
        task,
        payload,
        session_factory=worker.sessions,
        publish=lambda name, kwargs: None,
        company_name="Test Hosting",
    )
    assert result.outcome is Outcome.APPLIED, result.reason


def runs_finished(count: int) -> Any:
    def check(session: Session) -> list[ScheduledRun]:
        runs = list(session.scalars(select(ScheduledRun).order_by(ScheduledRun.id)))
        return runs if len(runs) == count and all(r.finished_at for r in runs) else []

    return check


def test_two_runs_at_once_send_every_notice_exactly_once(
    stopped_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    worker = stopped_worker
    for c in range(CLIENTS):
        client_id = f"C{c}"
        load(worker, "clients.add", payloads.client(client_id, send_welcome=False))
        load(worker, "contacts.add", payloads.contact(f"B{c}", client_id))
        load(worker, "contacts.add", payloads.contact(f"K{c}", client_id, "invoice"))
        load(worker, "clients.set_billing_contact", payloads.event(client_id, contact_id=f"B{c}"))
        for i in range(INVOICES_PER_CLIENT):
            load(worker, "invoices.upsert", payloads.invoice(f"I{c}-{i}", client_id))
    invoices = CLIENTS * INVOICES_PER_CLIENT

    # Both published before the worker starts, so its two pool processes take one each; then
    # the chunks of both (five each) are taken by whichever process is free.
    for _ in range(2):
        worker.publish("invoices.run", {"run_date": "2026-03-01"})
    worker.start()
    runs = worker.wait_for_db(runs_finished(2), "both invoice runs finished", timeout=120)
    worker.wait_no_email_owed(timeout=120)
    worker.wait_idle(timeout=60)

    assert [r.status for r in runs] == ["succeeded", "succeeded"], [r.error for r in runs]
    assert [r.counts["chunks"] for r in runs] == [{"planned": 5, "done": 5, "failed": 0}] * 2
    first, second = runs
    assert first.finished_at is not None
    assert second.finished_at is not None
    # They really ran at the same time...
    assert first.started_at < second.finished_at
    assert second.started_at < first.finished_at
    # ...and between them sent each Invoice Created once.
    created = [r.counts["notices"]["invoice_created"] for r in runs]
    assert sum(created) == invoices, created

    messages = smtp.messages
    assert len(messages) == invoices * 3  # holder, billing contact, invoice contact
    per_notice_and_address = Counter(
        (m.message["X-Clientflow-Event-Id"], address.lower())
        for m in messages
        for address in m.rcpt_tos
    )
    assert set(per_notice_and_address.values()) == {1}
    assert {event for event, _ in per_notice_and_address} == {
        f"invoice:I{c}-{i}:invoice_created"
        for c in range(CLIENTS)
        for i in range(INVOICES_PER_CLIENT)
    }
    sample = next(
        m.message
        for m in messages
        if m.message["X-Clientflow-Event-Id"] == "invoice:I7-2:invoice_created"
        and "b7@example.com" in m.rcpt_tos
    )
    assert getaddresses([str(sample["To"])]) == [("Charles B7", "b7@example.com")]
    assert sample["X-Clientflow-Template"] == "invoice_created"
    html = sample.get_body(("html",))
    assert html is not None
    assert "<table" in html.get_content()
    assert "£1,215.59" in html.get_content()

    with worker.sessions() as session:
        rows = session.scalars(select(InvoiceNotice)).all()
        assert len(rows) == invoices
        assert {r.run_id for r in rows} <= {first.id, second.id}
        statuses = Counter(session.scalars(select(EmailMessage.status)))
        assert statuses == {EmailStatus.SENT: invoices * 3}

    # Beat firing again the same day (or the next) sends nothing more, a reminder later does.
    worker.publish("invoices.run", {"run_date": "2026-03-02"})
    worker.publish("invoices.run", {"run_date": "2026-03-08"})
    worker.wait_for_db(runs_finished(4), "two more runs finished", timeout=120)
    worker.wait_no_email_owed(timeout=120)
    worker.wait_idle(timeout=60)
    reminders = [
        m for m in smtp.messages if m.message["X-Clientflow-Template"] == "invoice_payment_reminder"
    ]
    assert len(smtp.messages) == invoices * 6
    assert len(reminders) == invoices * 3


# Not on `emails`, and its chunks do not send: the kill below must hit a chunk, not a
# delivery (whose claimed emails would wait out their lease). A second worker delivers once
# the run has ended.
crash_worker = worker_fixture(
    name="crash_worker",
    concurrency=1,
    extra_settings={
        "invoice_batch_size": "5",
        "invoice_chunk_size": "300",
        "invoice_run_delivers": "false",
    },
    queues=["events", "invoice_run"],
)


def test_a_run_whose_pool_process_is_killed_goes_on_and_ends_with_exact_counts(
    crash_worker: WorkerProcess, smtp: SmtpSink, tmp_path: Path
) -> None:
    worker = crash_worker
    invoices = 600
    for c in range(20):
        load(worker, "clients.add", payloads.client(f"C{c}", send_welcome=False))
    for i in range(invoices):
        load(worker, "invoices.upsert", payloads.invoice(f"I{i:04d}", f"C{i % 20}"))
    (pool_process,) = worker.pool_pids()

    worker.publish("invoices.run", {"run_date": "2026-03-01"})

    def chunk_half_way(session: Session) -> bool:
        # 10 of its 60 batches committed: the kill lands well before the chunk's end.
        return any(
            chunk.status == "pending" and chunk.counts["batches"]["notify"] >= 10
            for chunk in session.scalars(select(ScheduledRunChunk))
        )

    worker.wait_for_db(chunk_half_way, "a chunk's first batches")
    # The pool process dies mid-chunk, as on an OOM kill; the chunk's task was not
    # acknowledged, so the worker requeues it (task_reject_on_worker_lost) and a new pool
    # process runs it again: the same run goes on from the chunk's last committed batch.
    os.kill(pool_process, signal.SIGKILL)
    runs = worker.wait_for_db(
        lambda s: [r for r in s.scalars(select(ScheduledRun)) if r.finished_at is not None],
        "the invoice run to end",
        timeout=120,
    )
    # What beat's outbox relay would do: publish a delivery whose batch committed just before
    # the kill, had there been one.
    relay(
        worker.sessions,
        worker.publish,
        min_age=timedelta(0),
        sending_lease=timedelta(hours=1),
        forgotten_after=timedelta(hours=2),
    )
    postman = WorkerProcess(
        broker_url=worker.broker_url,
        database_url=worker.database_url,
        smtp_url=smtp.url,
        workdir=tmp_path / "postman",
        flush=False,
        queues=["emails"],
    )
    try:
        postman.start()
        worker.wait_no_email_owed(timeout=120)
        worker.wait_idle(timeout=60)
    finally:
        postman.close()

    (run,) = runs
    assert (run.status, run.error) == ("succeeded", None)
    # The killed chunk's finished batches and its second delivery's add up to it once.
    assert run.counts["notices"]["invoice_created"] == invoices
    assert run.counts["emails"] == invoices
    assert run.counts["chunks"] == {"planned": 2, "done": 2, "failed": 0}
    with worker.sessions() as session:
        assert set(session.scalars(select(InvoiceNotice.run_id))) == {run.id}

    events = Counter(m.message["X-Clientflow-Event-Id"] for m in smtp.messages)
    assert len(events) == invoices
    assert set(events.values()) == {1}
    assert "WorkerLostError" in worker.log_text()
