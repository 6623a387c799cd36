"""The hot path at the engine's speed: clientflow's throughput next to its ceilings, in one run.

    make bench          # full size (the invoice run on 100,000 invoices: long)
    make bench-quick    # under two minutes: smaller sizes, each phase time-boxed; said so
    .venv/bin/python bench/run.py [--quick] [--only PHASE ...] [--profile-clients-add FILE]
                                   [--profile-notifications FILE] [--profile-invoice-run FILE]

bench/README.md says what each figure means and how it is taken.

Measured side by side on one machine, one Redis database, prefork `-c 2`:

  C  the ceiling: a stock Celery app (bench/ceiling.py) with a no-op task; N published, then
     a worker started and timed until the broker is drained.
  S  the SMTP ceiling: messages/s the sink accepts from one reused smtplib connection.
  clients.add with its welcome email, notifications.send (a client with 10 contacts ticked for
     the category), the invoice run: real `celery -A workers.app worker` processes on a fresh
     PostgreSQL database, timed until the sink has received every email (or, in quick mode,
     the phase's time box ends: then the rate is over what was done, and the output says so).
  latency publish -> 250 at half the measured clients.add rate, matched per recipient.
  peak RSS of the worker and each pool process (/proc VmHWM) at 10% and 100% of each run.

The sink is postfix's C smtp-sink (bench/sink.py; aiosmtpd in a separate process where it
cannot be fetched). Results go to bench/results/<date>[-quick].md and .json. Uses its own Redis
database (default redis://127.0.0.1:6379/9, flushed before and after) and creates and drops its
own PostgreSQL databases.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import celery
import psycopg
import redis
from celery import Celery
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import payloads  # noqa: E402
from servers import create_database, drop_database  # noqa: E402

from bench import ceiling  # noqa: E402
from bench.bounds import (  # noqa: E402
    invoice_run_parts,
    invoice_run_target,
    latency_load,
    load_text,
    pdf_cost_whole,
)
from bench.cpu import PARTS, BackendCpu, CpuSplit, process_seconds  # noqa: E402
from bench.harness import (  # noqa: E402
    RUN_DATE,
    Memory,
    cpu_seconds,
    environ_without_settings,
    load,
    load_contacts,
    memory,
    outstanding,
    process_tree,
    worker,
    worker_env,
)
from bench.sink import Sink  # noqa: E402
from models.settings import Settings  # noqa: E402
from services.invoice_mail import ATTACHES_PDF  # noqa: E402
from services.redaction import ids_only  # noqa: E402
from workers import migrate  # noqa: E402
from workers.app import create_app  # noqa: E402

PHASES = (
    "ceiling",
    "smtp",
    "clients_add",
    "latency",
    "notifications",
    "invoice_run",
    "invoice_run_no_pdf",
)
# The invoice run again with CLIENTFLOW_INVOICE_PDF=false: the invoice emails as issue 10
# measured them (a templated email, as the mail-queue library it names sends), before issue 13
# attached the invoice as a PDF; the two runs side by side give the PDF's whole cost.
WITHOUT_THE_PDF = {"invoice_pdf": "false"}
POLL = 0.02  # seconds between progress readings


@dataclass(frozen=True)
class Sizes:
    ceiling_tasks: int
    smtp_messages: int
    clients_add: int
    notifications: int
    contacts: int
    invoices: int
    latency_seconds: float


FULL = Sizes(20_000, 10_000, 3_000, 300, 10, 100_000, 30.0)
# Two minutes on a 2-core machine: the invoice run is cut from 20,000 to 1,000 invoices (at
# ~100 emails/s end to end today, 20,000 invoices owe ~32,000 emails: five minutes alone).
QUICK = Sizes(2_000, 2_000, 300, 30, 10, 1_000, 6.0)
# Quick mode also time-boxes each phase (seconds from its worker's start; for latency, after
# the last publish): on a quiet machine nothing reaches its box, but a machine busy with other
# people's test runs (and a nice'd benchmark) can be ten times slower, and two minutes must
# hold. A boxed phase reports its rate over what it did, and says so.
TIME_BOXES = {
    "ceiling": 10.0,
    "smtp": 4.0,
    "clients_add": 16.0,
    "latency": 8.0,
    "notifications": 10.0,
    "invoice_run": 22.0,
    "invoice_run_no_pdf": 10.0,
}


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Drain:
    """Timing of one burst worked off: from the first progress seen to the last item done.

    In quick mode a phase may be time-boxed: it then stops with `done` < `total` and its rate
    is over what was done (`partial`).
    """

    total: int
    started: float  # perf_counter when the worker was started (or the work published)
    done: int = 0
    first: float = 0.0  # the first reading that saw any progress
    first_count: int = 0  # how much was done at that reading
    finished: float = 0.0
    partial: bool = False
    memory: dict[str, list[Memory]] = field(default_factory=dict)  # "10%", "100%"
    # CPU from the first progress to the end, of each part: the worker (all its processes;
    # a figure other load on the machine disturbs much less than the rate), PostgreSQL's
    # backends, Redis, the sink and the machine as a whole (bench/cpu.py), which is what
    # says what bounds the rate.
    split: CpuSplit | None = None

    @property
    def cpu_ms_per_item(self) -> dict[str, float]:
        return {} if self.split is None else self.split.ms_per_item(self.done)

    @property
    def seconds(self) -> float:
        return self.finished - self.first

    @property
    def rate(self) -> float:
        """Items/s between the first reading with progress and the last item: the steady rate,
        without the worker's start-up (which `wall_rate` includes)."""
        if self.finished > self.first and self.done > self.first_count:
            return (self.done - self.first_count) / (self.finished - self.first)
        return self.wall_rate

    @property
    def wall_rate(self) -> float:
        return self.done / max(self.finished - self.started, 1e-9)

    def as_json(self) -> dict[str, Any]:
        cpu = self.cpu_ms_per_item
        return {
            "items": self.total,
            "items_done": self.done,
            "time_boxed": self.partial,
            "rate_per_s": round(self.rate, 2),
            "seconds_first_to_last": round(self.seconds, 3),
            "seconds_with_startup": round(self.finished - self.started, 3),
            "rate_with_startup_per_s": round(self.wall_rate, 2),
            "count_at_first_progress": self.first_count,
            "worker_cpu_ms_per_item": round(cpu["worker"], 2) if "worker" in cpu else None,
            "cpu_ms_per_item": cpu,
            "memory_mib": {when: [asdict(m) for m in found] for when, found in self.memory.items()},
        }


