"""An invoice run fanned out: its chunks taken by two workers (distinct node names, one
broker, one database, one SMTP sink), and a chunk that keeps failing on a real worker."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import payloads
import pytest
from smtp_sink import SmtpSink
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from test_cli import run_cli
from test_invoice_worker import load
from worker_process import WorkerProcess, worker_crew, worker_fixture

from models.billing import InvoiceNotice
from models.dead_letters import DeadLetter
from models.ops import ScheduledRun, ScheduledRunChunk
from services.dead_letters import replay

pytestmark = pytest.mark.worker

# What Celery logs when a pool process finishes a chunk task.
CHUNK_DONE = re.compile(r"Task invoices\.run_chunk\[[^\]]+\] succeeded")
DELIVERY_DONE = re.compile(r"Task emails\.deliver\[[^\]]+\] succeeded")


def the_run_ended(session: Session) -> list[ScheduledRun]:
    """[the run] once it has ended; [] before."""
    return [run for run in session.scalars(select(ScheduledRun)) if run.finished_at is not None]


def test_a_run_fans_out_over_two_workers_and_sends_every_notice_once(
    redis_url: str, new_postgres_database: Callable[[], str], smtp: SmtpSink, tmp_path: Path
) -> None:
    clients, invoices, services = 20, 400, 40
    with worker_crew(
        ["north@host-a", "south@host-b"],
        broker_url=redis_url,
        database_url=new_postgres_database(),
        smtp_url=smtp.url,
        root=tmp_path,
        concurrency=1,
        # Chunks of 20: the services make 2 generation chunks, the 440 invoices (40 of them
        # generated) 22 notice chunks.
        extra_settings={"invoice_batch_size": "10", "invoice_chunk_size": "20"},
    ) as crew:
        first = crew[0]
        for c in range(clients):
            load(first, "clients.add", payloads.client(f"C{c}", send_welcome=False))
        for i in range(invoices):
            load(first, "invoices.upsert", payloads.invoice(f"I{i:04d}", f"C{i % clients}"))
        for s in range(services):
            service = payloads.service(f"S{s:03d}", f"C{s % clients}", "2026-03-10")
            load(first, "services.upsert", service)

        first.publish("invoices.run", {"run_date": "2026-03-01"})
        (run,) = first.wait_for_db(the_run_ended, "the invoice run to end", timeout=180)
        first.wait_no_email_owed(timeout=180)
        first.wait_idle(timeout=60)
        ran = {worker.hostname: len(CHUNK_DONE.findall(worker.log_text())) for worker in crew}
        deliveries = sum(len(DELIVERY_DONE.findall(worker.log_text())) for worker in crew)
        print(f"\nchunk tasks per worker: {ran}")
        assert all(worker.alive for worker in crew)
        with first.sessions() as session:
            notices = session.scalars(select(InvoiceNotice)).all()
            chunks = session.scalars(select(ScheduledRunChunk)).all()
            dead = session.scalars(select(DeadLetter)).all()

    assert (run.status, run.error) == ("succeeded", None)
    owed = invoices + services
    assert run.counts["generated"] == services
    assert run.counts["notices"]["invoice_created"] == owed
    assert run.counts["emails"] == owed  # the holder of each
    assert run.counts["chunks"] == {"planned": 24, "done": 24, "failed": 0}
    assert sorted((c.phase, c.status) for c in chunks) == sorted(
        [("generate", "done")] * 2 + [("notify", "done")] * 22
    )
    # Both workers took chunks, and between them every chunk ran once.
    assert sum(ran.values()) == 24, ran
    assert all(ran.values()), f"one worker took every chunk: {ran}"
    assert len(notices) == owed
    assert {n.run_id for n in notices} == {run.id}
    assert dead == []

    per_notice = Counter(
        (m.message["X-Clientflow-Event-Id"], address.lower())
        for m in smtp.messages
        for address in m.rcpt_tos
    )
    assert len(smtp.messages) == owed
    assert set(per_notice.values()) == {1}
    # Each chunk sent its batches' emails itself, after each commit: no delivery task ran.
    assert deliveries == 0
    assert {event for event, _ in per_notice} == {
        f"invoice:{n.invoice_id}:invoice_created" for n in notices
    }


# Three attempts per chunk, a second or two apart (the fixture's backoff).
impatient_worker = worker_fixture(
    name="impatient_worker",
    extra_settings={
        "invoice_batch_size": "5",
        "invoice_chunk_size": "10",
        "event_max_retries": "2",
    },
)

# Refuses the notice of one invoice as a database would under a lock it cannot get
# (SQLSTATE 55P03, an OperationalError: transient, so retried), every time.
REFUSE = """
CREATE FUNCTION refuse_i15() RETURNS trigger AS $$
BEGIN
  IF NEW.invoice_id = 'I15' THEN
    RAISE EXCEPTION 'refused for the test' USING ERRCODE = '55P03';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_i15 BEFORE INSERT ON invoice_notices
  FOR EACH ROW EXECUTE FUNCTION refuse_i15();
