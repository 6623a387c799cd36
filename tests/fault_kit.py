"""The harness of the fault suite: a stream of events, a worker to break, and the final audit.

Each fault test publishes a stream of at least 2,000 events (clients with a welcome email and
one notification each) from a background thread that retries like a careful upstream
publisher, breaks something mid-stream, lets the system recover, and then audits: every event
applied, every email the database owes received by the SMTP server exactly once (or failed
with its reply where the test made it fail), nothing left pending.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import payloads
from rabbitmq_server import Vhost
from smtp_sink import SmtpSink
from sqlalchemy import func, select
from worker_process import WorkerProcess, wait_until

from models import DeadLetter, EmailMessage, OutboxMessage, ProcessedEvent, RejectedEvent
from models.settings import Settings
from services.db import SessionFactory
from workers.app import create_app

CLIENTS = 1000  # two events each: 2,000 events, 2,000 emails
SETTLE_TIMEOUT = 180.0

# Small numbers so that recovery happens within a test, with the same code paths as
# production: retries back off up to 1 s, Redis hands unacknowledged messages of a dead
# worker to the next one after 5 s, beat relays the outbox every second, an email claim
# older than 5 s counts as abandoned, and a queued email untouched for 10 s as forgotten.
FAULT_SETTINGS = {
    "retry_backoff_base": "0.2",
    "retry_backoff_max": "1",
    "redis_visibility_timeout": "5",
    "redis_restore_interval": "1",
    "redis_restore_lock_seconds": "5",
    "outbox_relay_seconds": "1",
    "outbox_min_age_seconds": "2",
    "sending_lease_seconds": "5",
    "email_redeliver_after_seconds": "10",
    "email_max_retries": "100",
    "event_max_retries": "100",
}


def event_stream(clients: int = CLIENTS) -> list[tuple[str, dict[str, Any]]]:
    """clients.add then notifications.send for each client, interleaved in pairs."""
    events: list[tuple[str, dict[str, Any]]] = []
    for number in range(clients):
        client_id = f"F{number:05d}"
        events.append(("clients.add", payloads.client(client_id)))
        events.append(("notifications.send", payloads.notification(client_id, "general")))
    return events


class Publisher(threading.Thread):
    """Publishes the stream, retrying each event until the broker takes it."""

    def __init__(self, broker_url: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        super().__init__(daemon=True)
        self.app = create_app(Settings(broker_url=broker_url))
        self.events = events
        self.published = 0
        self.publish_retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for name, payload in self.events:
                while True:
                    try:
                        self.app.send_task(name, kwargs=payload)
                        break
                    except Exception:
                        self.publish_retries += 1
                        time.sleep(0.2)
                self.published += 1
        except BaseException as exc:  # surfaced by join()
            self.error = exc
        finally:
            self.app.close()

    def join_and_check(self, timeout: float = SETTLE_TIMEOUT) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the publisher did not finish"
        if self.error is not None:
            raise self.error


@dataclass
class Audit:
    events: int
    applied: int
    emails_owed: int
    received: int
    lost: list[str]
    duplicated: dict[str, int]
    failed: dict[str, str]
    pending_outbox: int
    unfinished_emails: int
    dead_letters: int
    refused: list[str]
    resent_keys: set[str] = field(default_factory=set)

    def line(self, **extra: object) -> str:
        figures = {
            "events": self.events,
            "applied": self.applied,
            "emails": self.received,
            "owed": self.emails_owed,
            "lost": len(self.lost),
            "duplicated": sum(self.duplicated.values()),
            "failed": len(self.failed),
            **extra,
        }
        return "FAULTS " + " ".join(f"{k}={v}" for k, v in figures.items())


def processed_count(sessions: SessionFactory) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0


def wait_for_progress(sessions: SessionFactory, at_least: int, timeout: float = 120) -> None:
    wait_until(
        lambda: processed_count(sessions) >= at_least,
        lambda: f"{at_least} events applied (have {processed_count(sessions)})",
        timeout=timeout,
    )


def settle(
    sessions: SessionFactory,
    smtp: SmtpSink,
    stream: list[tuple[str, dict[str, Any]]],
    expect_failed: int = 0,
) -> None:
    """Until every event is applied, nothing is owed and the server has every email."""
    events = len(stream)

    def settled() -> bool:
        with sessions() as session:
            applied = session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0
            unfinished = session.scalar(
                select(func.count()).where(EmailMessage.status.in_(("queued", "sending")))
            )
            pending = session.scalar(
                select(func.count()).where(OutboxMessage.published_at.is_(None))
            )
            owed = session.scalar(select(func.count()).select_from(EmailMessage)) or 0
        return (
            applied >= events
            and not unfinished
            and not pending
            and len(smtp.messages) >= owed - expect_failed
        )

    def state() -> str:
        with sessions() as session:
            statuses = dict(
                session.execute(
                    select(EmailMessage.status, func.count()).group_by(EmailMessage.status)
                ).all()
            )
            applied = set(session.scalars(select(ProcessedEvent.event_id)))
            missing = [(n, p["event_id"]) for n, p in stream if p["event_id"] not in applied]
            refusals = {
                r.event_id: (r.reason, r.waiting_for, r.released_at)
                for r in session.scalars(
                    select(RejectedEvent).where(
                        RejectedEvent.event_id.in_([e for _, e in missing[:20]])
                    )
                )
            }
        return (
            f"a settled system (applied {len(applied)}/{events}, emails {statuses}, "
            f"received {len(smtp.messages)}, missing {missing[:20]}, their rejections "
            f"{refusals})"
        )

    wait_until(settled, state, timeout=SETTLE_TIMEOUT, interval=0.5)


def audit(sessions: SessionFactory, smtp: SmtpSink, events: int) -> Audit:
    received = Counter(
        str(r.message["X-Clientflow-Idempotency-Key"]).strip() for r in smtp.messages
    )
    with sessions() as session:
        rows = list(session.scalars(select(EmailMessage)))
        applied = session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0
        pending = (
            session.scalar(select(func.count()).where(OutboxMessage.published_at.is_(None))) or 0
        )
        letters = session.scalar(select(func.count()).select_from(DeadLetter)) or 0
        # Held events that were released and applied are fine; anything else was refused.
        refused = [
            r.reason
            for r in session.scalars(select(RejectedEvent))
            if not (r.waiting_for and r.released_at)
        ]
    sent = {m.idempotency_key for m in rows if m.status == "sent"}
    failed = {m.idempotency_key: m.last_error or "" for m in rows if m.status == "failed"}
    return Audit(
        events=events,
        applied=applied,
        emails_owed=len(rows),
        received=sum(received.values()),
        lost=sorted(sent - set(received)),
        duplicated={key: n - 1 for key, n in received.items() if n > 1},
        failed=failed,
        pending_outbox=pending,
        unfinished_emails=sum(1 for m in rows if m.status in ("queued", "sending")),
        dead_letters=letters,
        refused=refused,
        resent_keys={m.idempotency_key for m in rows if m.attempts > 1},
    )


def assert_nothing_lost(result: Audit, expect_failed: int = 0) -> None:
    assert result.applied == result.events, result.line()
    assert result.emails_owed == result.events  # a welcome and a notification per client
    assert result.lost == [], result.line()
    assert result.pending_outbox == 0
    assert result.unfinished_emails == 0
    assert result.dead_letters == 0
    assert result.refused == []
    assert len(result.failed) == expect_failed, result.failed


def fault_worker(
    *,
    broker_url: str,
    database_url: str,
    smtp_url: str,
    workdir: Path,
    flush: bool,
    vhost: Vhost | None = None,
) -> WorkerProcess:
    return WorkerProcess(
        broker_url=broker_url,
        vhost=vhost,
        database_url=database_url,
        smtp_url=smtp_url,
        workdir=workdir,
        extra_settings=FAULT_SETTINGS,
        flush=flush,
        beat=True,
    )
