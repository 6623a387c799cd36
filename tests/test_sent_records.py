"""Sent records written without waiting for the reply (services/mail/sent_records.py).

On PostgreSQL each record is its own transaction on the wire before the next message goes
out; these tests hold that, on sessions of a real engine (the shared session_factory runs
inside a test's transaction, where records wait for their commit as before).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from smtp_sink import SmtpSink
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session
from worker_process import wait_until

from models import EmailMessage
from models.emails import EmailStatus
from models.engine import make_engine
from models.settings import get_settings
from services.db import SessionFactory, make_session_factory, statement_at_a_time
from services.mail import sent_records
from services.mail.delivery import deliver_messages
from services.mail.sent_records import SentRecords
from services.mail.transports import SmtpTransport


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(pg_engine: Engine) -> SessionFactory:
    return make_session_factory(pg_engine)


def queue_emails(
    factory: SessionFactory, count: int, status: str = EmailStatus.QUEUED
) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with factory() as session:
        for number, message_id in enumerate(ids):
            session.add(
                EmailMessage(
                    id=message_id,
                    idempotency_key=uuid.uuid4().hex,
                    event_id=f"E{number}",
                    client_id="C1",
                    template="client_welcome",
                    category="general",
                    to_address=f"r{number}@example.com",
                    to_name=f"R {number}",
                    subject="Welcome",
                    body_text="Hello",
                    body_html="<p>Hello</p>",
                    status=status,
                )
            )
        session.commit()
    return ids


@pytest.fixture
def waited_for(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The messages whose record was written the waiting way (record_sent), in order."""
    found: list[str] = []
    record_and_wait = sent_records.record_sent

    def spied(session: Session, message_id: str) -> None:
        found.append(message_id)
        record_and_wait(session, message_id)

    monkeypatch.setattr(sent_records, "record_sent", spied)
    return found


def statuses(factory: SessionFactory, ids: list[str]) -> list[tuple[str, bool]]:
    """(status, sent_at set) of each message, in the order of ids, read on a fresh session."""
    with factory() as session:
        rows = {
            m.id: (m.status, m.sent_at is not None)
            for m in session.scalars(select(EmailMessage).where(EmailMessage.id.in_(ids)))
        }
    return [rows[message_id] for message_id in ids]


def test_a_delivery_records_every_message_sent_in_order(
    factory: SessionFactory, smtp: SmtpSink
) -> None:
    ids = queue_emails(factory, 25)  # more than one claim chunk

    report = deliver_messages(ids, factory, SmtpTransport(smtp.url), "b@host.example", 3)

    assert report.sent == ids
    assert statuses(factory, ids) == [(EmailStatus.SENT, True)] * len(ids)
    assert len(smtp.wait_for(len(ids))) == len(ids)


def test_a_record_commits_on_its_own_before_its_reply_is_read(factory: SessionFactory) -> None:
    """What makes not waiting safe: once add() returns, a crash of this process cannot
    undo the record (the statement and its Sync are with PostgreSQL)."""
    [message_id] = queue_emails(factory, 1, EmailStatus.SENDING)
    sent: list[str] = []
    with statement_at_a_time(factory)() as session:
        records = SentRecords(session, sent)
        records.add(message_id)
        wait_until(
            lambda: statuses(factory, [message_id]) == [(EmailStatus.SENT, True)],
            "the record committed, seen from another connection",
        )
        assert sent == []  # its reply not read yet
        records.settle()
    assert sent == [message_id]


@pytest.fixture
def own_engine(new_postgres_database: Callable[[], str]) -> Iterator[Engine]:
    """A database of the test's own: it counts (and ends) backends by their last statement,
    which another test's pooled connections in a shared one could match."""
    engine = make_engine(new_postgres_database())
    yield engine
    engine.dispose()


def test_two_lanes_each_carry_one_record_and_the_replies_are_read_in_order(
    own_engine: Engine,
) -> None:
    """The second email's record goes out on a second connection while the first's reply is
    unread; the third's waits for the first's reply (its lane's), not the second's."""
    factory, pg_engine = make_session_factory(own_engine), own_engine
    ids = queue_emails(factory, 3, EmailStatus.SENDING)
    sent: list[str] = []
    with statement_at_a_time(factory)() as session:
        records = SentRecords(session, sent, lanes=2)
        records.add(ids[0])
        records.add(ids[1])
        wait_until(
            lambda: statuses(factory, ids[:2]) == [(EmailStatus.SENT, True)] * 2,
            "both records committed, seen from another connection",
        )
        assert sent == []  # neither reply read yet
        with pg_engine.connect() as admin:
            # The session's connection and the lane of our own: two backends.
            assert admin.scalar(text(IDLE_BACKENDS_WITH_A_RECORD)) == 2
        records.add(ids[2])
        assert sent == [ids[0]]  # its lane's reply, read before its next record went out
        records.settle()
    assert sent == ids


