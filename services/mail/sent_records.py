"""Recording the server's acceptance of each email: a lost record means a second delivery.

Each record is its own committed statement, written right after the server's 250. On
PostgreSQL the statement goes out without waiting for its reply, which is read before the
session's next statement: by then PostgreSQL has committed it while the next message was
composed and sent. Waiting for that reply (a commit, so a WAL flush) was the largest single
wait of a pool process in the clients.add profile: 458 of its 2,486 busy samples
(bench/README.md, seventh session).
"""

from __future__ import annotations

import select
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psycopg
from psycopg import pq
from sqlalchemy import Connection, Engine, bindparam, event, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from models.base import table_of, utcnow
from models.emails import EmailMessage, EmailStatus
from models.settings import get_settings
from services.db import commits_each_statement, done

RECORD_SENT_ATTEMPTS = 5
_EMAILS = table_of(EmailMessage)
# Built once: one is executed for every email sent, and building it costs more than binding.
_MARK_SENT = (
    update(_EMAILS)
    .where(_EMAILS.c.id == bindparam("message_id"))
    .values(status=EmailStatus.SENT, sent_at=bindparam("at"), last_error=None)
)
# The same statement for libpq's asynchronous calls ($1 the id, $2 the time); updated_at is
# what the model's onupdate would set.
_MARK_SENT_SQL = (
    b"UPDATE email_messages SET status = '"
    + EmailStatus.SENT.encode()
    + b"', sent_at = $2, last_error = NULL, updated_at = $2 WHERE email_messages.id = $1"
)
# CLIENTFLOW_SENT_RECORD_COMMIT=asynchronous: the same, committed without waiting for its WAL
# flush. set_config(..., true) is local to the statement's own transaction (each commits by
# itself here), so the connection, which events use next, keeps the database's setting.
_MARK_SENT_ASYNCHRONOUSLY_SQL = _MARK_SENT_SQL.replace(
    b" WHERE ",
    b" FROM (SELECT set_config('synchronous_commit', 'off', true)) AS asynchronous WHERE ",
)
# Each statement prepared once per connection, under its own name: parsed and planned once,
# not for every email (PostgreSQL's CPU per record 210 → 158 µs in a micro). psycopg prepares
# the statements it runs itself the same way, and after a rollback drops every prepared
# statement of the connection, ours too (DEALLOCATE ALL): a record then fails, is written the
# waiting way, and the next one prepares it again.
_STATEMENT_NAMES = {
    _MARK_SENT_SQL: b"clientflow_mark_sent",
    _MARK_SENT_ASYNCHRONOUSLY_SQL: b"clientflow_mark_sent_asynchronously",
}
# In the DBAPI connection's info (SQLAlchemy's, gone with the connection): the names prepared.
_PREPARED = "clientflow.sent_records.prepared"
_DUPLICATE_PREPARED_STATEMENT = b"42P05"


def record_sent(session: Session, message_id: str) -> None:
    """Mark one message sent and wait for the commit, trying hard.

    The update is idempotent, so a database blip (a dropped connection) is retried on a
    fresh connection a few times before giving up.
    """
    for attempt in range(RECORD_SENT_ATTEMPTS):
        try:
            # Core, on the table: the ORM's bulk-update path costs more than the statement.
            session.connection().execute(_MARK_SENT, {"message_id": message_id, "at": utcnow()})
            done(session)
            return
        except DBAPIError as exc:
            session.rollback()
            if attempt + 1 == RECORD_SENT_ATTEMPTS or not (
                exc.connection_invalidated or isinstance(exc, OperationalError)
            ):
                raise
            time.sleep(0.2 * (attempt + 1))


@dataclass
class _Lane:
    connection: Connection
    pgconn: pq.abc.PGconn
    # The statement names prepared on the connection (kept with it: _prepared_names); None
    # where psycopg is told not to prepare.
    prepared: set[bytes] | None
    pending: tuple[int, str] | None = None


