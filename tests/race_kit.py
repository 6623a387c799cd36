"""Several workers racing on the same records: publishing pairs, reading back from the workers'
logs who ran what and whether the two halves really met, and the audit every race ends with
(tests/test_many_workers.py).

A race proves something only if it happened, so each pair is reported as the logs tell it:
taken by two different workers, in flight on both at once (each received before the other
finished), and met in the database (one of them was applied again after an IntegrityError,
services.dispatch logs it).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from smtp_sink import SmtpSink
from sqlalchemy import func, select
from worker_process import WorkerProcess, wait_until

from models import DeadLetter, EmailMessage, ProcessedEvent, RejectedEvent
from models.emails import EmailStatus

SETTLE_TIMEOUT = 180.0
QUORUM_TICK_SECONDS = 5.5

# Celery's worker log format: "[2026-03-01 12:00:00,123: INFO/ForkPoolWorker-1] message".
_STAMP = r"^\[(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): \w+/[\w-]+\] "
TASK_LINE = re.compile(
    _STAMP + r"Task (?P<task>[\w.]+)\[(?P<id>[0-9a-f-]{36})\] "
    r"(?:(?P<received>received)|succeeded in \S+: '(?P<outcome>\w+)'|retry: (?P<retry>.*))",
    re.MULTILINE,
)
MET_LINE = re.compile(
    _STAMP + r"event (?P<event_id>\S+) met a concurrent change \((?P<why>.*)\); applying it again",
    re.MULTILINE,
)
# What no race may cause: an error logged by Celery, a traceback, an IntegrityError seen by a
# task, or a retry because the second application collided again (services.dispatch).
TROUBLE = re.compile(
    r": (?:ERROR|CRITICAL)/|Traceback|IntegrityError|concurrent change while applying"
)


def _time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f")


@dataclass
class Run:
    """One task (one published message) as the workers' logs tell it."""

    node: str = ""  # the worker that finished it
    outcome: str = ""  # what the task returned: applied, duplicate, rejected
    received: datetime | None = None  # first reserved by a worker
    finished: datetime | None = None
    retries: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Pair:
    """Two messages published back to back to race each other."""

    task_ids: tuple[str, str]
    event_ids: tuple[str, str]