def worker_cpu_split(pid: int, parts: dict[str, Callable[[], float]]) -> CpuSplit:
    """The worker's CPU (the process at `pid` and its pool), beside the other parts."""
    return CpuSplit({"worker": lambda: cpu_seconds(pid), **parts})


class Runner:
    """Rich progress for the phases; and the polling loop every phase times its work with."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>12}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )

    def task(self, description: str, total: int) -> TaskID:
        return self.progress.add_task(description, total=total, rate="")

    def drain(
        self,
        task: TaskID,
        total: int,
        done: Callable[[], int],
        *,
        started: float,
        timeout: float,
        budget: float | None = None,
        process: subprocess.Popen[bytes] | None = None,
        finished_twice: bool = False,
        cpu_parts: dict[str, Callable[[], float]] | None = None,
    ) -> Drain:
        """Poll done() until it reaches total; sample the worker's memory at 10% and 100%.

        Past `budget` seconds from `started` stop early (time-boxed, quick mode); past
        `timeout` raise TimeoutError. process: the worker, whose memory is sampled and which must
        stay alive. cpu_parts: the other processes whose CPU is split out (Context.cpu_parts).
        """
        pid = None if process is None else process.pid
        timing = Drain(total, started)
        if pid is not None:
            timing.split = worker_cpu_split(pid, cpu_parts or {})
        deadline = time.monotonic() + timeout
        box = started + budget if budget is not None else math.inf
        while True:
            count = done()
            now = time.perf_counter()
            if count > 0 and not timing.first:
                timing.first, timing.first_count = now, count
                if timing.split is not None:
                    timing.split.mark_first(count)
            if pid is not None and "10%" not in timing.memory and count >= total / 10:
                timing.memory["10%"] = memory(pid)
            rate = ""
            if timing.first and now > timing.first and count > timing.first_count:
                rate = f"{(count - timing.first_count) / (now - timing.first):,.0f}/s"
            self.progress.update(task, completed=min(count, total), rate=rate)
            if count >= total:
                if finished_twice:
                    # A message being handed to the worker is briefly in no queue and not
                    # unacknowledged yet: only a second reading proves it drained.
                    time.sleep(0.01)
                    if done() < total:
                        continue
                timing.done, timing.finished = count, now
                break
            if now > box:
                if not timing.first:
                    raise TimeoutError(f"nothing done within the {budget:g} s time box")
                timing.done, timing.finished, timing.partial = count, now, True
                break
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the worker exited with code {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} of {total} after {timeout:.0f}s")
            time.sleep(POLL)
        if pid is not None:
            timing.memory["100%"] = memory(pid)
        if timing.split is not None:
            timing.split.mark_last()
        if timing.partial:  # finished as far as it got: the spinner and the clock stop
            description = next(t for t in self.progress.tasks if t.id == task).description
            self.progress.update(
                task,
                total=timing.done,
                completed=timing.done,
                description=f"{description} [yellow](time-boxed: {timing.done} of {total})[/]",
            )
        self.progress.update(task, rate=f"{timing.rate:,.0f}/s")
        self.progress.stop_task(task)
        return timing


# -- the phases -------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    sizes: Sizes
    runner: Runner
    workdir: Path
    broker: redis.Redis
    databases: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    sink_kinds: set[str] = field(default_factory=set)

    def new_database(self) -> str:
        name = f"clientflow_bench_{uuid.uuid4().hex}"
        url = create_database(self.args.postgres_url, name)
        self.databases.append(name)
        migrate.upgrade(url)
        return url

    def drop_databases(self) -> None:
        for name in self.databases:
            with suppress(psycopg.Error):
                drop_database(self.args.postgres_url, name)
        self.databases.clear()

    def sink(self, dump: bool = False) -> Sink:
        sink = Sink(self.workdir, dump=dump, allow_postfix=not self.args.no_postfix)
        sink.start()
        self.sink_kinds.add(
            sink.kind + (f": {sink.fallback_reason}" if sink.fallback_reason else "")
        )
        return sink

    def worker(
        self, name: str, env: dict[str, str], queues: list[str], app: str = "workers.app"
    ) -> AbstractContextManager[subprocess.Popen[bytes]]:
        # What is measured is over when it is stopped: no need to wait long for a warm shutdown
        # (its database is dropped and its Redis database flushed next).
        log = self.workdir / f"{name}.log"
        return worker(env, self.args.concurrency, log, queues, app, stop_timeout=5)

    @contextmanager
    def cpu_parts(
        self, database_url: str | None = None, sink: Sink | None = None
    ) -> Iterator[dict[str, Callable[[], float]]]:
        """CPU-seconds readers for Redis, the sink and the PostgreSQL backends of the
        phase's database, for Runner.drain."""
        redis_pid = int(self.broker.info("server")["process_id"])
        parts: dict[str, Callable[[], float]] = {"redis": lambda: process_seconds(redis_pid)}
        if sink is not None:
            sink_pid = sink.pid
            parts["sink"] = lambda: process_seconds(sink_pid)
        if database_url is None:
            yield parts
            return
        backends = BackendCpu(self.args.postgres_url, database_url.rpartition("/")[2])
        backends.start()
        try:
            yield {**parts, "postgres": backends.used}
        finally:
            backends.stop()

    @property
    def settings(self) -> dict[str, str]:
        """--setting NAME=VALUE, for worker_env (the workers' own settings are otherwise none)."""
        return dict(setting.split("=", 1) for setting in self.args.setting)

    def box(self, phase: str) -> float | None:
        return TIME_BOXES[phase] if self.args.quick and not self.args.no_time_box else None


