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
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import redis
from aiosmtpd.controller import Controller
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.emails import EmailMessage, EmailStatus  # noqa: E402
from models.ops import ScheduledRun  # noqa: E402
from services.db import make_engine, make_session_factory  # noqa: E402
from workers import migrate  # noqa: E402
from workers.app import create_app  # noqa: E402
from workers.settings import Settings  # noqa: E402

RUN_DATE = date(2026, 3, 1)
NOOP_TASK = "celery.accumulate"  # Celery's built-in task that only returns its arguments


class CountingSink:
    """aiosmtpd handler that counts messages and keeps nothing, so the sink stays small."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.count += 1
        return "250 OK"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- data -----------------------------------------------------------------------------------


def load(database_url: str, invoices: int, clients: int, seed: int = 7) -> int:
    """COPY clients, contacts and unpaid invoices in; returns the emails the run will owe."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    url = make_url(database_url).set(drivername="postgresql")
    owed = 0
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        # Per client: a billing contact (half), the holder's invoice mail (nine in ten), an
        # extra contact ticked for invoice (a fifth). All addresses differ, so they add up.
        flags = [
            (rng.random() < 0.5, rng.random() >= 0.1, rng.random() < 0.2) for _ in range(clients)
        ]
        per_client = [sum(f) for f in flags]
        with conn.cursor().copy(
            "COPY clients (id, firstname, lastname, companyname, email, address1, city, state,"
            " postcode, country, phonenumber, status, billing_contact_id, invoice_emails,"
            " created_at, updated_at) FROM STDIN"
        ) as copy:
            for c, (billing, holder, _ticked) in enumerate(flags):
                copy.write_row(
                    (f"C{c}", "Ada", f"Client{c}", f"Company {c}", f"c{c}@bench.example",
                     f"{c} Main Street", "London", "Greater London", "SW1Y 4JH", "GB",
                     "+44 20 7946 0000", "Active", f"B{c}" if billing else None, holder, now, now)
                )  # fmt: skip
        with conn.cursor().copy(
            "COPY contacts (id, client_id, firstname, lastname, email, address1, city, country,"
            " general, product, domain, invoice, support, created_at, updated_at) FROM STDIN"
        ) as copy:
            for c, (_billing, _holder, ticked) in enumerate(flags):
                copy.write_row(
                    (f"B{c}", f"C{c}", "Charles", f"Billing{c}", f"b{c}@bench.example",
                     f"{c} Dorset Street", "London", "GB", False, False, False, False, False,
                     now, now)
                )  # fmt: skip
                copy.write_row(
                    (f"K{c}", f"C{c}", "Mary", f"Accounts{c}", f"k{c}@bench.example", None,
                     None, None, False, False, False, ticked, False, now, now)
                )  # fmt: skip
        with conn.cursor().copy(
            "COPY invoices (id, client_id, number, date, due_date, currency, items, subtotal,"
            " tax, total, balance, status, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(invoices):
                client = i % clients
                amount = Decimal(rng.randrange(500, 50_000)) / 100
                items = [
                    {"description": "Shared Hosting Pro (2026-03-15 - 2026-04-14)",
                     "amount": str(amount)},
                    {"description": "Domain renewal example.com", "amount": "12.99"},
                ]  # fmt: skip
                subtotal = amount + Decimal("12.99")
                tax = (subtotal * Decimal("0.2")).quantize(Decimal("0.01"))
                copy.write_row(
                    (f"I{i:07d}", f"C{client}", f"2026-{i:07d}", RUN_DATE,
                     RUN_DATE + timedelta(days=14), "GBP", json.dumps(items), subtotal, tax,
                     subtotal + tax, subtotal + tax, "Unpaid", now, now)
                )  # fmt: skip
                owed += per_client[client]
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("ANALYZE")
    return owed


# -- processes ------------------------------------------------------------------------------


@contextmanager
def worker(
    env: dict[str, str], concurrency: int, log: Path, queues: list[str]
) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "prefork",
        "--concurrency", str(concurrency), "-n", f"bench-{uuid.uuid4().hex[:8]}@localhost",
        "--loglevel", "WARNING", "--without-mingle", "--without-gossip",
        "-Q", ",".join(queues),
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def process_tree(pid: int) -> list[int]:
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = (task / "children").read_text().split()
            found += [int(child) for child in children]
            frontier += [int(child) for child in children]
    return found


def peak_rss_mib(pid: int) -> dict[int, float]:
    """VmHWM (the kernel's peak resident set) of the worker and each pool process, MiB."""
    peaks = {}
    for process in process_tree(pid):
        with suppress(FileNotFoundError):
            for line in Path(f"/proc/{process}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[process] = int(line.split()[1]) / 1024
    return peaks


def wait_until(check: Any, what: str, timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def broker_idle(client: redis.Redis, queues: list[str]) -> bool:
    pipe = client.pipeline()
    for queue in queues:
        pipe.llen(queue)
    pipe.hlen("unacked")
    return not any(pipe.execute())


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

        env = {k: v for k, v in os.environ.items() if not k.startswith("CLIENTFLOW_")}
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
