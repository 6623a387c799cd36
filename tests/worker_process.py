"""A real `celery -A workers.app worker` subprocess on Redis, PostgreSQL and the SMTP sink.

Tests get it through a fixture made by worker_fixture() (a worker of the test's own) or
shared_worker_fixture() (one worker for the module's tests, reset between them); WorkerProcess
can also be used directly. Everything here talks to real servers: nothing about Celery, Redis
or SMTP is mocked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import pytest
import redis
from celery import Celery
from rabbitmq_server import Node, Vhost
from servers import environ_without_settings
from servers import wait_until as wait_until  # re-exported: the tests take it from here
from smtp_sink import SmtpSink
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from models.base import Base
from models.emails import EmailMessage, EmailStatus
from models.engine import make_engine
from models.records import ProcessedEvent, RejectedEvent
from models.settings import Settings
from services.db import SessionFactory, make_session_factory
from workers.app import create_app

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
WAIT_TIMEOUT = 30.0

# The brokers a test parametrized over them runs on (broker_for).
BROKERS = ("redis", "rabbitmq")

# The kombu Redis transport keeps each queue as a list named after it, and every message a
# worker holds (running, or reserved until its retry countdown ends) in this hash until acked.
UNACKED_KEY = "unacked"
# Where it keeps the exchanges' bindings, declared by the worker at start: a reset keeps them,
# or the running worker would lose its control replies (ping) and fanout.
BINDING_PREFIX = b"_kombu.binding."

T = TypeVar("T")


def wait_for_db(
    sessions: SessionFactory,
    query: Callable[[Session], T],
    what: str,
    *,
    timeout: float = WAIT_TIMEOUT,
) -> T:
    """Poll query(session) in a fresh session until it returns something truthy."""

    def check() -> T:
        with sessions() as session:
            return query(session)

    return wait_until(check, what, timeout=timeout)


def build_worker_env(
    broker_url: str, database_url: str, smtp_url: str, data_dir: Path, **extra: str
) -> dict[str, str]:
    """os.environ without any CLIENTFLOW_* setting, plus the worker's own settings."""
    env = environ_without_settings()
    env.update(
        {
            "CLIENTFLOW_BROKER_URL": broker_url,
            "CLIENTFLOW_DATABASE_URL": database_url,
            "CLIENTFLOW_SMTP_URL": smtp_url,
            # Nothing should land here, but if something did it must not be the repository.
            "CLIENTFLOW_DATA_DIR": str(data_dir),
            "CLIENTFLOW_RETRY_BACKOFF_BASE": "0.2",
            "CLIENTFLOW_RETRY_BACKOFF_MAX": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"CLIENTFLOW_{k.upper()}": v for k, v in extra.items()})
    return env


