"""Fixtures: real PostgreSQL and SQLite databases, Redis, an SMTP sink, and event helpers."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rabbitmq_server import Node, Vhost, find_or_start_rabbitmq
from servers import (
    ServerUnavailable,
    create_database,
    drop_database,
    find_or_start_postgres,
    find_or_start_redis,
    redis_url_for_worker,
)
from smtp_sink import SmtpSink
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from worker_process import SharedWorkers, WorkerOptions, WorkerProcess

from models.engine import make_engine
from services.db import SessionFactory
from services.dispatch import Result, process_event
from workers import migrate

# Under pytest-xdist each worker takes the database below the previous one's (15, 14, ...):
# see servers.redis_url_for_worker.
REDIS_URL = os.environ.get("CLIENTFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ADMIN_DATABASE_URL = os.environ.get(
    "CLIENTFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RABBITMQ_URL = os.environ.get("CLIENTFLOW_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
COMPANY = "Test Hosting"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    try:
        url, server = find_or_start_redis(
            redis_url_for_worker(REDIS_URL, os.environ.get("PYTEST_XDIST_WORKER"))
        )
    except ServerUnavailable as exc:
        pytest.exit(str(exc), returncode=3)
    yield url
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def rabbitmq_node() -> Iterator[Node]:
    """The machine's RabbitMQ, or a throwaway node; the tests that need it are skipped, with
    one line saying why, only where rabbitmq-server is not installed (tests/rabbitmq_server.py)."""
    try:
        node = find_or_start_rabbitmq(RABBITMQ_URL)
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    yield node
    node.close()


@pytest.fixture
def rabbitmq_vhost(rabbitmq_node: Node) -> Iterator[Vhost]:
    """A vhost of the test's own, deleted after it: tests never see each other's queues."""
    vhost = rabbitmq_node.add_vhost()
    yield vhost
    vhost.delete()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    try:
        url, server = find_or_start_postgres(ADMIN_DATABASE_URL)
    except ServerUnavailable as exc:
        pytest.exit(str(exc), returncode=3)
    yield url
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def new_postgres_database(postgres_admin_url: str) -> Iterator[Callable[[], str]]:
    """Makes migrated throwaway databases; all are dropped at the end of the session."""
    names: list[str] = []

    def make() -> str:
        name = f"clientflow_test_{uuid.uuid4().hex[:12]}"
        names.append(name)
        url = create_database(postgres_admin_url, name)
        migrate.upgrade(url)
        return url

    yield make
    for name in names:
        drop_database(postgres_admin_url, name)


@pytest.fixture(scope="session")
def postgres_url(new_postgres_database: Callable[[], str]) -> str:
    return new_postgres_database()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'clientflow.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session", params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Every test that uses the database runs once on PostgreSQL and once on SQLite."""
    url = request.getfixturevalue(f"{request.param}_url")
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> Iterator[SessionFactory]:
    """Sessions inside one outer transaction that is rolled back after the test.

    Code under test commits as usual; its commits become savepoints of the outer transaction.
    """
    connection = engine.connect()
    outer = connection.begin()
    yield sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    outer.rollback()
    connection.close()


@pytest.fixture
def db(session_factory: SessionFactory) -> Iterator[Session]:
    with session_factory() as session:
        yield session


class Publisher:
    """Stands in for the broker: records each (task name, kwargs) it is given.

    `down = True` makes it refuse like an unreachable broker.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.down = False

    def __call__(self, task_name: str, kwargs: dict[str, Any]) -> None:
        if self.down:
            raise ConnectionRefusedError("broker unreachable")
        self.sent.append((task_name, json.loads(json.dumps(kwargs))))

    @property
    def deliveries(self) -> list[list[str]]:
        return [kw["message_ids"] for name, kw in self.sent if name == "emails.deliver"]

    @property
    def message_ids(self) -> list[str]:
        return [i for batch in self.deliveries for i in batch]


@pytest.fixture
def publisher() -> Publisher:
    return Publisher()


Apply = Callable[..., Result]


@pytest.fixture
def apply(session_factory: SessionFactory, publisher: Publisher) -> Apply:
    """Feed one event through the same path a worker uses, payload round-tripped via JSON."""

    def run(task_name: str, payload: dict[str, Any]) -> Result:
        wire = json.loads(json.dumps(payload))
        return process_event(
            task_name,
            wire,
            session_factory=session_factory,
            publish=publisher,
            company_name=COMPANY,
        )

    return run


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def shared_smtp() -> Iterator[SmtpSink]:
    """One SMTP sink for a module's tests: the module's shared worker sends to it."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def shared_workers(
    redis_url: str,
    new_postgres_database: Callable[[], str],
    shared_smtp: SmtpSink,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SharedWorkers]:
    """The worker a module's tests share (worker_process.shared_worker_fixture)."""

    def make(options: WorkerOptions) -> WorkerProcess:
        return WorkerProcess(
            broker_url=redis_url,
            database_url=new_postgres_database(),
            smtp_url=shared_smtp.url,
            workdir=tmp_path_factory.mktemp("shared-worker"),
            pool=options.pool,
            concurrency=options.concurrency,
            extra_settings=dict(options.extra_settings),
            queues=options.queues,
        )

    workers = SharedWorkers(make, shared_smtp)
    yield workers
    workers.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
