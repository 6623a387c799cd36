"""A worker process's task outcomes, counted in memory and written to task_stats together.

Writing one upsert after every task put a transaction on one hot row in the hot path (a tenth
of a pool process's time in the clients.add profile). Here a process adds runs to its buffer
and writes them at most once per FLUSH_SECONDS, from a timer, so an idle worker's last runs
still reach ops within that time. What a SIGKILLed process had not written yet (under
FLUSH_SECONDS of counts) is lost: counters for ops, not records.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from models.base import utcnow
from services.db import SessionFactory
from services.task_stats import OUTCOMES, Count, record_outcomes

FLUSH_SECONDS = 1.0

log = logging.getLogger(__name__)


class OutcomeBuffer:
    def __init__(
        self,
        sessions: Callable[[], SessionFactory],
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self._sessions = sessions
        self._flush_seconds = flush_seconds
        self._pending: dict[tuple[datetime, str, str], Count] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def add(self, task_name: str, outcome: str, runtime_seconds: float) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        bucket = utcnow().replace(second=0, microsecond=0)
        with self._lock:
            count = self._pending.setdefault((bucket, task_name[:64], outcome), Count())
            count.runs += 1
            count.runtime += runtime_seconds
            if self._timer is None:
                self._timer = threading.Timer(self._flush_seconds, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Write what is pending in one transaction (also called at process shutdown)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        if not pending:
            return
        try:
            record_outcomes(self._sessions(), pending)
        except Exception:
            # Counting is bookkeeping: keep the counts for the next flush, the task stands.
            log.warning("could not write %d task counters; kept for later", len(pending),
                        exc_info=True)  # fmt: skip
            with self._lock:
                for key, count in pending.items():
                    self._pending.setdefault(key, Count()).merge(count)
