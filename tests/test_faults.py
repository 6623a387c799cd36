"""The fault suite: under crashes, outages and bad input nothing is lost and nothing is sent twice.

Every test runs a real worker (with embedded beat for the outbox relay), its own redis-server,
the real PostgreSQL and an in-process SMTP server, publishes 2,000 events and audits the end
state (see fault_kit.py). Each prints one FAULTS line with its figures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

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
from hostile_kit import HOLDER, AmqpQueue, RawQueue, RedisQueue, bad_messages, publish_bad
from hypothesis import HealthCheck, given, settings
from rabbitmq_server import Node, Vhost, throwaway_node
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


class FaultBroker(Protocol):
    """The broker a fault test breaks: its own redis-server, or a RabbitMQ vhost."""

    url: str

    def stop(self) -> None: ...
    def start(self) -> None: ...
    def state(self) -> str: ...
    def raw_queue(self) -> RawQueue: ...
    def close(self) -> None: ...


class RedisBroker:
    """Its own redis-server with AOF, on a free port: stopping it disturbs nobody."""

    def __init__(self) -> None:
        self.server = RedisServer(persistent=True)
        self.server.start()
        self.url = self.server.url
        self._clients: list[redis.Redis] = []

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    def state(self) -> str:
        """What Redis holds when a test does not settle: queues, unacked entries, the mutex."""
        try:
            client = redis.Redis.from_url(self.url)
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

    def raw_queue(self) -> RawQueue:
        client = redis.Redis.from_url(self.url)
        self._clients.append(client)
        return RedisQueue(client)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.server.close()


class RabbitBroker:
    """A vhost of the test's own. On the machine's shared node it cannot be stopped; a test
    that stops the broker gets a throwaway node of its own (own_node)."""

    def __init__(self, vhost: Vhost, own_node: Node | None = None) -> None:
        self.vhost = vhost
        self.url = vhost.url
        self._own_node = own_node
        self._queues: list[AmqpQueue] = []

    def stop(self) -> None:
        if self._own_node is None:
            raise RuntimeError("the shared RabbitMQ node is never stopped: use own_node")
        self._own_node.stop_app()

    def start(self) -> None:
        if self._own_node is None:
            raise RuntimeError("the shared RabbitMQ node is never stopped: use own_node")
        self._own_node.start_app()

    def state(self) -> str:
        try:
            return str(self.vhost.queues())
        except Exception as exc:  # a node that is down or a rabbitmqctl that timed out
            return f"unreadable: {exc}"

    def raw_queue(self) -> RawQueue:
        queue = AmqpQueue(self.url)
        self._queues.append(queue)
        return queue

    def close(self) -> None:
        for queue in self._queues:
            queue.close()
        self.vhost.delete()
        if self._own_node is not None:
            self._own_node.close()


class Rig:
    """One fault test's world: its own broker, a fresh database, the SMTP sink, a worker."""

    def __init__(self, broker: FaultBroker, database_url: str, smtp: SmtpSink, root: Path) -> None:
        self.broker = broker
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
            broker_url=self.broker.url,
            vhost=self.broker.vhost if isinstance(self.broker, RabbitBroker) else None,
            database_url=self.database_url,
            smtp_url=self.smtp.url,
            workdir=self.root / f"worker-{self.starts}",
            flush=flush,
        )
        worker.start()
        return worker

    def restart_worker(self) -> None:
        self.worker = self._new_worker(flush=False)

    def close(self) -> None:
        self.worker.close()
        self.engine.dispose()


BROKERS = ["redis", "rabbitmq"]


def make_broker(kind: str, request: pytest.FixtureRequest, *, stoppable: bool) -> FaultBroker:
    if kind == "redis":
        return RedisBroker()
    if stoppable:
        # Checks (and skips without) rabbitmq-server first, as every RabbitMQ test does.
        request.getfixturevalue("rabbitmq_node")
        node: Node = throwaway_node()
        return RabbitBroker(node.add_vhost(), own_node=node)
    shared: Node = request.getfixturevalue("rabbitmq_node")
    return RabbitBroker(shared.add_vhost())


@contextlib.contextmanager
def rig_on(
    kind: str,
    request: pytest.FixtureRequest,
    database_url: str,
    smtp: SmtpSink,
    root: Path,
    *,
    stoppable: bool = False,
) -> Iterator[Rig]:
    broker = make_broker(kind, request, stoppable=stoppable)
    try:
        world = Rig(broker, database_url, smtp, root)
        try:
            yield world
        finally:
            world.close()
    finally:
        broker.close()


@pytest.fixture(params=BROKERS)
def rig(
    request: pytest.FixtureRequest,
    new_postgres_database: Callable[[], str],
    smtp: SmtpSink,
    tmp_path: Path,
) -> Iterator[Rig]:
    with rig_on(request.param, request, new_postgres_database(), smtp, tmp_path) as world:
        yield world


@pytest.fixture(params=BROKERS)
def stoppable_rig(
    request: pytest.FixtureRequest,
    new_postgres_database: Callable[[], str],
    smtp: SmtpSink,
    tmp_path: Path,
) -> Iterator[Rig]:
    """A rig whose broker the test may stop: never the machine's shared RabbitMQ node."""
    with rig_on(
        request.param, request, new_postgres_database(), smtp, tmp_path, stoppable=True
    ) as world:
        yield world


def run_stream(rig: Rig, fault: Callable[[], dict[str, object]], expect_failed: int = 0) -> Audit:
    events = event_stream()
    publisher = Publisher(rig.broker.url, events)
    publisher.start()
    figures = fault()
    publisher.join_and_check()
    try:
        settle(rig.sessions, rig.smtp, events, expect_failed)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nbroker: {rig.broker.state()}\nworker log tail:\n{rig.worker.log_tail(60)}"
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


def test_pool_process_killed_with_sigkill_mid_stream(rig: Rig) -> None:
    """A pool process dies mid-task (the OOM killer, a crash in a C extension): Celery starts
    another and gives its message back (task_reject_on_worker_lost); the worker carries on."""
    pid = rig.worker.pid

    def kill_pool_processes() -> dict[str, object]:
        kills = 0
        for fraction in (0.1, 0.3, 0.5, 0.7):
            wait_for_progress(rig.sessions, int(2 * 1000 * fraction))
            victim = rig.worker.pool_pids()[0]
            os.kill(victim, signal.SIGKILL)
            kills += 1

            def replaced(victim: int = victim) -> bool:
                pids = rig.worker.pool_pids()
                return victim not in pids and len(pids) == rig.worker.concurrency

            wait_until(replaced, "the killed pool process replaced")
        return {"pool_kills_survived": kills}

    result = run_stream(rig, kill_pool_processes)

    assert_nothing_lost(result)
    # As for the whole worker: only a message the dead process had sent and not recorded.
    assert set(result.duplicated) <= result.resent_keys
    assert sum(result.duplicated.values()) <= 4
    assert rig.worker.alive
    assert rig.worker.pid == pid


def test_broker_stopped_for_ten_seconds_mid_stream(stoppable_rig: Rig) -> None:
    rig = stoppable_rig

    def outage() -> dict[str, object]:
        wait_for_progress(rig.sessions, 500)
        rig.broker.stop()
        time.sleep(10)
        rig.broker.start()
        return {"broker_outage_s": 10}

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
    app = create_app(Settings(broker_url=rig.broker.url))
    raw = rig.broker.raw_queue()
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
    app.close()