"""


def test_a_chunk_that_keeps_failing_fails_the_run_with_its_reason(
    impatient_worker: WorkerProcess, smtp: SmtpSink, tmp_path: Path
) -> None:
    worker = impatient_worker
    load(worker, "clients.add", payloads.client("C1", send_welcome=False))
    for i in range(30):
        load(worker, "invoices.upsert", payloads.invoice(f"I{i:02d}"))
    with worker.sessions() as session:
        session.execute(text(REFUSE))
        session.commit()

    # By hand, on the workers: the command plans the run and follows it to its end.
    by_hand = run_cli(
        tmp_path,
        "invoices",
        "run",
        "--on-workers",
        "--date",
        "2026-03-01",
        check=False,
        broker_url=worker.broker_url,
        database_url=worker.database_url,
        data_dir=str(tmp_path),
        invoice_chunk_size="10",
        invoice_batch_size="5",
    )
    (run,) = worker.wait_for_db(the_run_ended, "the invoice run to end")
    assert by_hand.returncode == 1, by_hand.stderr
    assert f"Invoice run {run.id} for 2026-03-01: failed" in by_hand.stdout
    assert "chunk notify 2 of run" in by_hand.stdout

    # Chunks I00-I09 and I20-I29 done; of I10-I19 the batch I10-I14 committed, then I15-I19
    # failed three times.
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith(
        f"chunk notify 2 of run {run.id}: gave up after 3 attempts: OperationalError"
    ), run.error
    assert "refused for the test" in run.error
    assert run.counts["notices"]["invoice_created"] == 25
    assert run.counts["chunks"] == {"planned": 3, "done": 2, "failed": 1}

    def letter(session: Session) -> Any:
        return session.scalars(select(DeadLetter)).first()

    buried = worker.wait_for_db(letter, "the chunk's dead letter")
    assert buried.task_name == "invoices.run_chunk"
    assert buried.kwargs == {"run_id": run.id, "phase": "notify", "seq": 2}
    assert buried.reason.startswith("gave up after 3 attempts: OperationalError")
    assert len(buried.errors) == 3

    # The cause fixed, the dead letter replayed: the chunk's work is done and counted; the
    # run keeps the end it had.
    _replay_fixed_chunk(worker, smtp, run, buried.id, "refuse_i15")


# One pool process; no soft limit, so nothing asks the chunk to stop before billiard kills its
# pool process at the hard one (2 s).
hard_limited_worker = worker_fixture(
    name="hard_limited_worker",
    concurrency=1,
    extra_settings={
        "invoice_batch_size": "5",
        "invoice_chunk_size": "10",
        "task_soft_time_limit": "0",
        "task_time_limit": "2",
    },
)

# Holds the notice of one invoice past the hard limit (the killed process's transaction is
# rolled back once PostgreSQL finds its client gone).
HANG = """
CREATE FUNCTION hang_i15() RETURNS trigger AS $$
BEGIN
  IF NEW.invoice_id = 'I15' THEN
    PERFORM pg_sleep(6);
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER hang_i15 BEFORE INSERT ON invoice_notices
  FOR EACH ROW EXECUTE FUNCTION hang_i15();