def clientflow_app(redis_url: str) -> Celery:
    return create_app(Settings(broker_url=redis_url))


def phase_ceiling(ctx: Context, key: str = "ceiling") -> None:
    n = ctx.sizes.ceiling_tasks
    ctx.broker.flushdb()
    app = ceiling.app
    app.conf.update(broker_url=ctx.args.redis_url)
    task = ctx.runner.task("C  stock Celery no-op (publish)", n)
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task(ceiling.TASK, producer=producer)
            if i % 500 == 0:
                ctx.runner.progress.update(task, completed=i)
    ctx.runner.progress.update(task, completed=n, description="C  stock Celery no-op (drain)")
    ctx.runner.progress.reset(task, total=n)
    env = environ_without_settings()
    env["BENCH_BROKER_URL"] = ctx.args.redis_url
    started = time.perf_counter()
    with (
        ctx.cpu_parts() as parts,
        ctx.worker("ceiling", env, [ceiling.QUEUE], "bench.ceiling") as p,
    ):
        timing = ctx.runner.drain(
            task,
            n,
            lambda: n - outstanding(ctx.broker, [ceiling.QUEUE]),
            started=started,
            timeout=max(120.0, n / 20),
            budget=ctx.box("ceiling"),
            process=p,
            finished_twice=True,
            cpu_parts=parts,
        )
    ctx.results[key] = {"tasks": n, **timing.as_json()}


def phase_ceiling_again(ctx: Context) -> None:
    """C once more, after the other phases: this machine's speed moves by a sixth within an
    hour, and a ratio to C is only as good as C. Both are reported; the ratios stay to the
    first, as issue 10 defines them, with what they would be against this one."""
    phase_ceiling(ctx, "ceiling_end")


def smtp_message(number: int) -> EmailMessage:
    """About the size and shape of a clientflow email: multipart/alternative, ~3 KB."""
    message = EmailMessage()
    message["From"] = "Clientflow <billing@clientflow.localhost>"
    message["To"] = f"Ada Lovelace <s{number}@bench.example>"
    message["Subject"] = "Welcome to Clientflow Hosting"
    message["Message-ID"] = f"<s{number}.{uuid.uuid4().hex}@bench.example>"
    text = "Dear Ada Lovelace,\n\nThank you for signing up with us.\n" * 20
    message.set_content(text)
    message.add_alternative(f"<html><body><pre>{text}</pre></body></html>", subtype="html")
    return message


def phase_smtp(ctx: Context) -> None:
    n = ctx.sizes.smtp_messages
    task = ctx.runner.task("S  SMTP sink, one smtplib conn.", n)
    messages = [smtp_message(i).as_bytes() for i in range(min(n, 100))]
    sink = ctx.sink()
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as client:
            client.ehlo()
            started = time.perf_counter()
            # This thread's CPU, not the process's: Rich redraws the progress in another.
            client_cpu, sink_cpu = time.thread_time(), process_seconds(sink.pid)
            box = started + (ctx.box("smtp") or math.inf)
            sent = 0
            for i in range(n):
                if time.perf_counter() > box:
                    break
                sent += 1
                client.sendmail(
                    "billing@clientflow.localhost",
                    [f"s{i}@bench.example"],
                    messages[i % len(messages)],
                )
                if i % 100 == 0:
                    ctx.runner.progress.update(task, completed=i)
            seconds = time.perf_counter() - started
            client_cpu = time.thread_time() - client_cpu
            sink_cpu = process_seconds(sink.pid) - sink_cpu
        received = sink.received()
    finally:
        sink.stop()
    ctx.runner.progress.update(task, completed=sent, rate=f"{sent / seconds:,.0f}/s")
    if received < sent:
        raise RuntimeError(f"the sink counted {received} of {sent} messages")
    ctx.results["smtp"] = {
        "messages": n,
        "messages_sent": sent,
        "time_boxed": sent < n,
        "message_bytes": len(messages[0]),
        "seconds": round(seconds, 3),
        "rate_per_s": round(sent / seconds, 2),
        "sink": sink.kind,
        # An email sent with nothing else done: what any sender pays per message (the
        # invoice run's bound, bench/bounds.py).
        "cpu_ms_per_message": {
            "client": round(client_cpu / max(sent, 1) * 1000, 3),
            "sink": round(sink_cpu / max(sent, 1) * 1000, 3),
        },
    }


def bench_client(client_id: str, address: str) -> dict[str, Any]:
    return payloads.client(client_id, email=address, companyname="Analytical Engines Ltd")


def publish(app: Celery, name: str, events: Iterator[dict[str, Any]]) -> None:
    with app.producer_or_acquire() as producer:
        for payload in events:
            app.send_task(
                name,
                kwargs=payload,
                producer=producer,
                headers={"clientflow_published_at": time.time()},
            )


def profiled(
    ctx: Context, proc: subprocess.Popen[bytes], output: Path | None, phase: str
) -> AbstractContextManager[None]:
    """The phase's py-spy record of the worker, where its --profile-... option asks for one."""
    if output is None:
        return nullcontext()
    return py_spy(
        proc.pid, output, ctx.args.concurrency, ctx.runner.console, phase, ctx.args.profile_gil
    )


