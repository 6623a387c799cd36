"""Recording the server's acceptance of each email: a lost record means a second delivery.

Each record is its own committed statement, written right after the server's 250. On
PostgreSQL the statements go out in libpq's pipeline mode, each with its own Sync (so its own
transaction), without waiting for their replies: PostgreSQL commits them one after another
while the next messages are composed and sent, and the replies are read as they come, and all
of them before the session's next statement. Waiting for each reply (a commit, so a WAL
flush) was the largest single wait of a pool process in the clients.add profile: 458 of its
2,486 busy samples (bench/README.md, seventh session); with one record on the wire at a time
it was still 12.5 % of the pool's samples in notifications.send (eleventh session).
"""

from __future__ import annotations

import select
import time
from contextlib import suppress
from types import TracebackType
from typing import Any

import psycopg
from psycopg import pq
from sqlalchemy import Connection, bindparam, event, update
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


class SentRecords:
    """The sent records of one delivery, written without waiting for their replies.

    Used as a context manager around the sending. Any statement on the connection settles
    the records first (a lazy load of the ORM included: the connection leaves pipeline mode
    for it); the caller settles before its own statements too, so that a failed record's
    retry, which may roll the session back, never runs in the middle of another statement.
    Where the session's statements do not commit on their own (SQLite, a session inside a
    test's transaction), each record waits for its commit as before.
    """

    def __init__(self, session: Session, sent: list[str]) -> None:
        self._session = session
        self._sent = sent
        self._overlap = commits_each_statement(session) and _driver(session) == "psycopg"
        # Read here, like the attachments' setting (services.mail.attachments): the process's.
        self._statement = (
            _MARK_SENT_ASYNCHRONOUSLY_SQL
            if get_settings().sent_record_commit == "asynchronous"
            else _MARK_SENT_SQL
        )
        # The connection in pipeline mode, while records are on it.
        self._pgconn: pq.abc.PGconn | None = None
        # The messages whose records are on the wire, oldest first, and of those whose reply
        # came, whether it succeeded, in the same order.
        self._pending: list[str] = []
        self._replies: list[bool] = []
        # Whether the record whose reply is being read has had only successes so far.
        self._succeeded = True
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

    def _before_statement(self, *_: Any) -> None:
        self.settle()

    def add(self, message_id: str) -> None:
        """Record one message as sent: its statement is written to PostgreSQL before this
        returns (a crash afterwards does not lose it), its reply read later."""
        if not self._overlap:
            self._record_waiting(message_id)
            return
        try:
            pgconn = self._pipeline()
            self._read_replies(pgconn, wait=False)  # the earlier ones', if they came
            pgconn.send_query_params(
                self._statement, [message_id.encode(), utcnow().isoformat().encode()]
            )
            pgconn.pipeline_sync()
            _flush(pgconn)
        except psycopg.Error:
            self.settle()
            self._record_waiting(message_id)
            return
        self._pending.append(message_id)

    def settle(self) -> None:
        """Read every reply still owed and leave pipeline mode; a record that failed is
        written again, the waiting way, with its retries on a fresh connection."""
        pgconn, self._pgconn = self._pgconn, None
        if pgconn is None:
            return
        # Should the connection be gone, every record still owed is written again below.
        with suppress(psycopg.Error):
            self._read_replies(pgconn, wait=True)
        with suppress(psycopg.Error):
            pgconn.exit_pipeline_mode()
        pending, self._pending = self._pending, []
        replies, self._replies = self._replies, []
        self._succeeded = True
        replies += [False] * (len(pending) - len(replies))  # no reply: not known to be in
        for message_id, succeeded in zip(pending, replies, strict=True):
            if succeeded:
                self._sent.append(message_id)
            else:
                self._record_waiting(message_id)

    def _pipeline(self) -> pq.abc.PGconn:
        if self._pgconn is not None:
            return self._pgconn
        connection = self._session.connection()
        if connection not in self._watched:
            event.listen(connection, "before_cursor_execute", self._before_statement)
            self._watched.append(connection)
        pgconn = _pgconn(connection)
        pgconn.enter_pipeline_mode()
        self._pgconn = pgconn
        return pgconn

    def _read_replies(self, pgconn: pq.abc.PGconn, *, wait: bool) -> None:
        """Read the replies that came (wait: all of them), each record's in turn: its
        statement's result, then its Sync's."""
        while len(self._replies) < len(self._pending):
            pgconn.consume_input()
            if pgconn.is_busy():
                if not wait:
                    return
                select.select([pgconn.socket], [], [])
                continue
            result = pgconn.get_result()
            if result is None:  # the end of one statement's results
                if pgconn.status == pq.ConnStatus.BAD:  # or of all: nothing more will come
                    raise psycopg.OperationalError("the connection to PostgreSQL is gone")
                continue
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                self._replies.append(self._succeeded)
                self._succeeded = True
            elif result.status != pq.ExecStatus.COMMAND_OK:
                self._succeeded = False  # its Sync's reply follows

    def _record_waiting(self, message_id: str) -> None:
        record_sent(self._session, message_id)
        self._sent.append(message_id)


def _driver(session: Session) -> str:
    bind: Any = session.get_bind()
    return str(bind.dialect.driver)


def _pgconn(connection: Connection) -> pq.abc.PGconn:
    dbapi_connection: Any = connection.connection.dbapi_connection
    return dbapi_connection.pgconn  # type: ignore[no-any-return]


def _flush(pgconn: pq.abc.PGconn) -> None:
    """Write out the whole statement: psycopg keeps its connections non-blocking."""
    while pgconn.flush():
        select.select([pgconn.socket], [pgconn.socket], [])
        pgconn.consume_input()