# Backends whose last statement was a sent record: one per lane with a record on it.
IDLE_BACKENDS_WITH_A_RECORD = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND query LIKE 'UPDATE email_messages SET status%'
"""


def test_a_record_on_a_dead_second_lane_is_written_again_on_a_fresh_connection(
    own_engine: Engine, waited_for: list[str]
) -> None:
    factory, pg_engine = make_session_factory(own_engine), own_engine
    ids = queue_emails(factory, 3, EmailStatus.SENDING)
    sent: list[str] = []
    with statement_at_a_time(factory)() as session, SentRecords(session, sent, 2) as records:
        records.add(ids[0])
        records.add(ids[1])
        records.settle()
        session_pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with pg_engine.connect() as admin:
            # The other backend that wrote a record: the second lane's; ended.
            admin.execute(text(END_THE_OTHER_LANE), {"session_pid": session_pid})
        records.add(ids[2])  # the first lane: fine
        records.add(ids[0])  # the second, dead: written again the waiting way
    assert waited_for == [ids[0]]
    assert sent == [*ids, ids[0]]
    assert statuses(factory, ids) == [(EmailStatus.SENT, True)] * 3


END_THE_OTHER_LANE = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> :session_pid
  AND query LIKE 'UPDATE email_messages SET status%'
"""


def test_a_record_whose_connection_died_is_written_again_on_a_fresh_one(
    factory: SessionFactory, pg_engine: Engine, waited_for: list[str]
) -> None:
    first, second = queue_emails(factory, 2, EmailStatus.SENDING)
    sent: list[str] = []
    with statement_at_a_time(factory)() as session, SentRecords(session, sent) as records:
        records.add(first)
        records.settle()
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with pg_engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # Sent on a connection PostgreSQL has closed: the reply is an error, or nothing.
        records.add(second)
    assert waited_for == [second]  # the first went the overlapping way, the second again
    assert sent == [first, second]
    assert statuses(factory, [first, second]) == [(EmailStatus.SENT, True)] * 2


def test_on_sqlite_each_record_waits_for_its_commit(sqlite_url: str, smtp: SmtpSink) -> None:
    engine = make_engine(sqlite_url)
    factory = make_session_factory(engine)
    ids = queue_emails(factory, 3)
    report = deliver_messages(ids, factory, SmtpTransport(smtp.url), "b@host.example", 3)
    assert report.sent == ids
    assert statuses(factory, ids) == [(EmailStatus.SENT, True)] * 3
    engine.dispose()


def test_any_statement_on_the_connection_reads_the_pending_reply_first(
    factory: SessionFactory,
) -> None:
    """An ORM lazy load between two emails, say: libpq takes one command at a time."""
    first, second = queue_emails(factory, 2, EmailStatus.SENDING)
    sent: list[str] = []
    with statement_at_a_time(factory)() as session, SentRecords(session, sent) as records:
        records.add(first)
        assert sent == []  # on the wire, its reply unread
        status = session.scalar(select(EmailMessage.status).where(EmailMessage.id == first))
        assert (status, sent) == (EmailStatus.SENT, [first])
        records.add(second)
    assert sent == [first, second]


# Writes, into the row it records, how its transaction is to commit: what the sent record's
# statement set for itself, seen from inside it.
COMMIT_SEEN = """
CREATE FUNCTION commit_seen() RETURNS trigger AS $$
BEGIN
  NEW.last_error := 'synchronous_commit=' || current_setting('synchronous_commit');
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER commit_seen BEFORE UPDATE ON email_messages
  FOR EACH ROW WHEN (NEW.status = 'sent') EXECUTE FUNCTION commit_seen();
"""


