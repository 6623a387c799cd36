"""The engine for a database URL, with what each dialect needs (SQLite's pragmas)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.pool import ConnectionPoolEntry

# With ping_when_idle (the worker's engine, tasks.runtime): a pooled connection back in the
# pool for less than this is taken as it is; one idle longer is pinged first, and replaced if
# it is dead (a database restart, an idle timeout on the way). pool_pre_ping pings at every
# checkout: two or three per batch of events, a round trip each, most of them for a
# connection checked in a millisecond before. A connection that dies in that millisecond fails
# its statement instead: an invalidated connection, which the pool replaces with every older
# one, and the event is retried (tasks.retry: transient). Everything else (the CLI, tests'
# own sessions) keeps pool_pre_ping: a failed statement there is an error, not a retry.
PING_IDLE_AFTER_SECONDS = 1.0
_IDLE_SINCE = "clientflow_idle_since"


def make_engine(url: str, *, ping_when_idle: bool = False, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite opens transactions lazily and breaks SAVEPOINT; let SQLAlchemy say BEGIN.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    # The ping: a worker outlives database restarts; a dead pooled connection is replaced
    # instead of failing the next task.
    if not ping_when_idle:
        return create_engine(url, pool_pre_ping=True, **kwargs)
    engine = create_engine(url, **kwargs)
    event.listen(engine.pool, "checkin", _idle_from_now)
    event.listen(engine.pool, "checkout", _ping_if_idle(engine.dialect))
    return engine


def _idle_from_now(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def _ping_if_idle(dialect: Dialect) -> Callable[[Any, ConnectionPoolEntry, Any], None]:
    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None:
            return  # never checked in: a connection made for this checkout
        if time.monotonic() - idle_since < PING_IDLE_AFTER_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                # As pool_pre_ping does: this connection and every older one are replaced,
                # and the checkout tried again.
                raise InvalidatePoolError() from exc
            raise

    return checkout


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets the CLI read while the worker writes; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