"""


def test_a_chunk_killed_at_its_hard_time_limit_fails_the_run_at_once_with_its_reason(
    hard_limited_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    worker = hard_limited_worker
    load(worker, "clients.add", payloads.client("C1", send_welcome=False))
    for i in range(30):
        load(worker, "invoices.upsert", payloads.invoice(f"I{i:02d}"))
    with worker.sessions() as session:
        session.execute(text(HANG))
        session.commit()

    worker.publish("invoices.run", {"run_date": "2026-03-01"})

    # Ended by its chunks, not by the stale-run sweep (15 minutes, and not run here).
    (run,) = worker.wait_for_db(the_run_ended, "the invoice run to end", timeout=90)
    assert "Hard time limit (2.0s) exceeded for invoices.run_chunk" in worker.log_text()
    assert run.status == "failed"
    assert run.error == (
        f"chunk notify 2 of run {run.id}: hard time limit (2.0 s) exceeded: the pool process "
        "was killed and the task is not retried, as it may hang again; replay it once the "
        "cause is fixed (an event applied before the limit is then a duplicate and changes "
        "nothing)"
    ), run.error
    # I00-I09 and I20-I29 done; of I10-I19 the batch I10-I14 committed before I15 hung.
    assert run.counts["notices"]["invoice_created"] == 25
    assert run.counts["emails"] == 25
    assert run.counts["chunks"] == {"planned": 3, "done": 2, "failed": 1}
    with worker.sessions() as session:
        chunks = {c.seq: (c.status, c.error) for c in session.scalars(select(ScheduledRunChunk))}
        letters = session.scalars(select(DeadLetter)).all()
    assert chunks[2] == ("failed", run.error.partition(": ")[2])
    assert (chunks[1][0], chunks[3][0]) == ("done", "done")
    (buried,) = letters
    assert buried.task_name == "invoices.run_chunk"
    assert buried.kwargs == {"run_id": run.id, "phase": "notify", "seq": 2}
    assert worker.alive

    # The cause fixed, the dead letter replayed: the chunk's work is done and counted once;
    # the run keeps the end it had.
    final = _replay_fixed_chunk(worker, smtp, run, buried.id, "hang_i15")
    assert final.counts["chunks"] == {"planned": 3, "done": 3, "failed": 0}


def _replay_fixed_chunk(
    worker: WorkerProcess, smtp: SmtpSink, run: ScheduledRun, letter_id: int, trigger: str
) -> ScheduledRun:
    """Drop the trigger that broke chunk 2, replay its dead letter, and check the run: the
    chunk counted, the run's end unchanged, every one of the 30 notices sent exactly once."""
    with worker.sessions() as session:
        session.execute(text(f"DROP TRIGGER {trigger} ON invoice_notices"))
        session.commit()
    assert replay(worker.sessions, worker.publish) == [letter_id]

    def counted_in(session: Session) -> list[ScheduledRun]:
        again = session.get(ScheduledRun, run.id)
        return [again] if again is not None and again.counts["chunks"]["done"] == 3 else []

    (final,) = worker.wait_for_db(counted_in, "the replayed chunk counted in its run")
    worker.wait_no_email_owed()
    worker.wait_idle()
    assert (final.status, final.finished_at) == ("failed", run.finished_at)
    assert final.counts["notices"]["invoice_created"] == 30
    events = Counter(m.message["X-Clientflow-Event-Id"] for m in smtp.messages)
    assert sorted(events) == sorted(f"invoice:I{i:02d}:invoice_created" for i in range(30))
    assert set(events.values()) == {1}
    return final