class SentRecords:
    """The sent records of one delivery, each written without waiting for the last one's reply.

    Each connection (a lane: the session's, and with `lanes` above one, more of our own from
    the same pool) has at most one record on the wire: PostgreSQL, idle on it, takes the
    statement in as it comes, so a worker killed right after loses none (several on one
    connection, in pipeline mode, it may: bench/README.md, eleventh session). The records take
    the lanes in turn, and a lane's reply is read only when its next record is due: with
    three, a commit's WAL flush has three emails' time to finish, not one.

    Used as a context manager around the sending. Any statement on the session's connection
    settles the records first (a lazy load of the ORM included: libpq takes one command at a time);
    the caller settles before its own statements too, so that a failed record's retry, which
    may roll the session back, never runs in the middle of another statement. Where the session's
    statements do not commit on their own (SQLite, a session inside a test's transaction),
    each record waits for its commit as before.
    """

    def __init__(self, session: Session, sent: list[str], lanes: int = 1) -> None:
        self._session = session
        self._sent = sent
        self._overlap = commits_each_statement(session) and _driver(session) == "psycopg"
        # Read here, like the attachments' setting (services.mail.attachments): the process's.
        self._statement = (
            _MARK_SENT_ASYNCHRONOUSLY_SQL
            if get_settings().sent_record_commit == "asynchronous"
            else _MARK_SENT_SQL
        )
        # Lanes of our own come from the session's engine (a session bound to one connection,
        # inside a test's transaction, has the one lane).
        bind = session.get_bind()
        self._engine = bind if isinstance(bind, Engine) else None
        self._lane_count = lanes if self._engine is not None else 1
        # Per lane (a connection: the session's, then any of our own), the record on the wire
        # (its number in this delivery, the message), and the connection.
        self._lanes: list[_Lane] = []
        self._added = 0
        # The connections whose statements settle first, until the delivery ends.
        self._watched: list[Connection] = []

    def __enter__(self) -> SentRecords:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.settle()
        for connection in self._watched:
            event.remove(connection, "before_cursor_execute", self._before_statement)
        self._watched.clear()
        for lane in self._lanes[1:]:
            lane.connection.close()
        self._lanes.clear()

    def _before_statement(self, *_: Any) -> None:
        self.settle()

    def add(self, message_id: str) -> None:
        """Record one message as sent: its statement is written to PostgreSQL before this
        returns (a crash afterwards does not lose it), its reply read later."""
        if not self._overlap:
            self._record_waiting(message_id)
            return
        lane = self._lane(self._added % self._lane_count)
        self._added += 1
        self._settle(lane)
        try:
            parameters = [message_id.encode(), utcnow().isoformat().encode()]
            name = _prepared(lane, self._statement)
            if name is None:
                lane.pgconn.send_query_params(self._statement, parameters)
            else:
                lane.pgconn.send_query_prepared(name, parameters)
            _flush(lane.pgconn)
        except psycopg.Error:
            self.settle()
            self._record_waiting(message_id)
            return
        lane.pending = (self._added, message_id)

    def settle(self) -> None:
        """Read the replies of the records on the wire, oldest first; one that failed is
        written again, the waiting way, with its retries on a fresh connection."""
        for lane in sorted(self._lanes, key=lambda lane: lane.pending or (0, "")):
            self._settle(lane)

    def _settle(self, lane: _Lane) -> None:
        pending, lane.pending = lane.pending, None
        if pending is None:
            return
        _, message_id = pending
        try:
            _command_ok(lane.pgconn)
        except psycopg.Error:
            if lane.prepared is not None:
                lane.prepared.clear()  # gone with a rollback, say: prepared again next time
            self.settle()  # the session's statements come next: no record left on the wire
            self._record_waiting(message_id)
            return
        self._sent.append(message_id)

    def _lane(self, number: int) -> _Lane:
        while len(self._lanes) <= number:
            if not self._lanes:
                connection = self._session.connection()
                if connection not in self._watched:
                    event.listen(connection, "before_cursor_execute", self._before_statement)
                    self._watched.append(connection)
            else:
                assert self._engine is not None  # more lanes than one only with an engine
                connection = self._engine.connect()
            self._lanes.append(_Lane(connection, _pgconn(connection), _prepared_names(connection)))
        return self._lanes[number]

    def _record_waiting(self, message_id: str) -> None:
        record_sent(self._session, message_id)
        self._sent.append(message_id)


def _driver(session: Session) -> str:
    bind: Any = session.get_bind()
    return str(bind.dialect.driver)


def _pgconn(connection: Connection) -> pq.abc.PGconn:
    dbapi_connection: Any = connection.connection.dbapi_connection
    return dbapi_connection.pgconn  # type: ignore[no-any-return]


def _prepared_names(connection: Connection) -> set[bytes] | None:
    """The names prepared on this connection, kept in SQLAlchemy's info of its DBAPI
    connection (gone with it); None where psycopg is told not to prepare (prepare_threshold
    None: a PgBouncer that cannot keep prepared statements, docs/deployment.md)."""
    dbapi_connection: Any = connection.connection.dbapi_connection
    if dbapi_connection.prepare_threshold is None:
        return None
    names: set[bytes] = connection.connection.info.setdefault(_PREPARED, set())
    return names


def _prepared(lane: _Lane, statement: bytes) -> bytes | None:
    """The name of `statement`, prepared on the lane's connection (now, if not yet); None
    where the lane does not prepare."""
    names = lane.prepared
    if names is None:
        return None
    name = _STATEMENT_NAMES[statement]
    if name not in names:
        # Waits for its reply: once per connection. psycopg keeps its connections
        # non-blocking, which libpq's prepare() does not honour (it waits, as exec() does).
        result = lane.pgconn.prepare(name, statement)
        already = result.error_field(pq.DiagnosticField.SQLSTATE) == _DUPLICATE_PREPARED_STATEMENT
        if result.status != pq.ExecStatus.COMMAND_OK and not already:
            raise psycopg.DatabaseError(result.error_message.decode(errors="replace"))
        names.add(name)
    return name


def _flush(pgconn: pq.abc.PGconn) -> None:
    """Write out the whole statement: psycopg keeps its connections non-blocking."""
    while pgconn.flush():
        select.select([pgconn.socket], [pgconn.socket], [])
        pgconn.consume_input()


def _command_ok(pgconn: pq.abc.PGconn) -> None:
    """Wait for the statement's results and raise if it did not succeed."""
    failure: pq.abc.PGresult | None = None
    while True:
        pgconn.consume_input()
        if pgconn.is_busy():
            select.select([pgconn.socket], [], [])
            continue
        result = pgconn.get_result()
        if result is None:
            break
        if result.status != pq.ExecStatus.COMMAND_OK and failure is None:
            failure = result
    if failure is not None:
        raise psycopg.DatabaseError(failure.error_message.decode(errors="replace"))
