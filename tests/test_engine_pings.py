"""models.engine's ping_when_idle (the worker's engine): a pooled connection idle for a while
is pinged at checkout and replaced if dead; one checked in a moment ago is taken without a
round trip, and if it died in that moment its statement fails as an invalidated connection
(transient: the event is retried) and the pool replaces it. Without it, every checkout pings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from models import engine as engine_module
from models.engine import make_engine
from tasks.retry import is_transient


@pytest.fixture(params=[True], ids=["ping_when_idle"])
def engine(postgres_url: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    engine = make_engine(postgres_url, ping_when_idle=request.param)
    yield engine
    engine.dispose()


@pytest.fixture
def pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        sent.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return sent


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(postgres_admin_url: str, pid: int) -> None:
    with psycopg.connect(postgres_admin_url.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_connection_checked_in_a_moment_ago_is_taken_without_a_ping(
    engine: Engine, pings: list[int]
) -> None:
    first = backend_pid(engine)
    assert [backend_pid(engine) for _ in range(5)] == [first] * 5
    assert pings == []


def test_a_connection_idle_for_a_while_is_pinged_and_a_dead_one_replaced(
    engine: Engine, pings: list[int], postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = backend_pid(engine)
    monkeypatch.setattr(engine_module, "PING_IDLE_AFTER_SECONDS", 0.0)
    assert backend_pid(engine) == first  # pinged, alive: kept
    assert len(pings) == 1

    terminate(postgres_admin_url, first)
    replaced = backend_pid(engine)  # the ping fails; the checkout takes a new connection
    assert replaced != first
    assert len(pings) == 2


def test_a_connection_that_died_a_moment_ago_fails_as_transient_and_is_replaced(
    engine: Engine, pings: list[int], postgres_admin_url: str
) -> None:
    first = backend_pid(engine)
    terminate(postgres_admin_url, first)
    with pytest.raises(DBAPIError) as failed:
        backend_pid(engine)
    assert failed.value.connection_invalidated
    assert is_transient(failed.value)
    assert backend_pid(engine) != first
    assert pings == []


@pytest.mark.parametrize("engine", [False], ids=["pre_ping"], indirect=True)
def test_by_default_every_checkout_pings_and_a_dead_connection_never_fails_a_statement(
    engine: Engine, pings: list[int], postgres_admin_url: str
) -> None:
    first = backend_pid(engine)
    assert backend_pid(engine) == first
    terminate(postgres_admin_url, first)
    assert backend_pid(engine) != first
    assert pings  # SQLAlchemy's pool_pre_ping
