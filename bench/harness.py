"""What the benchmarks share: worker processes, their memory, the broker's state, data loading.

Used by bench/invoice_run.py, bench/redis_fetch.py and bench/run.py. Nothing here imports the
clientflow application code, so bench/ceiling.py's stock Celery worker stays free of it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
# One copy of the helpers the benchmarks share with the tests, in tests/servers.py (free of
# application code too). bench/run.py puts tests/ on the path, invoice_run.py and
# redis_fetch.py do not, so this module does it for all of them.
sys.path.insert(0, str(ROOT / "tests"))

# Re-exported: the other bench scripts take them from here.
from servers import environ_without_settings as environ_without_settings  # noqa: E402
from servers import free_port as free_port  # noqa: E402
from servers import wait_until as wait_until  # noqa: E402

# Celery's built-in task that only returns its arguments: a no-op every clientflow worker knows.
NOOP_TASK = "celery.accumulate"

# The invoice run's date in every benchmark: the loaded invoices are dated this day.
RUN_DATE = date(2026, 3, 1)


def broker_idle(client: redis.Redis, queues: Sequence[str]) -> bool:
    """No message waits in a queue and none is held unacknowledged (kombu's `unacked` hash)."""
    pipe = client.pipeline()
    for queue in queues:
        pipe.llen(queue)
    pipe.hlen("unacked")
    return not any(pipe.execute())


def outstanding(client: redis.Redis, queues: Sequence[str]) -> int:
    """Messages waiting in the queues plus those held unacknowledged."""
    pipe = client.pipeline()
    for queue in queues:
        pipe.llen(queue)
    pipe.hlen("unacked")
    return sum(int(n) for n in pipe.execute())


# -- worker processes -------------------------------------------------------------------------


def worker_env(
    broker_url: str,
    database_url: str = "",
    smtp_url: str = "",
    data_dir: Path | None = None,
    **extra: str,
) -> dict[str, str]:
    """os.environ without any CLIENTFLOW_* setting, plus the worker's own settings."""
    env = environ_without_settings()
    env["CLIENTFLOW_BROKER_URL"] = broker_url
    if database_url:
        env["CLIENTFLOW_DATABASE_URL"] = database_url
    if smtp_url:
        env["CLIENTFLOW_SMTP_URL"] = smtp_url
    if data_dir is not None:
        # Nothing should land here, but if something did it must not be the repository.
        env["CLIENTFLOW_DATA_DIR"] = str(data_dir)
    env.update({f"CLIENTFLOW_{k.upper()}": v for k, v in extra.items()})
    return env


@contextmanager
def worker(
    env: dict[str, str],
    concurrency: int,
    log: Path,
    queues: Sequence[str],
    app: str = "workers.app",
    stop_timeout: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """A prefork `celery -A app worker` in its own process group, ended (group and all) on exit:
    SIGTERM (warm shutdown), and SIGKILL after stop_timeout seconds."""
    command = [
        sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "prefork",
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
            proc.wait(timeout=stop_timeout)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (the worker and its pool processes), parents first."""
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        with suppress(FileNotFoundError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                with suppress(FileNotFoundError):
                    children = [int(c) for c in (task / "children").read_text().split()]
                    found += children
                    frontier += children
    return found


@dataclass(frozen=True)
class Memory:
    """One process's resident set from /proc/PID/status, MiB: now (VmRSS) and peak (VmHWM)."""

    pid: int
    role: str  # "main" or "pool"
    rss_mib: float
    peak_mib: float


def memory(pid: int) -> list[Memory]:
    """The worker (main) and each of its pool processes, as the kernel sees them now."""
    found = []
    for process in process_tree(pid):
        fields: dict[str, float] = {}
        with suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{process}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) / 1024
        if len(fields) == 2:
            role = "main" if process == pid else "pool"
            found.append(Memory(process, role, fields["VmRSS"], fields["VmHWM"]))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU the worker and its pool processes have used so far, in seconds."""
    ticks = 0
    for process in process_tree(pid):
        with suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{process}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> dict[int, float]:
    """VmHWM (the kernel's peak resident set) of the worker and each pool process, MiB."""
    return {m.pid: m.peak_mib for m in memory(pid)}


# -- data -----------------------------------------------------------------------------------


def _libpq(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def load(database_url: str, invoices: int, clients: int, seed: int = 7) -> int:
    """COPY clients, contacts and unpaid invoices in; returns the emails the run will owe."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    owed = 0
    with psycopg.connect(_libpq(database_url)) as conn:
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


def load_contacts(database_url: str, clients: int, contacts: int, category: str) -> list[str]:
    """COPY clients N0.. each with `contacts` contacts ticked for category; returns their ids.

    Every address differs, so a notification of that category to one of them owes
    contacts + 1 emails (the holder and each contact).
    """
    categories = ("general", "product", "domain", "invoice", "support")
    if category not in categories:
        raise ValueError(f"unknown category {category!r}")
    ticks = tuple(c == category for c in categories)
    now = datetime.now(UTC)
    ids = [f"N{c}" for c in range(clients)]
    with psycopg.connect(_libpq(database_url)) as conn:
        with conn.cursor().copy(
            "COPY clients (id, firstname, lastname, companyname, email, address1, city, state,"
            " postcode, country, phonenumber, status, invoice_emails, created_at, updated_at)"
            " FROM STDIN"
        ) as copy:
            for c, client_id in enumerate(ids):
                copy.write_row(
                    (client_id, "Ada", f"Client{c}", f"Company {c}", f"n{c}@bench.example",
                     f"{c} Main Street", "London", "Greater London", "SW1Y 4JH", "GB",
                     "+44 20 7946 0000", "Active", True, now, now)
                )  # fmt: skip
        with conn.cursor().copy(
            "COPY contacts (id, client_id, firstname, lastname, email, general, product, domain,"
            " invoice, support, created_at, updated_at) FROM STDIN"
        ) as copy:
            for c, client_id in enumerate(ids):
                for k in range(contacts):
                    copy.write_row(
                        (f"{client_id}K{k}", client_id, "Mary", f"Contact{k}",
                         f"n{c}k{k}@bench.example", *ticks, now, now)
                    )  # fmt: skip
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("ANALYZE")
    return ids
