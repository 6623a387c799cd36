"""Benchmark of the invoice run through real workers, next to a no-op Celery task.

    .venv/bin/python bench/invoice_run.py [--invoices 100000] [--clients N] [--concurrency 2]
        [--workers 1] [--chunk-size 2000] [--batch-size 500] [--skip-delivery]

Loads clients with contacts and unpaid invoices into a fresh PostgreSQL database (COPY),
starts `--workers` real `celery worker`s (each its own node name, `--concurrency` pool
processes) on Redis, runs `invoices.run` through them (its chunks spread over every pool
process) to an SMTP sink in a process of its own (postfix's smtp-sink, bench/sink.py) until
every email is delivered, then measures a no-op task over the same Redis and workers. Prints
invoices/s, emails/s, where the CPU went (workers, PostgreSQL, Redis, the sink, the rest of the
machine), the workers' peak RSS, queries per batch and the ratios to the no-op task. The
database is dropped and the Redis database flushed at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from servers import create_database, drop_database  # noqa: E402

from bench.cpu import BackendCpu, load_average, machine_seconds, process_seconds  # noqa: E402
from bench.harness import (  # noqa: E402
    NOOP_TASK,
    RUN_DATE,
    broker_idle,
    cpu_seconds,
    environ_without_settings,
    load,
    peak_rss_mib,
    wait_until,
    worker,
)
from bench.sink import Sink  # noqa: E402
from models.emails import EmailMessage, EmailStatus  # noqa: E402
from models.engine import make_engine  # noqa: E402
from models.ops import ScheduledRun  # noqa: E402
from models.settings import Settings  # noqa: E402
from services.db import make_session_factory  # noqa: E402
from workers import migrate  # noqa: E402
from workers.app import create_app  # noqa: E402


@dataclass
class Cpu:
    """CPU seconds used from the publish of invoices.run to the last email, by whom."""

    workers: float
    postgres: float
    redis: float
    sink: float
    machine_busy: float
    machine_all: float

    @property
    def rest(self) -> float:
        """The machine's busy time nobody above accounts for: other users, this script,
        PostgreSQL's background processes, the kernel's own work."""
        return self.machine_busy - self.workers - self.postgres - self.redis - self.sink


# -- the benchmark --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=None, help="default: invoices / 10")
    parser.add_argument(
        "--workers", type=int, default=1, help="celery workers, each with its own node name"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="default: CLIENTFLOW_INVOICE_CHUNK_SIZE's"
    )
    parser.add_argument("--noop-tasks", type=int, default=10_000)
    parser.add_argument(
        "--skip-delivery",
        action="store_true",
        help="measure the run only: the workers do not consume `emails`, nothing is sent",
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

    name = f"clientflow_bench_{uuid.uuid4().hex[:8]}"
    database_url = create_database(args.postgres_url, name)
    broker = redis.Redis.from_url(args.redis_url)
    broker.flushdb()
    workdir = Path(f"/tmp/{name}")
    workdir.mkdir()
    sink = Sink(workdir)
    sink.start()
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    try:
        migrate.upgrade(database_url)
        started = time.perf_counter()
        owed = load(database_url, args.invoices, clients)
        seconds = time.perf_counter() - started
        print(f"loaded {args.invoices:,} invoices and {clients:,} clients with contacts in "
              f"{seconds:.1f} s; the run owes {owed:,} emails; sink: {sink.kind}")  # fmt: skip

        env = environ_without_settings()
        env.update(
            CLIENTFLOW_BROKER_URL=args.redis_url,
            CLIENTFLOW_DATABASE_URL=database_url,
            CLIENTFLOW_SMTP_URL=sink.url,
            CLIENTFLOW_DATA_DIR=str(workdir),
            CLIENTFLOW_INVOICE_BATCH_SIZE=str(args.batch_size),
        )
        if args.chunk_size is not None:
            env["CLIENTFLOW_INVOICE_CHUNK_SIZE"] = str(args.chunk_size)
        app = create_app(Settings(broker_url=args.redis_url))
        queues = sorted(app.amqp.queues)
        if args.skip_delivery:
            queues.remove("emails")
        with ExitStack() as stack:
            procs = [
                stack.enter_context(
                    worker(env, args.concurrency, workdir / f"worker-{n}.log", queues)
                )
                for n in range(args.workers)
            ]
            wait_until(
                lambda: len(app.control.ping(timeout=0.5) or []) == args.workers,
                "every worker to answer",
                60,
            )

            def run_row() -> ScheduledRun | None:
                with sessions() as session:
                    return session.scalars(select(ScheduledRun)).first()

            def sent() -> int:
                with sessions() as session:
                    query = select(func.count()).where(EmailMessage.status == EmailStatus.SENT)
                    return session.scalar(query) or 0

            load_before = load_average()
            redis_pid = int(broker.info("server")["process_id"])
            backends = BackendCpu(args.postgres_url, name)
            backends.start()
            before = _cpu_now(procs, redis_pid, sink.pid)
            received_before = sink.received()  # the sink's readiness probe is not ours
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
            after = _cpu_now(procs, redis_pid, sink.pid)
            cpu = Cpu(
                workers=after[0] - before[0],
                postgres=backends.stop(),
                redis=after[1] - before[1],
                sink=after[2] - before[2],
                machine_busy=after[3] - before[3],
                machine_all=after[4] - before[4],
            )
            load_after = load_average()
            received = sink.received() - received_before
            wait_until(lambda: broker_idle(broker, queues), "an idle broker", 120)
            peaks = [peak_rss_mib(proc.pid) for proc in procs]
            main_pids = {proc.pid for proc in procs}

            noop_started = time.perf_counter()
            with app.producer_or_acquire() as producer:
                for _ in range(args.noop_tasks):
                    app.send_task(NOOP_TASK, args=(1,), producer=producer)
            wait_until(lambda: broker_idle(broker, queues), "the no-op tasks", 600, 0.05)
            noop_seconds = time.perf_counter() - noop_started
        assert run.status == "succeeded", run.error
        report(
            args,
            Measured(
                clients=clients,
                owed=owed,
                run=run,
                run_seconds=run_seconds,
                all_seconds=all_seconds,
                received=received,
                main_peak=max(mib for p in peaks for pid, mib in p.items() if pid in main_pids),
                pool_peak=max(
                    mib for p in peaks for pid, mib in p.items() if pid not in main_pids
                ),
                cpu=cpu,
                load=(load_before, load_after),
                noop_per_second=args.noop_tasks / noop_seconds,
            ),
        )
    finally:
        sink.stop()
        engine.dispose()
        broker.flushdb()
        drop_database(args.postgres_url, name)


def _cpu_now(
    procs: list[subprocess.Popen[bytes]], redis_pid: int, sink_pid: int
) -> tuple[float, float, float, float, float]:
    """(workers, Redis, sink, machine busy, machine all) CPU seconds so far."""
    busy, everything = machine_seconds()
    workers = sum(cpu_seconds(proc.pid) for proc in procs)
    return workers, process_seconds(redis_pid), process_seconds(sink_pid), busy, everything


@dataclass
class Measured:
    clients: int
    owed: int
    run: ScheduledRun
    run_seconds: float
    all_seconds: float
    received: int
    main_peak: float
    pool_peak: float
    cpu: Cpu
    load: tuple[str, str]
    noop_per_second: float


def report(args: argparse.Namespace, m: Measured) -> None:
    counts = m.run.counts
    notices = sum(counts["notices"].values())
    handled = notices + counts["no_recipient"]  # invoices whose notice the run settled
    invoices_per_second = handled / m.run_seconds
    emails_per_second = m.received / m.all_seconds
    cores = os.cpu_count() or 1
    cpu = m.cpu

    def share(seconds: float) -> str:
        """CPU seconds, and as a share of the machine over the window (cores x wall time)."""
        return f"{seconds:.1f} s ({seconds / (m.all_seconds * cores):.0%} of {cores} cores)"

    rows = [
        ("invoices / clients", f"{args.invoices:,} / {m.clients:,}"),
        ("workers x pool processes", f"{args.workers} x {args.concurrency}"),
        ("chunks (both passes) / batch size", f"{counts['chunks']['planned']} / {args.batch_size}"),
        (
            "invoices handled (notice sent / no recipient)",
            f"{notices:,} / {counts['no_recipient']:,}",
        ),
        ("emails owed / received by the SMTP sink", f"{m.owed:,} / {m.received:,}"),
        ("run (generate + notices, emails queued)", f"{m.run_seconds:.1f} s"),
        (
            "until the last email was delivered",
            "skipped" if args.skip_delivery else f"{m.all_seconds:.1f} s",
        ),
        ("invoices/s (notice pass)", f"{invoices_per_second:,.0f}"),
        ("emails/s (end to end, delivered)", f"{emails_per_second:,.0f}"),
        ("CPU: workers (main + pool processes)", share(cpu.workers)),
        ("CPU: PostgreSQL backends of the run's database", share(cpu.postgres)),
        ("CPU: Redis (the server, others' databases included)", share(cpu.redis)),
        ("CPU: SMTP sink", share(cpu.sink)),
        ("CPU: the rest of the machine (others, this script)", share(cpu.rest)),
        ("CPU: machine busy, all of it", share(cpu.machine_busy)),
        ("load average before / after", f"{m.load[0]} / {m.load[1]}"),
        ("peak RSS, worker main process (largest)", f"{m.main_peak:.0f} MiB"),
        ("peak RSS, largest pool process", f"{m.pool_peak:.0f} MiB"),
        ("queries per batch (notice pass, most)", str(counts["queries_per_batch"]["notify"])),
        ("batches (notice pass)", str(counts["batches"]["notify"])),
        ("no-op Celery task/s, same workers and Redis", f"{m.noop_per_second:,.0f}"),
        ("ratio invoices/s : no-op task/s", f"{invoices_per_second / m.noop_per_second:.2f}"),
        ("ratio emails/s : no-op task/s", f"{emails_per_second / m.noop_per_second:.2f}"),
    ]
    if args.skip_delivery:
        rows = [row for row in rows if "emails/s" not in row[0]]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    if m.received != m.owed and not args.skip_delivery:
        raise SystemExit(f"the sink received {m.received} emails, {m.owed} were owed")


if __name__ == "__main__":
    main()
