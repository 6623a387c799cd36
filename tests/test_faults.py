"""The fault suite: under crashes, outages and bad input nothing is lost and nothing is sent twice.

Every test runs a real worker (with embedded beat for the outbox relay), its own redis-server,
the real PostgreSQL and an in-process SMTP server, publishes 2,000 events and audits the end
state (see fault_kit.py). Each prints one FAULTS line with its figures.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import payloads
import psycopg
import pytest
import redis
from fault_kit import (
    Audit,
    Publisher,
    assert_nothing_lost,
    audit,
    event_stream,
    fault_worker,
    processed_count,
    settle,
    wait_for_progress,
)
from hostile_kit import HOLDER, bad_messages, publish_bad
from hypothesis import HealthCheck, given, settings
from servers import RedisServer
from smtp_sink import SmtpSink
from sqlalchemy import func, select
from worker_process import WorkerProcess, wait_until

from models import EmailMessage, ProcessedEvent, RejectedEvent
from models.engine import make_engine
from models.settings import Settings
from services.db import SessionFactory, make_session_factory
from workers.app import create_app

pytestmark = [pytest.mark.faults, pytest.mark.worker]


class Rig:
    """One fault test's world: its own Redis, a fresh database, the SMTP sink, a worker."""

    def __init__(self, redis: RedisServer, database_url: str, smtp: SmtpSink, root: Path) -> None:
        self.redis = redis
        self.database_url = database_url
        self.smtp = smtp
        self.root = root
        self.engine = make_engine(database_url)
        self.sessions: SessionFactory = make_session_factory(self.engine)
        self.starts = 0
        self.worker = self._new_worker(flush=True)

    def _new_worker(self, flush: bool) -> WorkerProcess:
        self.starts += 1
        worker = fault_worker(
            broker_url=self.redis.url,
            database_url=self.database_url,
            smtp_url=self.smtp.url,
            workdir=self.root / f"worker-{self.starts}",
            flush=flush,
        )
        worker.start()
        return worker

    def broker_state(self) -> str:
        """What Redis holds when a test does not settle: queues, unacked entries, the mutex."""
        try:
            client = redis.Redis.from_url(self.redis.url)
            now = time.time()
            entries: Any = client.zrange("unacked_index", 0, -1, withscores=True)
            ages = [round(now - float(score), 1) for _, score in entries]
            state = {
                "queues": {name: client.llen(name) for name in ("events", "emails", "celery")},
                "unacked": client.hlen("unacked"),
                "unacked_ages_s": ages[:20],
                "restore_mutex_ttl_s": client.ttl("unacked_mutex"),
            }
            client.close()
            return str(state)
        except redis.RedisError as exc:
            return f"unreadable: {exc}"

    def restart_worker(self) -> None:
        self.worker = self._new_worker(flush=False)

    def close(self) -> None:
        self.worker.close()
        self.engine.dispose()


@pytest.fixture
def rig(new_postgres_database: Callable[[], str], smtp: SmtpSink, tmp_path: Path) -> Iterator[Rig]:
    with RedisServer(persistent=True) as redis:
        world = Rig(redis, new_postgres_database(), smtp, tmp_path)
        try:
            yield world
        finally:
            world.close()


def run_stream(rig: Rig, fault: Callable[[], dict[str, object]], expect_failed: int = 0) -> Audit:
    events = event_stream()
    publisher = Publisher(rig.redis.url, events)
    publisher.start()
    figures = fault()
    publisher.join_and_check()
    try:
        settle(rig.sessions, rig.smtp, events, expect_failed)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nbroker: {rig.broker_state()}\nworker log tail:\n{rig.worker.log_tail(60)}"
        ) from None
    result = audit(rig.sessions, rig.smtp, len(events))
    print(result.line(publish_retries=publisher.publish_retries, **figures))
    return result


def test_worker_killed_with_sigkill_mid_stream(rig: Rig) -> None:
    def kill_repeatedly() -> dict[str, object]:
        kills = 0
        for fraction in (0.1, 0.3, 0.5, 0.7):
            wait_for_progress(rig.sessions, int(2 * 1000 * fraction))
            rig.worker.kill()
            kills += 1
            rig.restart_worker()
        return {"kills_survived": kills}

    result = run_stream(rig, kill_repeatedly)

    assert_nothing_lost(result)
    # The one window left: the SMTP server accepted a message and the worker died before
    # recording it. Such a message was claimed twice (attempts > 1), at most one per pool
    # process per kill.
    assert set(result.duplicated) <= result.resent_keys
    assert sum(result.duplicated.values()) <= 4 * 2


def test_redis_stopped_for_ten_seconds_mid_stream(rig: Rig) -> None:
    def outage() -> dict[str, object]:
        wait_for_progress(rig.sessions, 500)
        rig.redis.stop()
        time.sleep(10)
        rig.redis.start()
        return {"redis_outage_s": 10}

    result = run_stream(rig, outage)

    assert_nothing_lost(result)
    assert result.duplicated == {}