@contextmanager
def py_spy(
    pid: int, output: Path, concurrency: int, console: Console, phase: str, gil: bool
) -> Iterator[None]:
    """py-spy record of the worker and its pool processes (raw collapsed stacks): every sample,
    idle included, or (gil) only those of a thread holding the GIL, which on a saturated machine
    is where the CPU goes; wall samples there put the wait for a core on whatever runs."""
    binary = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if binary is None:
        console.print("[red]py-spy not found: .venv/bin/pip install py-spy[/]")
        yield
        return
    deadline = time.monotonic() + 30
    while len(process_tree(pid)) < 1 + concurrency and time.monotonic() < deadline:
        time.sleep(0.01)  # the pool processes are forked a moment after the worker starts
    command = [
        binary,
        "record",
        "--subprocesses",
        *(["--gil", "--nonblocking"] if gil else ["--idle"]),
        "--format",
        "raw",
        "--rate",
        "100",
        "--output",
        str(output),
        "--pid",
        str(pid),
    ]
    with (output.parent / f"{output.name}.log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        console.print(f"py-spy profile of the {phase} phase: {output}")


def phase_clients_add(ctx: Context) -> None:
    """clients.add burst (publish N, then start the worker); then the latency run on the same
    worker and sink, paced at half the rate just measured (--latency-load)."""
    n = ctx.sizes.clients_add
    ctx.broker.flushdb()
    database_url = ctx.new_database()
    app = clientflow_app(ctx.args.redis_url)
    queues = sorted(app.amqp.queues)
    adds = (bench_client(f"A{i}", f"a{i}@bench.example") for i in range(n))
    publish(app, "clients.add", adds)
    sink = ctx.sink(dump="latency" in ctx.args.only)
    task = ctx.runner.task("clients.add + welcome email", n)
    env = worker_env(ctx.args.redis_url, database_url, sink.url, ctx.workdir, **ctx.settings)
    try:
        started = time.perf_counter()
        with ctx.cpu_parts(database_url, sink) as parts, ctx.worker(
            "clients_add", env, queues
        ) as proc:
            with profiled(ctx, proc, ctx.args.profile_clients_add, "clients.add"):
                timing = ctx.runner.drain(
                    task,
                    n,
                    sink.received,
                    started=started,
                    timeout=max(120.0, n / 2),
                    budget=ctx.box("clients_add"),
                    process=proc,
                    cpu_parts=parts,
                )
            ctx.results["clients_add"] = {"events": n, "emails": n, **timing.as_json()}
            if "latency" in ctx.args.only:
                try:
                    if timing.partial:  # the latency run wants an idle worker
                        ctx.broker.delete(*queues)
                        wait_idle(ctx.broker, queues, 10)
                    with profiled(ctx, proc, ctx.args.profile_latency, "latency"):
                        rate = timing.rate * ctx.args.latency_load
                        latency(ctx, app, sink, rate, proc, parts)
                except Exception as exc:  # reported; the other phases still run
                    ctx.results["latency"] = {"error": f"{type(exc).__name__}: {exc}"}
                    ctx.runner.console.print(f"[red]latency failed: {exc}[/]")
    finally:
        sink.stop()
        app.close()


def wait_idle(broker: redis.Redis, queues: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while outstanding(broker, queues) and time.monotonic() < deadline:
        time.sleep(0.05)


def latency(
    ctx: Context,
    app: Celery,
    sink: Sink,
    rate: float,
    worker_process: subprocess.Popen[bytes],
    cpu_parts: dict[str, Callable[[], float]],
) -> None:
    """Publish clients.add at a paced rate; each welcome email is matched to its event by its
    recipient (lat<i>@bench.example), received at the dump file's modification time. The
    CPU per event is split as in the clients.add phase: how busy that pace keeps the machine
    (this benchmark's publishing among the rest)."""
    n = max(10, round(rate * ctx.sizes.latency_seconds))
    task = ctx.runner.task(f"latency at {rate:,.1f}/s (publish)", n)
    published: dict[str, int] = {}
    interval = 1 / rate
    baseline = sink.received()
    # From the first publish to the last email: the whole paced run, not only its drain.
    # This process publishes at the pace, on the same cores: its CPU is given beside the rest.
    split = worker_cpu_split(worker_process.pid, {**cpu_parts, "publisher": time.process_time})
    split.mark_first(0)
    start = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            address = f"lat{i}@bench.example"
            payload = bench_client(f"L{i}", address)
            published[address] = time.time_ns()
            app.send_task(
                "clients.add",
                kwargs=payload,
                producer=producer,
                headers={"clientflow_published_at": time.time()},
                # As clientflow's own publisher writes them (tasks.runtime.publish): Celery's
                # saferepr of the payload was a ninth of this loop's CPU (py-spy --gil), on
                # the cores the worker is measured on.
                argsrepr="()",
                kwargsrepr=ids_only(payload),
            )
            ctx.runner.progress.update(task, completed=i + 1)
    publishing = time.perf_counter() - start
    box = ctx.box("latency")
    ctx.runner.progress.update(task, description=f"latency at {rate:,.1f}/s (received)")
    ctx.runner.drain(
        task,
        n,
        lambda: sink.received() - baseline,
        started=start,
        timeout=publishing + 120,
        budget=None if box is None else publishing + box,
    )
    split.mark_last()
    received = {r: ns for r, ns in sink.deliveries() if r in published}
    # An email not received (time-boxed) counts as slower than any received one.
    samples = sorted((ns - published[r]) / 1e6 for r, ns in received.items())
    samples += [math.inf] * (n - len(received))

    def ms(value: float) -> float | None:
        return None if math.isinf(value) else round(value, 1)

    ctx.results["latency"] = {
        "load": ctx.args.latency_load,
        "target_rate_per_s": round(rate, 2),
        "achieved_publish_rate_per_s": round(n / publishing, 2),
        "events": n,
        "not_received": n - len(received),
        "p50_ms": ms(percentile(samples, 50)),
        "p95_ms": ms(percentile(samples, 95)),
        "p99_ms": ms(percentile(samples, 99)),
        "max_ms": ms(samples[-1]),
        "received_at": "sink dump file mtime (kernel coarse clock, ~4 ms granularity)",
        "cpu_ms_per_item": split.ms_per_item(len(received)),
    }


def percentile(ordered: list[float], p: float) -> float:
    """Nearest rank."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def phase_notifications(ctx: Context) -> None:
    n, contacts = ctx.sizes.notifications, ctx.sizes.contacts
    emails = n * (contacts + 1)  # the holder and each ticked contact
    ctx.broker.flushdb()
    database_url = ctx.new_database()
    clients = load_contacts(database_url, n, contacts, "general")
    app = clientflow_app(ctx.args.redis_url)
    queues = sorted(app.amqp.queues)
    publish(
        app,
        "notifications.send",
        (
            payloads.notification(
                client_id,
                context={"title": "Maintenance", "message": "Tonight, 22:00 to 23:00 UTC."},
            )
            for client_id in clients
        ),
    )
    sink = ctx.sink()
    task = ctx.runner.task(f"notifications.send x{contacts + 1} emails", emails)
    env = worker_env(ctx.args.redis_url, database_url, sink.url, ctx.workdir, **ctx.settings)
    try:
        started = time.perf_counter()
        with ctx.cpu_parts(database_url, sink) as parts, ctx.worker(
            "notifications", env, queues
        ) as proc, profiled(ctx, proc, ctx.args.profile_notifications, "notifications.send"):
            timing = ctx.runner.drain(
                task,
                emails,
                sink.received,
                started=started,
                timeout=max(120.0, emails / 2),
                budget=ctx.box("notifications"),
                process=proc,
                cpu_parts=parts,
            )
    finally:
        sink.stop()
        app.close()
    ctx.results["notifications"] = {
        "notifications": n,
        "contacts_per_client": contacts,
        "emails": emails,
        "notifications_per_s": round(timing.rate / (contacts + 1), 2),
        **timing.as_json(),
    }


def phase_invoice_run(
    ctx: Context, key: str = "invoice_run", overrides: dict[str, str] | None = None
) -> None:
    invoices = ctx.sizes.invoices
    clients = max(1, invoices // 10)
    ctx.broker.flushdb()
    database_url = ctx.new_database()
    owed = load(database_url, invoices, clients)
    app = clientflow_app(ctx.args.redis_url)
    queues = sorted(app.amqp.queues)
    sink = ctx.sink()
    without = " without the PDF" if overrides == WITHOUT_THE_PDF else ""
    task = ctx.runner.task(f"invoice run{without}, {invoices:,} invoices", owed)
    settings = {**ctx.settings, **(overrides or {})}
    env = worker_env(ctx.args.redis_url, database_url, sink.url, ctx.workdir, **settings)
    profile = ctx.args.profile_invoice_run if key == "invoice_run" else None
    try:
        with ctx.cpu_parts(database_url, sink) as parts, ctx.worker(
            key, env, queues
        ) as proc, ExitStack() as profiling:
            deadline = time.monotonic() + 60
            while not app.control.ping(timeout=0.5):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the worker did not answer a ping")
            profiling.enter_context(profiled(ctx, proc, profile, "invoice run"))
            # One task: timed from its publication (the worker is up) to the last email.
            started = time.perf_counter()
            app.send_task("invoices.run", kwargs={"run_date": RUN_DATE.isoformat()})
            timing = ctx.runner.drain(
                task,
                owed,
                sink.received,
                started=started,
                timeout=max(300.0, owed / 2),
                budget=ctx.box(key),
                process=proc,
                cpu_parts=parts,
            )
            timing.first, timing.first_count = started, 0  # end to end, from the publish
    finally:
        sink.stop()
        app.close()
    with psycopg.connect(re_libpq(database_url)) as conn:
        row = conn.execute(
            "SELECT status, error, counts FROM scheduled_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        # The PDFs the workers made: one per invoice whose emails attach it (a delivery batch
        # makes an invoice's once for all its recipients).
        pdfs, attaching = conn.execute(
            "SELECT count(DISTINCT invoice_id), count(*) FROM email_messages"
            " WHERE template = ANY(%s) AND invoice_id IS NOT NULL AND status = 'sent'",
            (sorted(ATTACHES_PDF),),
        ).fetchone() or (0, 0)
    status, error, counts = row if row else ("missing", None, {})
    if status != "succeeded" and not timing.partial:
        raise RuntimeError(f"the invoice run ended {status}: {error}")
    ctx.results[key] = {
        "invoices": invoices,
        "clients": clients,
        "emails": owed,
        # Publish to the last email; unknown when time-boxed (the run was cut off).
        "invoices_per_s": None if timing.partial else round(invoices / timing.seconds, 2),
        "queries_per_batch": (counts or {}).get("queries_per_batch"),
        "settings": overrides or {},
        **timing.as_json(),
    }
    if pdfs:
        pdf = pdf_cost()
        ctx.results[key]["pdf"] = {
            "made": pdfs,
            "emails_attaching": attaching,
            "cpu_ms_each": pdf["cpu_ms"],
            "bytes": pdf["bytes"],
            "cpu_ms_per_email": round(pdf["cpu_ms"] * pdfs / max(timing.done, 1), 3),
        }


def phase_invoice_run_no_pdf(ctx: Context) -> None:
    phase_invoice_run(ctx, "invoice_run_no_pdf", WITHOUT_THE_PDF)


def pdf_cost() -> dict[str, Any]:
    """What one invoice PDF of the run's kind (two items, an address, a name in the PDF core
    fonts) costs on this machine: bench/invoice_pdf.py, in a fresh process."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "invoice_pdf.py"), "--documents", "300",
         "--core-fonts-json"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    return dict(json.loads(out))


def re_libpq(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


# -- reporting --------------------------------------------------------------------------------


def ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "-"
    return f"{value / base:.2f}" if value / base >= 0.1 else f"{value / base:.3f}"


def memory_text(result: dict[str, Any]) -> str:
    """'main 94 → 95 · pool 99, 100 → 110, 112': VmHWM, MiB, at 10% → at 100% of the phase."""
    samples = result.get("memory_mib", {})
    if "100%" not in samples:
        return "-"

    def peaks(when: str, role: str) -> str:
        return ", ".join(f"{m['peak_mib']:.0f}" for m in samples.get(when, []) if m["role"] == role)

    return " · ".join(
        f"{role} {peaks('10%', role) or '?'} → {peaks('100%', role)}" for role in ("main", "pool")
    )


# what, rate, ratio to C, ratio to S, peak RSS (MiB), detail
Row = tuple[str, str, str, str, str, str]
COLUMNS = ("what", "rate", "÷ C", "÷ S", "peak RSS MiB at 10% → 100%", "detail")


def done_text(r: dict[str, Any], unit: str) -> str:
    """'300 events' or, time-boxed, '180 of 300 events (time-boxed)'."""
    if r.get("time_boxed"):
        return f"{r['items_done']:,} of {r['items']:,} {unit} (time-boxed)"
    return f"{r['items']:,} {unit}"


PART_NAMES = {
    "worker": "worker",
    "postgres": "PostgreSQL",
    "redis": "Redis",
    "sink": "sink",
    "machine": "machine",
}


def cpu_text(r: dict[str, Any], unit: str = "each") -> str:
    """'CPU ms each: worker 4.02 · PostgreSQL 0.81 · Redis 0.20 · sink 0.11 · machine 6.40'."""
    split = r.get("cpu_ms_per_item") or {}
    if split:
        parts = " · ".join(f"{PART_NAMES[p]} {split[p]:.2f}" for p in PARTS if p in split)
        return f"CPU ms {unit}: {parts}"
    value = r.get("worker_cpu_ms_per_item")
    return "worker CPU not measured" if value is None else f"worker CPU {value:.1f} ms {unit}"


# The targets of issue 10, as rates to reach: (result, what, per, its target from C's rate).
TARGETS: tuple[tuple[str, str, str, Callable[[float], float], str], ...] = (
    ("clients_add", "clients.add + welcome", "event", lambda c: 0.6 * c, "0.6 x C"),
    ("notifications", "notifications.send", "email", lambda c: 1.5 * c, "1.5 x C"),
    (
        "invoice_run",
        "invoice run",
        "email",
        invoice_run_target,
        "1,500 emails/s and 1.4 x C",
    ),
    (
        "invoice_run_no_pdf",
        "invoice run without the PDF",
        "email",
        invoice_run_target,
        "1,500 emails/s and 1.4 x C",
    ),
)


def bounds(results: dict[str, Any], cores: int) -> list[str]:
    """What bounds each rate, in the machine's CPU per item: what the target leaves for one
    item, what one took (by part), and the rate that CPU allows with every core busy."""
    ceiling = results.get("ceiling", {})
    c = ceiling.get("rate_per_s")
    c_machine = (ceiling.get("cpu_ms_per_item") or {}).get("machine")
    if not c:
        return []
    lines = []
    if c_machine:
        lines.append(
            f"- C: a no-op message through Celery took {c_machine:.2f} ms of the machine's "
            f"CPU ({cpu_text(ceiling, 'per task')}); {cores} cores allow "
            f"{cores * 1000 / c_machine:,.0f}/s at that cost."
        )
    for key, what, per, target_of, target_text in TARGETS:
        r = results.get(key, {})
        split = r.get("cpu_ms_per_item") or {}
        used = split.get("machine")
        if not used:
            continue
        target = target_of(c)
        named = sum(v for p, v in split.items() if p != "machine")
        lines.append(
            f"- {what}: the target ({target_text} = {target:,.0f} {per}s/s) leaves "
            f"{cores * 1000 / target:.2f} ms of the machine's CPU per {per}; one took "
            f"{used:.2f} ({cpu_text(r, 'per ' + per)}; the rest, {max(used - named, 0):.2f}, "
            "is other processes, this benchmark among them, and interrupts), so "
            f"{cores} busy cores allow {cores * 1000 / used:,.0f}/s "
            f"({cores * 1000 / used / c:.2f} x C)."
        )
    lines += latency_load(results, cores)
    lines += invoice_run_parts(results, cores, c)
    lines += pdf_cost_whole(results)
    again = results.get("ceiling_end", {}).get("rate_per_s")
    if again:
        against = [
            f"{what} {rate / again:.2f} x C"
            for key, what, _, _, _ in TARGETS
            if (rate := results.get(key, {}).get("rate_per_s"))
        ]
        lines.append(
            f"- C measured again after the other phases: {again:,.0f}/s ({again / c - 1:+.0%}); "
            f"against it the ratios would read {', '.join(against) or 'nothing'}."
        )
    return lines


def ms_text(value: float | None) -> str:
    return "not all received" if value is None else f"{value:,.0f}"


def rows(results: dict[str, Any]) -> list[Row]:
    """The table's rows, for the terminal and the Markdown file."""
    c = results.get("ceiling", {}).get("rate_per_s")
    s = results.get("smtp", {}).get("rate_per_s")
    labels = {
        "ceiling": "C: stock Celery no-op task",
        "ceiling_end": "C again, after the other phases",
        "smtp": "S: SMTP sink, one smtplib connection",
        "clients_add": "clients.add + welcome, end to end",
        "latency": "latency publish → 250",
        "notifications": "notifications.send, end to end",
        "invoice_run": "invoice run, end to end",
        "invoice_run_no_pdf": "invoice run without the PDF, end to end",
    }
    out: list[Row] = []
    for key, label in labels.items():
        r = results.get(key)
        if r is None:
            continue
        if "error" in r:
            out.append((label, "failed", "", "", "", r["error"][:160]))
            continue
        rate = r.get("rate_per_s")
        to_c, to_s = ratio(rate, c), ratio(rate, s)
        rss = memory_text(r)
        if key == "ceiling":
            out.append((label, f"{rate:,.0f} tasks/s", to_c, "", rss, done_text(r, "tasks")))
        elif key == "ceiling_end":
            moved = f"; C moved {rate / c - 1:+.0%} during the run" if c else ""
            detail = done_text(r, "tasks") + moved
            out.append((label, f"{rate:,.0f} tasks/s", to_c, "", rss, detail))
        elif key == "smtp":
            sent = f"{r['messages_sent']:,} msgs of {r['message_bytes']:,} B"
            if r["time_boxed"]:
                sent += " (time-boxed)"
            out.append((label, f"{rate:,.0f} msgs/s", to_c, "1.00", "", sent))
        elif key == "clients_add":
            detail = (
                f"{done_text(r, 'events')}; {r['rate_with_startup_per_s']:,.1f}/s counting "
                f"the worker's start-up; {cpu_text(r)}"
            )
            out.append((label, f"{rate:,.1f} emails/s", to_c, to_s, rss, detail))
        elif key == "latency":
            value = " / ".join(f"p{p} {ms_text(r[f'p{p}_ms'])}" for p in (50, 95, 99))
            detail = (
                f"{r['events']} events paced at {r['target_rate_per_s']:.1f}/s "
                f"({load_text(r.get('load', 0.5))} the clients.add rate); "
                f"max {ms_text(r['max_ms'])} ms"
            )
            if r["not_received"]:
                detail += f"; {r['not_received']} not received within the time box"
            out.append((label, value + " ms", "", "", "", detail))
        elif key == "notifications":
            detail = (
                f"{done_text(r, 'emails')}: {r['notifications']} notifications, each to a "
                f"client with {r['contacts_per_client']} contacts ticked (+ the holder); "
                f"{r['notifications_per_s']:,.1f} notifications/s"
            )
            out.append((label, f"{rate:,.1f} emails/s", to_c, to_s, rss, detail))
        elif key in ("invoice_run", "invoice_run_no_pdf"):
            detail = (
                f"{done_text(r, 'emails')} in {r['seconds_first_to_last']:,.1f} s from the "
                f"publish; {r['invoices']:,} invoices, {r['clients']:,} clients"
            )
            out.append((label, f"{rate:,.1f} emails/s", to_c, to_s, rss, detail))
            per_s = r["invoices_per_s"]
            out.append(
                (
                    f"{label.removesuffix(', end to end')}, {r['invoices']:,} invoices",
                    "-" if per_s is None else f"{per_s:,.1f} invoices/s",
                    ratio(per_s, c),
                    "",
                    "",
                    "publish → last email" if per_s else "time-boxed: the run did not finish",
                )
            )
    return out


def markdown(report: dict[str, Any], table: list[Row]) -> str:
    host = report["machine"]
    lines = [
        f"# clientflow benchmark, {report['started_at']}",
        "",
        f"Mode: **{report['mode']}**. {report['mode_note']}",
        "",
        f"Machine: {host['cpus']} CPUs, nice {host['nice']}, load average "
        f"{host['loadavg_before']} before, {host['loadavg_after']} after; Python "
        f"{host['python']}, Celery {host['celery']}; git {report['git']}. Worker: prefork "
        f"-c {report['concurrency']}"
        + "".join(f", CLIENTFLOW_{k.upper()}={v}" for k, v in report.get("settings", {}).items())
        + f". SMTP sink: {'; '.join(report['sink'])}.",
        "",
        f"| {' | '.join(COLUMNS)} |",
        "|---|--:|--:|--:|---|---|",
        *(f"| {' | '.join(row)} |" for row in table),
        "",
        "Rates run from the first item seen done to the last (a burst published before the "
        "worker starts; its start-up is excluded, and given in the JSON as "
        "`rate_with_startup_per_s`); the invoice run from its publication to a started worker. "
        "RSS: each process's VmHWM (peak) at 10% → at 100% of the phase (worker main process, "
        "then each pool process). Latency: publish to the sink's receipt of the welcome email "
        "(dump file mtime), matched by recipient. "
        f"Total wall time {report['seconds']:.0f} s.",
        "",
    ]
    bound = bounds(report["results"], host["cpus"] or 1)
    if bound:
        lines += ["## What bounds the rates: CPU per item", "", *bound, ""]
    return "\n".join(lines)


def machine(load_before: str) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "nice": os.nice(0),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "platform": platform.platform(),
    }


def git_revision() -> str:
    with suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return head + (" (with uncommitted changes)" if dirty.strip() else "")
    return "unknown"


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the two-minute sizes")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=PHASES,
        default=list(PHASES),
        help="run these phases only (latency needs clients_add)",
    )
    for name, default in asdict(FULL).items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(default),
            default=None,
            help=f"default {default} (quick: {getattr(QUICK, name)})",
        )
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    parser.add_argument(
        "--latency-load",
        type=float,
        default=0.5,
        metavar="FRACTION",
        help="pace the latency run at this fraction of the clients.add rate (the issue's "
        "target is at 0.5; a small one shows the latency of an event that waits for nothing)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"),
        help="a Redis database of the benchmark's own: flushed before, between and after",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "CLIENTFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="an admin URL; the benchmark creates and drops its own databases",
    )
    parser.add_argument(
        "--no-postfix",
        action="store_true",
        help="use the aiosmtpd sink (separate process) even if smtp-sink works",
    )
    parser.add_argument(
        "--profile-clients-add",
        type=Path,
        default=None,
        metavar="FILE",
        help="py-spy record (raw) the worker during clients.add into FILE",
    )
    parser.add_argument(
        "--profile-latency",
        type=Path,
        default=None,
        metavar="FILE",
        help="py-spy record (raw) the worker during the latency run into FILE",
    )
    parser.add_argument(
        "--profile-notifications",
        type=Path,
        default=None,
        metavar="FILE",
        help="py-spy record (raw) the worker during notifications.send into FILE",
    )
    parser.add_argument(
        "--profile-invoice-run",
        type=Path,
        default=None,
        metavar="FILE",
        help="py-spy record (raw) the worker during the invoice run into FILE",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="the --profile-... records sample only threads holding the GIL (CPU, not wall)",
    )
    parser.add_argument(
        "--no-time-box",
        action="store_true",
        help="quick mode without its time boxes (every phase runs to its last item)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a clientflow setting for the workers, as CLIENTFLOW_NAME=VALUE (repeatable): "
        "to measure a setting against the defaults",
    )
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if any("=" not in setting for setting in args.setting):
        parser.error("--setting takes NAME=VALUE")
    if "latency" in args.only and "clients_add" not in args.only:
        parser.error("latency runs on the clients_add worker: add clients_add to --only")
    if args.redis_url.rstrip("/").endswith("/15"):
        parser.error("database 15 belongs to the tests (they flush it); use one of your own")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = QUICK if args.quick else FULL
    sizes = Sizes(
        **{
            name: value if (value := getattr(args, name)) is not None else default
            for name, default in asdict(base).items()
        }
    )
    # Not a terminal (make's output piped or logged): wide enough for the table.
    console = Console(width=None if sys.stdout.isatty() else 200)
    mode = "quick" if args.quick else "full"
    mode_note = (
        f"Invoice run on {sizes.invoices:,} invoices"
        + (
            " (quick mode: not 100,000, nor 20,000, to stay under two minutes)"
            if args.quick
            else ""
        )
        + f"; clients.add {sizes.clients_add:,} events, notifications.send "
        f"{sizes.notifications:,}, no-op tasks {sizes.ceiling_tasks:,}, SMTP messages "
        f"{sizes.smtp_messages:,}, latency run {sizes.latency_seconds:g} s."
    )
    if args.quick and not args.no_time_box:
        boxes = ", ".join(f"{k} {v:g} s" for k, v in TIME_BOXES.items())
        mode_note += f" Each phase time-boxed ({boxes}): a boxed one reports what it did."
    console.rule(f"clientflow bench ({mode})")
    console.print(mode_note)
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    started_at = datetime.now(UTC)
    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="clientflow-bench-"))
    broker = redis.Redis.from_url(args.redis_url)
    broker.ping()
    runner = Runner(console)
    ctx = Context(args, sizes, runner, workdir, broker)
    phases: dict[str, Callable[[Context], None]] = {
        "ceiling": phase_ceiling,
        "smtp": phase_smtp,
        "clients_add": phase_clients_add,
        "notifications": phase_notifications,
        "invoice_run": phase_invoice_run,
        "invoice_run_no_pdf": phase_invoice_run_no_pdf,
        "ceiling_end": phase_ceiling_again,
    }
    # C again at the end when it was measured first and something after it, except in the
    # time-boxed quick mode (two minutes).
    measure_c_again = (
        "ceiling" in args.only and len(args.only) > 1 and not (args.quick and not args.no_time_box)
    )
    try:
        with runner.progress:
            for name, run in phases.items():
                if name not in args.only and not (name == "ceiling_end" and measure_c_again):
                    continue
                phase_started = time.perf_counter()
                try:
                    run(ctx)
                    ctx.results[name]["phase_seconds"] = round(
                        time.perf_counter() - phase_started, 1
                    )
                except Exception as exc:  # one broken phase must not lose the others
                    ctx.results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                    console.print(f"[red]{name} failed:[/] {exc}")
                    console.print(traceback.format_exc(limit=3), markup=False)
                    for log in sorted(workdir.glob(f"{name}*.log")):
                        tail = log.read_text(errors="replace").splitlines()[-15:]
                        console.print(f"{log}:\n" + "\n".join(tail), markup=False)
                finally:
                    ctx.drop_databases()
    finally:
        broker.flushdb()
        broker.close()
        ctx.drop_databases()
    failures = sum(1 for r in ctx.results.values() if "error" in r)
    report = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "mode": mode,
        "mode_note": mode_note,
        "sizes": asdict(sizes),
        "concurrency": args.concurrency,
        "settings": ctx.settings,
        "sink": sorted(ctx.sink_kinds),
        "machine": machine(load_before),
        "git": git_revision(),
        "seconds": round(time.perf_counter() - began, 1),
        "results": ctx.results,
    }
    table = rows(ctx.results)
    show(console, table, report)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = started_at.strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    md, js = args.results_dir / f"{stem}.md", args.results_dir / f"{stem}.json"
    md.write_text(markdown(report, table))
    js.write_text(json.dumps(report, indent=2) + "\n")
    console.print(
        f"written: {md.relative_to(ROOT) if md.is_relative_to(ROOT) else md}, "
        f"{js.relative_to(ROOT) if js.is_relative_to(ROOT) else js}"
    )
    if failures:
        console.print(f"[red]{failures} phase(s) failed; worker logs kept in {workdir}[/]")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def show(console: Console, table: list[Row], report: dict[str, Any]) -> None:
    rich_table = Table(title=f"clientflow bench ({report['mode']}), {report['started_at']}")
    for number, name in enumerate(COLUMNS):
        rich_table.add_column(name, justify="right" if 1 <= number <= 3 else "left")
    for row in table:
        rich_table.add_row(*row)
    console.print(rich_table)
    load = report["machine"]
    for line in bounds(report["results"], load["cpus"] or 1):
        console.print(line, markup=False)
    console.print(
        f"SMTP sink: {'; '.join(report['sink'])}. {report['mode_note']} Load average "
        f"{load['loadavg_before']} before, {load['loadavg_after']} after (nice {load['nice']}). "
        f"Wall time {report['seconds']:.0f} s."
    )


if __name__ == "__main__":
    sys.exit(main())
