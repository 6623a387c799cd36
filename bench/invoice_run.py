"""Benchmark of the invoice notice run through real workers, next to a no-op Celery task.

    .venv/bin/python bench/invoice_run.py [--invoices 100000] [--clients N] [--concurrency 2]

Loads clients with contacts and unpaid invoices into a fresh PostgreSQL database (COPY),
starts a real `celery worker` on Redis, runs `invoices.run` through it to an in-process SMTP
sink until every email is delivered, then measures a no-op task over the same Redis and the
same worker. Prints invoices/s, emails/s, the workers' peak RSS, queries per batch and the
ratios to the no-op task. The database is dropped and the Redis database flushed at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    NOOP_TASK,
    RUN_DATE,
    broker_idle,
    environ_without_settings,
    free_port,
    load,
    peak_rss_mib,
    wait_until,
    worker,
)
from models.emails import EmailMessage, EmailStatus  # noqa: E402
from models.engine import make_engine  # noqa: E402
from models.ops import ScheduledRun  # noqa: E402
from models.settings import Settings  # noqa: E402
from services.db import make_session_factory  # noqa: E402
from workers import migrate  # noqa: E402
from workers.app import create_app  # noqa: E402


class CountingSink:
    """aiosmtpd handler that counts messages and keeps nothing, so the sink stays small."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.count += 1
        return "250 OK"


# -- the benchmark --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=None, help="default: invoices / 10")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--noop-tasks", type=int, default=10_000)
    parser.add_argument(
        "--skip-delivery",
        action="store_true",
        help="measure the run only: the worker does not consume `emails`, nothing is sent",
    )
    parser.add_argument(
        "--redis-url",
        # The tests' Redis database: both flush it, neither may share it with anything else.
        default=os.environ.get("CLIENTFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
        help="flushed before and after (default: $CLIENTFLOW_TEST_REDIS_URL or db 15)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "CLIENTFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="an admin URL; the benchmark creates and drops its own database",
    )
    args = parser.parse_args()
    clients = args.clients or max(1, args.invoices // 10)

    sys.path.insert(0, str(ROOT / "tests"))
    from servers import create_database, drop_database

    name = f"clientflow_bench_{uuid.uuid4().hex[:8]}"
    database_url = create_database(args.postgres_url, name)
    broker = redis.Redis.from_url(args.redis_url)
    broker.flushdb()
    sink = CountingSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    workdir = Path(f"/tmp/{name}")
    workdir.mkdir()
    try:
        migrate.upgrade(database_url)
        started = time.perf_counter()
        owed = load(database_url, args.invoices, clients)
        seconds = time.perf_counter() - started
        print(f"loaded {args.invoices:,} invoices and {clients:,} clients with contacts in "
              f"{seconds:.1f} s; the run owes {owed:,} emails")  # fmt: skip

        env = environ_without_settings()
        env.update(
            CLIENTFLOW_BROKER_URL=args.redis_url,
            CLIENTFLOW_DATABASE_URL=database_url,
            CLIENTFLOW_SMTP_URL=f"smtp://127.0.0.1:{controller.port}",
            CLIENTFLOW_DATA_DIR=str(workdir),
            CLIENTFLOW_INVOICE_BATCH_SIZE=str(args.batch_size),
        )
        app = create_app(Settings(broker_url=args.redis_url))
        queues = sorted(app.amqp.queues)
        if args.skip_delivery:
            queues.remove("emails")
        with worker(env, args.concurrency, workdir / "worker.log", queues) as proc:
            wait_until(lambda: app.control.ping(timeout=0.5), "the worker to answer", 60)
            sink.count = 0  # aiosmtpd's readiness probe is not ours

            def run_row() -> ScheduledRun | None:
                with sessions() as session:
                    return session.scalars(select(ScheduledRun)).first()

            def sent() -> int:
                with sessions() as session:
                    query = select(func.count()).where(EmailMessage.status == EmailStatus.SENT)
                    return session.scalar(query) or 0

            started = time.perf_counter()
            app.send_task("invoices.run", kwargs={"run_date": RUN_DATE.isoformat()})
            run = wait_until(
                lambda: (r := run_row()) is not None and r.finished_at is not None and r,
                "the invoice run to finish",
                timeout=3600,
            )
            assert run  # wait_until returns only a truthy value: the finished run
            run_seconds = time.perf_counter() - started
            if not args.skip_delivery:
                wait_until(lambda: sent() >= owed, "every email delivered", 3600, interval=1)
            all_seconds = time.perf_counter() - started
            wait_until(lambda: broker_idle(broker, queues), "an idle broker", 120)
            main_pid, peaks = proc.pid, peak_rss_mib(proc.pid)

            noop_started = time.perf_counter()
            with app.producer_or_acquire() as producer:
                for _ in range(args.noop_tasks):
                    app.send_task(NOOP_TASK, args=(1,), producer=producer)
            wait_until(lambda: broker_idle(broker, queues), "the no-op tasks", 600, 0.05)
            noop_seconds = time.perf_counter() - noop_started
        assert run.status == "succeeded", run.error
        report(args, clients, owed, run, run_seconds, all_seconds, sink.count, main_pid, peaks,
               args.noop_tasks / noop_seconds)  # fmt: skip
    finally:
        controller.stop()
        engine.dispose()
        broker.flushdb()
        drop_database(args.postgres_url, name)


def report(
    args: argparse.Namespace,
    clients: int,
    owed: int,
    run: ScheduledRun,
    run_seconds: float,
    all_seconds: float,
    received: int,
    main_pid: int,
    peaks: dict[int, float],
    noop_per_second: float,
) -> None:
    counts = run.counts
    notices = sum(counts["notices"].values())
    handled = notices + counts["no_recipient"]  # invoices whose notice the run settled
    invoices_per_second = handled / run_seconds
    emails_per_second = received / all_seconds
    pool_peak = max(mib for pid, mib in peaks.items() if pid != main_pid)
    rows = [
        ("invoices / clients", f"{args.invoices:,} / {clients:,}"),
        ("worker pool processes", str(args.concurrency)),
        (
            "invoices handled (notice sent / no recipient)",
            f"{notices:,} / {counts['no_recipient']:,}",
        ),
        ("emails owed / received by the SMTP sink", f"{owed:,} / {received:,}"),
        ("run (generate + notices, emails queued)", f"{run_seconds:.1f} s"),
        (
            "until the last email was delivered",
            "skipped" if args.skip_delivery else f"{all_seconds:.1f} s",
        ),
        ("invoices/s (notice pass)", f"{invoices_per_second:,.0f}"),
        ("emails/s (end to end, delivered)", f"{emails_per_second:,.0f}"),
        ("peak RSS, worker main process", f"{peaks[main_pid]:.0f} MiB"),
        ("peak RSS, largest pool process", f"{pool_peak:.0f} MiB"),
        ("queries per batch (notice pass, most)", str(counts["queries_per_batch"]["notify"])),
        ("batches (notice pass)", str(counts["batches"]["notify"])),
        ("no-op Celery task/s, same worker and Redis", f"{noop_per_second:,.0f}"),
        ("ratio invoices/s : no-op task/s", f"{invoices_per_second / noop_per_second:.2f}"),
        ("ratio emails/s : no-op task/s", f"{emails_per_second / noop_per_second:.2f}"),
    ]
    if args.skip_delivery:
        rows = [row for row in rows if "emails/s" not in row[0]]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    if received != owed and not args.skip_delivery:
        raise SystemExit(f"the sink received {received} emails, {owed} were owed")


if __name__ == "__main__":
    main()