def test_smtp_server_refuses_with_421_then_451_then_recovers(rig: Rig) -> None:
    def flaky_smtp() -> dict[str, object]:
        wait_for_progress(rig.sessions, 400)
        rig.smtp.unavailable_reply = "421 4.3.2 Service not available"
        time.sleep(4)
        rig.smtp.unavailable_reply = None
        rig.smtp.temp_fail_data = 10**9
        time.sleep(4)
        rig.smtp.temp_fail_data = 0
        return {"smtp_outage_s": 8}

    result = run_stream(rig, flaky_smtp)

    assert_nothing_lost(result)
    assert result.duplicated == {}
    assert result.resent_keys, "the outage should have made some emails go round again"


def test_one_recipient_refused_with_550(rig: Rig) -> None:
    refused = "f00042@example.com"

    def refuse_one() -> dict[str, object]:
        rig.smtp.fail_rcpt[refused] = "550 5.1.1 No such user here"
        return {"refused_recipient": refused}

    result = run_stream(rig, refuse_one, expect_failed=2)

    assert_nothing_lost(result, expect_failed=2)
    assert result.duplicated == {}
    assert set(result.failed.values()) == {"550 5.1.1 No such user here"}
    with rig.sessions() as session:
        failed_to = set(
            session.scalars(select(EmailMessage.to_address).where(EmailMessage.status == "failed"))
        )
    assert failed_to == {refused}


def test_database_connections_terminated_mid_stream(rig: Rig) -> None:
    admin = rig.database_url.replace("+psycopg", "")
    database = admin.rsplit("/", 1)[1]

    def terminate() -> dict[str, object]:
        terminated = 0
        for fraction in (0.1, 0.3, 0.5, 0.7):
            wait_for_progress(rig.sessions, int(2 * 1000 * fraction))
            with psycopg.connect(admin, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                ).fetchall()
            terminated += len(rows)
        return {"connections_terminated": terminated}

    result = run_stream(rig, terminate)

    assert_nothing_lost(result)
    assert set(result.duplicated) <= result.resent_keys
    assert processed_count(rig.sessions) == 2000


# --- 6. bad input of every kind, pushed through the same broker as good events -----------


def test_bad_input_of_every_kind_never_crashes_the_worker(rig: Rig) -> None:
    """Wire-level fuzzing, deep nesting, every header-breaking character in every field that
    reaches a header, extreme dates, ids over their limits (and good events with ids at the
    limit), interleaved with good events; then a final batch of good events."""
    app = create_app(Settings(broker_url=rig.redis.url))
    raw = redis.Redis.from_url(rig.redis.url)
    bad: Counter[str] = Counter()
    good: list[str] = []
    pid = rig.worker.pid
    holder = payloads.client(HOLDER, send_welcome=False)
    app.send_task("clients.add", kwargs=holder)
    rig.worker.wait_applied(holder["event_id"])

    def publish_good() -> None:
        client = payloads.client(f"G{len(good):05d}")
        if len(good) % 10 == 0:  # an event id exactly at its 128-character limit
            client["event_id"] = f"{client['event_id']}-".ljust(128, "x")
        app.send_task("clients.add", kwargs=client)
        good.append(client["event_id"])

    @settings(
        max_examples=1000,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(message=bad_messages())
    def publish_bad_then_good(message: tuple[str, Any]) -> None:
        kind, content = message
        bad[publish_bad(app, raw, kind, content)] += 1
        publish_good()

    publish_bad_then_good()
    tried = sum(bad.values())
    final = len(good)
    for _ in range(100):  # after all of it, a final batch of good events
        publish_good()
    published = tried + len(good)
    assert published >= 2000, published

    def counts() -> tuple[int, int]:
        with rig.sessions() as session:
            applied = session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0
            refused = session.scalar(select(func.count()).select_from(RejectedEvent)) or 0
        return applied, refused

    def everything_recorded() -> bool:
        applied, refused = counts()
        return applied >= len(good) + 1 and refused >= tried

    wait_until(
        everything_recorded,
        lambda: (
            f"{len(good)} good applied and {tried} bad recorded "
            f"(applied, recorded: {counts()}; published kinds {dict(bad)})"
        ),
        timeout=300,
        interval=0.5,
    )
    settle(rig.sessions, rig.smtp, [("clients.add", {"event_id": e}) for e in good])
    with rig.sessions() as session:
        reasons = list(session.scalars(select(RejectedEvent.reason)))
        applied = set(session.scalars(select(ProcessedEvent.event_id)))
    log = rig.worker.log_text()
    print(
        f"FAULTS events={published} good={len(good)} bad={tried} "
        f"recorded={len(reasons)} applied={len(applied)} emails={len(rig.smtp.messages)} "
        f"final_batch={len(good) - final} worker_crashes={int('Unrecoverable error' in log)} "
        f"kinds={dict(bad)}"
    )
    assert len(reasons) == tried
    assert all(reason.strip() for reason in reasons)
    assert set(good) <= applied
    assert len(rig.smtp.messages) == len(good)
    assert rig.worker.alive
    assert rig.worker.pid == pid
    assert "Unrecoverable error" not in log
    raw.close()
    app.close()
