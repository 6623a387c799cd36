"""Where a benchmark's CPU goes: the workers, the database's backends, Redis, the SMTP sink, and
the machine as a whole (shared: what others use shows as the rest), read from /proc.

Like harness.py, nothing here imports the clientflow application.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import psycopg

TICK = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """User + system CPU of one process so far; 0 once it is gone."""
    with suppress(FileNotFoundError, ProcessLookupError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)
    return 0.0


def machine_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of every core since boot: /proc/stat's first line."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / TICK, sum(values) / TICK


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class BackendCpu:
    """CPU used by the PostgreSQL backends of one database while it runs.

    Backends come and go with the workers' connection pools, so their pids are sampled twice a
    second (pg_stat_activity) and each one's CPU read from /proc: a backend already there at
    the start counts from its reading then, a later one from zero. A backend that ends between
    two samples loses what it used since the last one (a pool keeps its connections, so few do).
    """

    def __init__(self, admin_url: str, database: str, interval: float = 0.5) -> None:
        self._admin_url, self._database, self._interval = admin_url, database, interval
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def start(self) -> None:
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            for pid in self._pids(conn):
                self._first[pid] = self._last[pid] = process_seconds(pid)
        self._thread.start()

    def stop(self) -> float:
        """Seconds the database's backends used since start()."""
        self._stop.set()
        self._thread.join()
        return sum(last - self._first.get(pid, 0.0) for pid, last in self._last.items())

    def used(self) -> float:
        """Seconds the database's backends used since start(), read now: the backends are
        listed afresh (a worker's pool may have opened some since the last sample)."""
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            pids = set(self._pids(conn)) | set(self._last)
        readings = {pid: process_seconds(pid) for pid in pids}
        self._last.update({pid: used for pid, used in readings.items() if used})
        return sum(last - self._first.get(pid, 0.0) for pid, last in list(self._last.items()))

    def _sample_until_stopped(self) -> None:
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            while True:
                for pid in self._pids(conn):
                    used = process_seconds(pid)
                    if used:
                        self._last[pid] = used
                if self._stop.wait(self._interval):
                    return

    def _pids(self, conn: psycopg.Connection[tuple[int]]) -> list[int]:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self._database,)
        ).fetchall()
        return [row[0] for row in rows]


def _machine_busy() -> float:
    return machine_seconds()[0]


# The parts of a CPU split, in the order they are shown; "machine" is every core's busy time.
PARTS = ("worker", "postgres", "redis", "sink", "machine")


class CpuSplit:
    """Where a phase's CPU goes, read at two moments: each part's seconds between them.

    Each part is a callable giving its CPU seconds so far; the machine's busy seconds (every
    process on every core, this benchmark's own polling included) are added, so what the named
    parts do not explain shows as the difference.
    """

    def __init__(self, parts: dict[str, Callable[[], float]]) -> None:
        self._parts: dict[str, Callable[[], float]] = {**parts, "machine": _machine_busy}
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.items_at_first = 0

    def read(self) -> dict[str, float]:
        return {name: seconds() for name, seconds in self._parts.items()}

    def mark_first(self, items_done: int) -> None:
        self.first, self.items_at_first = self.read(), items_done

    def mark_last(self) -> None:
        self.last = self.read()

    def ms_per_item(self, items_done: int) -> dict[str, float]:
        """Milliseconds of each part per item done between the two marks (items_done: the
        count at the second)."""
        items = items_done - self.items_at_first
        if not self.first or not self.last or items <= 0:
            return {}
        return {
            name: round(1000 * (self.last[name] - self.first[name]) / items, 3)
            for name in self._parts
        }
