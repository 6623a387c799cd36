"""Where a benchmark's CPU goes: the workers, the database's backends, Redis, the SMTP sink, and
the machine as a whole (shared: what others use shows as the rest), read from /proc.

Like harness.py, nothing here imports the clientflow application.
"""

from __future__ import annotations

import os
import threading
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