class Crew:
    """Running workers on one broker and database, the SMTP sink they all send to, and what
    the test published to them."""

    def __init__(self, workers: list[WorkerProcess], smtp: SmtpSink) -> None:
        self.workers = workers
        self.smtp = smtp
        self.sessions = workers[0].sessions
        self.pids = {worker.hostname: worker.pid for worker in workers}

    def publish(self, name: str, payload: dict[str, Any]) -> str:
        """Publish as upstream does (WorkerProcess.publish); the task id, which the workers'
        log lines name, comes back."""
        return str(self.workers[0].app.send_task(name, kwargs=payload).id)

    def race(self, first: tuple[str, dict[str, Any]], second: tuple[str, dict[str, Any]]) -> Pair:
        """Publish the two back to back: the next two free pool processes take them."""
        return Pair(
            (self.publish(*first), self.publish(*second)),
            (first[1]["event_id"], second[1]["event_id"]),
        )

    # -- what the logs say ---------------------------------------------------------------

    def logs(self) -> dict[str, str]:
        return {worker.hostname: worker.log_text() for worker in self.workers}

    def runs(self) -> dict[str, Run]:
        runs: dict[str, Run] = {}
        for node, text in self.logs().items():
            for match in TASK_LINE.finditer(text):
                run = runs.setdefault(match["id"], Run())
                at = _time(match["at"])
                if match["received"]:
                    run.received = min(run.received or at, at)
                elif match["retry"] is not None:
                    run.retries.append(f"{node}: {match['retry']}")
                else:
                    run.node, run.outcome, run.finished = node, match["outcome"], at
        return runs

    def met(self) -> Counter[str]:
        """How many times each event id was applied again after an IntegrityError."""
        return Counter(
            match["event_id"]
            for text in self.logs().values()
            for match in MET_LINE.finditer(text)
        )

    def trouble(self) -> list[str]:
        return [
            f"{node}: {line}"
            for node, text in self.logs().items()
            for line in text.splitlines()
            if TROUBLE.search(line)
        ]

    def report(self, pairs: list[Pair]) -> RaceReport:
        runs, met = self.runs(), self.met()
        report = RaceReport(pairs=len(pairs))
        for pair in pairs:
            first, second = (runs.get(task_id, Run()) for task_id in pair.task_ids)
            report.outcomes[(first.outcome or "?", second.outcome or "?")] += 1
            report.retries += first.retries + second.retries
            if first.node and second.node and first.node != second.node:
                report.on_two_workers += 1
                if _overlap(first, second):
                    report.together += 1
            if any(met[event_id] for event_id in set(pair.event_ids)):
                report.met += 1
        return report

    # -- waiting and the audit -----------------------------------------------------------

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Until no message waits or is held, no email is owed, and the sink has every email
        the log says was sent."""
        broker = self.workers[0]

        def settled() -> bool:
            if not broker.broker_idle():
                return False
            with self.sessions() as session:
                statuses = dict(
                    session.execute(
                        select(EmailMessage.status, func.count()).group_by(EmailMessage.status)
                    ).all()
                )
            if statuses.get(EmailStatus.QUEUED) or statuses.get(EmailStatus.SENDING):
                return False
            return len(self.smtp.messages) >= statuses.get(EmailStatus.SENT, 0)

        def state() -> str:
            return f"a settled crew ({broker.queue_state()}, received {len(self.smtp.messages)})"

        try:
            wait_until(settled, state, timeout=timeout, interval=0.2)
            wait_until(settled, state, timeout=timeout, interval=0.2)  # twice: see wait_idle
            if broker.vhost is not None:
                # rabbitmqctl reports a quorum queue's counts as of its last tick (every 5 s):
                # idle must still hold after one, or the last messages were not counted yet.
                time.sleep(QUORUM_TICK_SECONDS)
                wait_until(settled, state, timeout=timeout, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tails()}") from None

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {worker.hostname} log tail:\n{worker.log_tail(lines)}" for worker in self.workers
        )

    def received_keys(self) -> Counter[str]:
        return Counter(
            str(received.message["X-Clientflow-Idempotency-Key"]).strip()
            for received in self.smtp.messages
        )

    def audit(self) -> None:
        """What must hold after any race: every worker still up (same pid), nothing in dead
        letters, every email sent exactly once, every refusal with a reason and none left
        waiting, nothing troubling in any log."""
        alive = {w.hostname: (w.alive, w.pid) for w in self.workers}
        assert all(up for up, _ in alive.values()), f"a worker exited: {alive}"
        assert {node: pid for node, (_, pid) in alive.items()} == self.pids
        received = self.received_keys()
        with self.sessions() as session:
            letters = [(d.task_name, d.reason) for d in session.scalars(select(DeadLetter))]
            emails = list(session.scalars(select(EmailMessage)))
            refusals = list(session.scalars(select(RejectedEvent)))
        assert letters == [], f"dead letters: {letters}"
        statuses = Counter(str(email.status) for email in emails)
        assert set(statuses) <= {EmailStatus.SENT}, f"emails not sent: {statuses}"
        twice = {key: n for key, n in received.items() if n > 1}
        assert twice == {}, f"emails received more than once (key: count): {twice}"
        logged = {email.idempotency_key for email in emails}
        assert set(received) == logged, (
            f"sink and message log differ: {len(received)} keys received, {len(logged)} "
            f"logged; unlogged {sorted(set(received) - logged)[:5]}, "
            f"lost {sorted(logged - set(received))[:5]}"
        )
        unclear = [(r.event_id, r.reason) for r in refusals if len(r.reason.strip()) < 10]
        assert unclear == [], f"refusals without a clear reason: {unclear}"
        held = [(r.event_id, r.reason) for r in refusals if r.waiting_for and not r.released_at]
        assert held == [], f"events still held, never released: {held}"
        trouble = self.trouble()
        assert trouble == [], "worker logs:\n" + "\n".join(trouble[:20])

    def processed(self, event_ids: list[str]) -> set[str]:
        with self.sessions() as session:
            return set(
                session.scalars(
                    select(ProcessedEvent.event_id).where(ProcessedEvent.event_id.in_(event_ids))
                )
            )

    def refusals(self, event_ids: list[str]) -> dict[str, list[str]]:
        """Each refused event id with its reasons (one, unless it was refused twice)."""
        found: dict[str, list[str]] = {}
        with self.sessions() as session:
            for row in session.scalars(
                select(RejectedEvent)
                .where(RejectedEvent.event_id.in_(event_ids))
                .order_by(RejectedEvent.id)
            ):
                found.setdefault(row.event_id or "", []).append(row.reason)
        return found


def _overlap(first: Run, second: Run) -> bool:
    """Each was received before the other finished: both were in flight at once."""
    if (
        first.received is None
        or first.finished is None
        or second.received is None
        or second.finished is None
    ):
        return False
    return first.received <= second.finished and second.received <= first.finished


@dataclass
class RaceReport:
    """What happened to a batch of race pairs, for assertion messages."""

    pairs: int
    on_two_workers: int = 0
    together: int = 0
    met: int = 0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        outcomes = ", ".join(f"{a}+{b}: {n}" for (a, b), n in sorted(self.outcomes.items()))
        return (
            f"{self.pairs} pairs: {self.on_two_workers} taken by two workers, {self.together} "
            f"of them in flight on both at once, {self.met} met in the database (applied "
            f"again after an IntegrityError); outcomes {{{outcomes}}}; "
            f"{len(self.retries)} retries {self.retries[:5]}"
        )

    def assert_raced(self) -> None:
        """A race test that never raced proves nothing: at least one pair must have been in
        flight on two workers at once."""
        assert self.together >= 1, f"no race happened: {self}"