@pytest.fixture(params=["synchronous", "asynchronous"])
def record_commit(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("CLIENTFLOW_SENT_RECORD_COMMIT", request.param)
    get_settings.cache_clear()
    yield str(request.param)
    get_settings.cache_clear()  # the next test reads the environment as it was


def test_an_asynchronous_record_commits_so_alone_and_the_connection_keeps_its_setting(
    new_postgres_database: Callable[[], str], smtp: SmtpSink, record_commit: str
) -> None:
    engine = make_engine(new_postgres_database())  # its own: the trigger stays in it
    factory = make_session_factory(engine)
    with engine.begin() as connection:
        connection.execute(text(COMMIT_SEEN))
    ids = queue_emails(factory, 3)

    report = deliver_messages(ids, factory, SmtpTransport(smtp.url), "b@host.example", 3)

    assert report.sent == ids
    assert statuses(factory, ids) == [(EmailStatus.SENT, True)] * 3
    with factory() as session:
        seen = set(session.scalars(select(EmailMessage.last_error)))
    assert seen == {"synchronous_commit=" + ("off" if record_commit == "asynchronous" else "on")}
    # The setting was the record's transaction's alone: the pool's connections, which the
    # next event's transaction takes, commit as the database says.
    with statement_at_a_time(factory)() as session:
        assert session.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
    with factory() as session:
        assert session.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
    engine.dispose()


# The sent record's prepared statement on this connection, and how often it ran.
PREPARED_RECORD = """
SELECT name, generic_plans + custom_plans FROM pg_prepared_statements
WHERE name LIKE 'clientflow_mark_sent%'
"""


def test_the_record_is_prepared_once_per_connection_and_kept_for_the_next_delivery(
    own_engine: Engine,
) -> None:
    factory = make_session_factory(own_engine)
    ids = queue_emails(factory, 3, EmailStatus.SENDING)
    sent: list[str] = []
    with statement_at_a_time(factory)() as session, SentRecords(session, sent) as records:
        records.add(ids[0])
        records.add(ids[1])
    # The next delivery's session takes the same pooled connection (the pool holds only it).
    with statement_at_a_time(factory)() as session, SentRecords(session, sent) as records:
        records.add(ids[2])
        records.settle()
        prepared = session.execute(text(PREPARED_RECORD)).all()
    assert [tuple(row) for row in prepared] == [("clientflow_mark_sent", 3)]
    assert sent == ids
    assert statuses(factory, ids) == [(EmailStatus.SENT, True)] * 3


def test_a_record_whose_prepared_statement_was_dropped_is_written_again_and_prepared_again(
    own_engine: Engine, waited_for: list[str]
) -> None:
    """psycopg drops every prepared statement of a connection after a rollback (DEALLOCATE
    ALL), the record's too: the next record fails on it, goes the waiting way, and the one
    after prepares it again."""
    factory = make_session_factory(own_engine)
    ids = queue_emails(factory, 3, EmailStatus.SENDING)
    sent: list[str] = []
    with statement_at_a_time(factory)() as session, SentRecords(session, sent) as records:
        records.add(ids[0])
        session.execute(text("DEALLOCATE ALL"))
        records.add(ids[1])  # its statement is gone
        records.add(ids[2])
        records.settle()
        prepared = session.execute(text(PREPARED_RECORD)).all()
    assert waited_for == [ids[1]]
    assert [tuple(row) for row in prepared] == [("clientflow_mark_sent", 1)]  # ids[2]'s
    assert sent == ids
    assert statuses(factory, ids) == [(EmailStatus.SENT, True)] * 3


def test_a_connection_told_not_to_prepare_sends_the_record_unprepared(
    own_engine: Engine, waited_for: list[str]
) -> None:
    """prepare_threshold=None in the URL's connect args (a PgBouncer that cannot keep
    prepared statements, docs/deployment.md): the records take no prepared statement either."""
    factory = make_session_factory(own_engine)
    ids = queue_emails(factory, 2, EmailStatus.SENDING)
    sent: list[str] = []
    with statement_at_a_time(factory)() as session, SentRecords(session, sent) as records:
        dbapi_connection: Any = session.connection().connection.dbapi_connection
        dbapi_connection.prepare_threshold = None
        records.add(ids[0])
        records.add(ids[1])
        records.settle()
        prepared = session.execute(text(PREPARED_RECORD)).all()
    assert prepared == []
    assert waited_for == []  # each went out without waiting, as before
    assert sent == ids
    assert statuses(factory, ids) == [(EmailStatus.SENT, True)] * 2