class WorkerProcess:
    """One worker subprocess, the publisher app that feeds it, and its database.

    Creating it flushes the Redis database of broker_url (reserved for tests: db 15 by
    default, one database per pytest-xdist worker, see servers.redis_url_for_worker), so
    messages left by an earlier run cannot reach this worker. On RabbitMQ, pass the test's own
    vhost instead (broker_url is then its URL): it is new, so there is nothing to flush.
    start() is separate so a test can publish before any worker exists.
    """

    def __init__(
        self,
        *,
        broker_url: str,
        database_url: str,
        smtp_url: str,
        workdir: Path,
        pool: Literal["prefork", "solo"] = "prefork",
        concurrency: int = 2,
        extra_settings: dict[str, str] | None = None,
        flush: bool = True,
        beat: bool = False,
        node: str | None = None,
        vhost: Vhost | None = None,
        queues: Sequence[str] | None = None,
    ) -> None:
        self.vhost = vhost
        if vhost is not None:
            broker_url = vhost.url
        self.broker_url = broker_url
        self.database_url = database_url
        # The worker's node name (`-n name@host`): several workers sharing a broker each need
        # their own, as they would have on separate hosts.
        self.hostname = node or f"clientflow-test-{uuid.uuid4().hex[:10]}@localhost"
        self.workdir = workdir
        self.log_path = workdir / "worker.log"
        self.pool = pool
        self.concurrency = concurrency
        # The queues it consumes (`-Q`); None: every queue the app declares.
        self.queues = queues
        self.env = build_worker_env(
            broker_url, database_url, smtp_url, workdir, **(extra_settings or {})
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False
        # Where log_text() starts reading: a shared worker's log holds its earlier tests too.
        self._log_start = 0
        self.beat = beat
        self._redis = None if vhost is not None else redis.Redis.from_url(broker_url)
        if flush and self._redis is not None:
            # A module's shared worker, idle between its tests, would take this worker's
            # messages, and the flush its bindings: it stops first (started again for the next
            # test that wants it).
            if SharedWorkers.running is not None:
                SharedWorkers.running.close()
            self._redis.flushdb()
        self.app: Celery = create_app(Settings(broker_url=broker_url))
        self._engine = make_engine(database_url)
        self.sessions: SessionFactory = make_session_factory(self._engine)

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            raise RuntimeError(f"worker {self.hostname} runs on RabbitMQ, not Redis")
        return self._redis

    # -- the process ----------------------------------------------------------------------

    @property
    def command(self) -> list[str]:
        pool = (
            ["--pool", "solo"]
            if self.pool == "solo"
            else ["--pool", "prefork", "--concurrency", str(self.concurrency)]
        )
        return [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            *pool, "-n", self.hostname, "--loglevel", "INFO",
            *(["-Q", ",".join(self.queues)] if self.queues else []),
            "--without-mingle", "--without-gossip",
            # Embedded beat runs the outbox relay; its schedule file stays in the workdir.
            *(["-B", "--schedule", str(self.workdir / "beat-schedule")] if self.beat else []),
        ]  # fmt: skip

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it: several workers then boot side by side
        (each spends seconds importing the application) and wait_ready() waits for each."""
        if self._proc is not None:
            raise RuntimeError("a WorkerProcess starts once; make a new one to restart")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # Its own process group, so stop() can also end pool children it left behind.
            self._proc = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the worker answers a ping; stops it and raises if it exits or never does."""
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if not self.alive:
                raise RuntimeError(
                    f"worker {self.hostname} exited with code {self.returncode} during "
                    f"startup; log {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"worker {self.hostname} did not answer a ping within {timeout:.0f}s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )

    def _answers_ping(self) -> bool:
        replies = self.app.control.ping(destination=[self.hostname], timeout=0.5) or []
        return any(self.hostname in reply for reply in replies)

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("worker not started")
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Warm shutdown (SIGTERM); SIGKILL the whole process group if it does not end."""
        proc = self._proc
        if proc is None or self._stopped:
            return
        self._stopped = True
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        # Pool children normally end with their parent; this ends any that did not.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def kill(self) -> None:
        """kill -9 the worker and its pool children at once: no shutdown of any kind."""
        proc = self._proc
        if proc is None or self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        self.stop()
        self.app.close()
        if self._redis is not None:
            self._redis.close()
        self._engine.dispose()

    def log_text(self) -> str:
        """What the worker logged since it started, or since the last reset()."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def reset(self) -> None:
        """Empty the database, the broker and the log for the next test of a shared worker,
        without restarting it (a start costs about 2 s of CPU, a warm shutdown as much).

        Waits for the broker to be idle first, so no task of the previous test is still
        writing; raises AssertionError (it does not settle) or DBAPIError (a lock held) when
        the worker cannot be reset, and the caller starts a fresh one instead.
        """
        self.wait_idle()
        tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
        with self._engine.begin() as connection:
            connection.execute(text("SET LOCAL lock_timeout = '5s'"))
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        stale = [key for key in self.redis.scan_iter() if not key.startswith(BINDING_PREFIX)]
        if stale:
            self.redis.delete(*stale)
        self._log_start = self.log_path.stat().st_size

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def pool_pids(self) -> list[int]:
        """The pids of the prefork pool's children, as the worker reports them."""
        stats = self.app.control.inspect(destination=[self.hostname], timeout=2).stats() or {}
        if self.hostname not in stats:
            raise AssertionError(f"worker {self.hostname} did not answer inspect stats")
        return sorted(int(pid) for pid in stats[self.hostname]["pool"].get("processes", []))

    # -- publishing -------------------------------------------------------------------------

    def publish(self, name: str, payload: dict[str, Any]) -> None:
        """Publish an event the way upstream systems do: keyword arguments only."""
        self.app.send_task(name, kwargs=payload)

    # -- waiting ----------------------------------------------------------------------------

    def wait_for_db(
        self, query: Callable[[Session], T], what: str, *, timeout: float = WAIT_TIMEOUT
    ) -> T:
        try:
            return wait_for_db(self.sessions, query, what, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log tail:\n{self.log_tail()}") from None

    def wait_applied(self, *event_ids: str, timeout: float = WAIT_TIMEOUT) -> None:
        """Until every event id is in processed_events; fails early if one was rejected for
        good (a rejection still waiting for its client or contact may yet be applied)."""
        wanted = set(event_ids)

        def done(session: Session) -> bool:
            refused = {
                row.event_id: row.reason
                for row in session.scalars(
                    select(RejectedEvent).where(
                        RejectedEvent.event_id.in_(wanted), RejectedEvent.waiting_for.is_(None)
                    )
                )
            }
            if refused:
                raise AssertionError(f"expected applied, but rejected: {refused}")
            applied = set(
                session.scalars(
                    select(ProcessedEvent.event_id).where(ProcessedEvent.event_id.in_(wanted))
                )
            )
            return applied == wanted

        self.wait_for_db(done, f"events {sorted(wanted)} applied", timeout=timeout)

    def wait_rejected(self, count: int, timeout: float = WAIT_TIMEOUT) -> list[RejectedEvent]:
        """Until rejected_events has at least count rows; returns them all, oldest first."""

        def rows(session: Session) -> list[RejectedEvent]:
            found = list(session.scalars(select(RejectedEvent).order_by(RejectedEvent.id)))
            return found if len(found) >= count else []

        return self.wait_for_db(rows, f"{count} rejected_events rows", timeout=timeout)

    def wait_no_email_owed(self, timeout: float = WAIT_TIMEOUT) -> None:
        def none_queued(session: Session) -> bool:
            queued = session.scalar(
                select(func.count())
                .select_from(EmailMessage)
                .where(EmailMessage.status == EmailStatus.QUEUED)
            )
            return queued == 0

        self.wait_for_db(none_queued, "no email_messages row left queued", timeout=timeout)

    @property
    def queue_names(self) -> list[str]:
        """Every queue the app declares (and so the worker consumes)."""
        return sorted(self.app.amqp.queues)

    def declare_queues(self) -> None:
        """Declare the queues as the workers do (workers.app's own declarations), before any
        worker runs. On RabbitMQ a message published to a queue that does not exist yet is
        dropped; on Redis a queue is a list that the first push makes, so this changes nothing
        that matters there."""
        with self.app.connection_for_write() as connection:
            for queue in self.app.amqp.queues.values():
                queue.bind(connection.default_channel).declare()

    def queue_state(self) -> str:
        """What waits where, for an assertion message: messages per queue (waiting and held
        unacknowledged on RabbitMQ; waiting, then the unacked hash, on Redis)."""
        if self.vhost is not None:
            return f"queues {self.vhost.queues()}"
        sizes = {key: self.redis.llen(key) for key in self.queue_names}
        return f"queues {sizes}, unacked {self.redis.hlen(UNACKED_KEY)}"

    def broker_idle(self) -> bool:
        """True when no message waits in a queue and none is held unacknowledged.

        Tasks acknowledge late, and an event publishes its delivery before it is acked, so
        between them these keys see every piece of outstanding work. On RabbitMQ, rabbitmqctl
        counts both, waiting and unacknowledged, per queue.
        """
        if self.vhost is not None:
            queues = self.vhost.queues()
            return not any(queues[name].messages for name in self.queue_names if name in queues)
        pipe = self.redis.pipeline(transaction=True)
        for key in self.queue_names:
            pipe.llen(key)
        pipe.hlen(UNACKED_KEY)
        return not any(pipe.execute())

    def wait_idle(self, timeout: float = WAIT_TIMEOUT) -> None:
        """Until the broker is idle twice in a row (a message being handed to the worker
        is briefly in neither a queue nor the unacked hash)."""

        def twice() -> bool:
            if not self.broker_idle():
                return False
            time.sleep(0.1)
            return self.broker_idle()

        def state() -> str:
            return f"an idle broker ({self.queue_state()})"

        try:
            wait_until(twice, state, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log tail:\n{self.log_tail()}") from None

    def rows(self, model: type[T]) -> list[T]:
        with self.sessions() as session:
            return list(session.scalars(select(model)))


@contextlib.contextmanager
def broker_for(kind: str, request: pytest.FixtureRequest) -> Iterator[tuple[str, Vhost | None]]:
    """The broker URL of a test parametrized over BROKERS, and its vhost on RabbitMQ: the
    test Redis database, or a vhost of its own on the RabbitMQ node, deleted after it. Where
    rabbitmq-server is not installed the RabbitMQ case is skipped with one line, as every
    RabbitMQ test is (the rabbitmq_node fixture). Usable from a fixture of any scope: the
    vhost is made here, not by the function-scoped rabbitmq_vhost fixture."""
    if kind == "redis":
        yield request.getfixturevalue("redis_url"), None
        return
    node: Node = request.getfixturevalue("rabbitmq_node")
    vhost = node.add_vhost()
    try:
        yield vhost.url, vhost
    finally:
        vhost.delete()


@contextlib.contextmanager
def worker_crew(
    nodes: Sequence[str],
    *,
    broker_url: str,
    database_url: str,
    smtp_url: str,
    root: Path,
    concurrency: int = 2,
    extra_settings: dict[str, str] | None = None,
    vhost: Vhost | None = None,
) -> Iterator[list[WorkerProcess]]:
    """Several workers as on separate hosts: one broker, one database, one SMTP server, each
    with its own node name (`-n name@host`) and workdir, all running and answering pings.

    Only the first flushes Redis, before any of them starts: a flush once one is up would
    remove the queue bindings it declared, and with them its control replies. On RabbitMQ
    (`vhost`, broker_url its URL) there is nothing to flush. They boot side by side, each
    importing the application at once.
    """
    crew = [
        WorkerProcess(
            broker_url=broker_url,
            database_url=database_url,
            smtp_url=smtp_url,
            workdir=root / node.replace("@", "-at-"),
            concurrency=concurrency,
            extra_settings=extra_settings,
            flush=index == 0,
            node=node,
            vhost=vhost,
        )
        for index, node in enumerate(nodes)
    ]
    try:
        for worker in crew:
            worker.launch()
        for worker in crew:
            worker.wait_ready()
        yield crew
    finally:
        for worker in crew:
            worker.close()


def worker_fixture(
    *,
    name: str = "worker",
    start: bool = True,
    pool: Literal["prefork", "solo"] = "prefork",
    concurrency: int = 2,
    database_url_suffix: str = "",
    extra_settings: dict[str, str] | None = None,
    queues: Sequence[str] | None = None,
) -> Any:
    """Make a function-scoped fixture giving a WorkerProcess on a fresh PostgreSQL database.

    Use it at module level: `worker = worker_fixture()`. With start=False the worker is not
    running yet (Redis is already flushed), so the test can publish first and call start().
    The SMTP sink is the `smtp` fixture; request it in the test to look at what arrived.
    """

    @pytest.fixture(name=name)
    def make(
        redis_url: str,
        new_postgres_database: Callable[[], str],
        smtp: SmtpSink,
        tmp_path: Path,
    ) -> Iterator[WorkerProcess]:
        process = WorkerProcess(
            broker_url=redis_url,
            database_url=new_postgres_database() + database_url_suffix,
            smtp_url=smtp.url,
            workdir=tmp_path / "worker",
            pool=pool,
            concurrency=concurrency,
            extra_settings=extra_settings,
            queues=queues,
        )
        try:
            if start:
                process.start()
            yield process
        finally:
            process.close()

    return make


@dataclass(frozen=True)
class WorkerOptions:
    """What a shared worker is started with; a test asking for other options gets a new one."""

    pool: Literal["prefork", "solo"] = "prefork"
    concurrency: int = 2
    extra_settings: tuple[tuple[str, str], ...] = ()
    queues: tuple[str, ...] | None = None


class SharedWorkers:
    """The one worker a module's tests share (the `shared_workers` fixture, conftest.py).

    At most one runs at a time: two on the same Redis database would take each other's
    messages. A test gets the running one, reset (WorkerProcess.reset), when it has the
    options the test asks for and settles; otherwise, or when a test left it dead, it is
    stopped and a new one started on a new database. A worker of a test's own (worker_fixture)
    stops it too, through `running`: one pytest process runs one test at a time, so the one
    shared worker running is the process's.
    """

    running: ClassVar[SharedWorkers | None] = None

    def __init__(self, make: Callable[[WorkerOptions], WorkerProcess], smtp: SmtpSink) -> None:
        self._make = make
        self._smtp = smtp
        self._current: tuple[WorkerOptions, WorkerProcess] | None = None

    def for_test(self, options: WorkerOptions) -> WorkerProcess:
        if self._current is not None:
            running_options, process = self._current
            if running_options == options and process.alive:
                try:
                    process.reset()
                except (AssertionError, DBAPIError):
                    pass
                else:
                    self._smtp.clear()
                    return process
            self.close()
        self._smtp.clear()
        process = self._make(options)
        # Set before start(): a worker that fails to start is still closed by close().
        self._current = (options, process)
        SharedWorkers.running = self
        process.start()
        return process

    def close(self) -> None:
        SharedWorkers.running = None
        if self._current is not None:
            current, self._current = self._current[1], None
            current.close()
            # What it sent while stopping must not reach the next test's worker's messages.
            self._smtp.clear()


def shared_worker_fixture(
    *,
    name: str = "worker",
    pool: Literal["prefork", "solo"] = "prefork",
    concurrency: int = 2,
    extra_settings: dict[str, str] | None = None,
    queues: Sequence[str] | None = None,
) -> Any:
    """Make a function-scoped fixture giving the module's shared worker, running and reset:
    an empty database, broker, SMTP sink and log, as a worker of the test's own would have.

    For tests that only publish and look at what arrived. A test that stops, kills or
    restarts its worker, or needs it not yet started, takes worker_fixture() instead. Use it
    at module level, with the module's sink as `smtp` (the shared worker sends there):

        worker = shared_worker_fixture()
        smtp = shared_smtp_fixture()
    """
    options = WorkerOptions(
        pool=pool,
        concurrency=concurrency,
        extra_settings=tuple(sorted((extra_settings or {}).items())),
        queues=tuple(queues) if queues is not None else None,
    )

    @pytest.fixture(name=name)
    def get(shared_workers: SharedWorkers) -> WorkerProcess:
        return shared_workers.for_test(options)

    return get


def shared_smtp_fixture() -> Any:
    """Make the function-scoped `smtp` of a module with a shared worker: the module's one sink
    (conftest.py `shared_smtp`), emptied before each test, which the worker_fixture() workers
    of that module's other tests use too."""

    @pytest.fixture(name="smtp")
    def sink(shared_smtp: SmtpSink) -> SmtpSink:
        shared_smtp.start()  # a no-op unless the test before stopped it (an outage test)
        shared_smtp.clear()
        return shared_smtp

    return sink
