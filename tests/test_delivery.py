"""Delivery over real SMTP (an in-process aiosmtpd server): MIME, one connection, failures."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest.mock import patch

import payloads
from conftest import Apply, Publisher
from smtp_sink import SmtpSink
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import EmailMessage
from services.db import SessionFactory
from services.mail.compose import compose
from services.mail.delivery import CLAIM_CHUNK, DeliveryReport, deliver_messages
from services.mail.transports import FileTransport, SmtpConnection, SmtpTransport

FROM = "Billing <billing@host.example>"


def _owe_three_emails(apply: Apply) -> None:
    apply("clients.add", payloads.client("C1", email="holder@example.com", send_welcome=False))
    apply("contacts.add", payloads.contact("K1", "C1", "general", email="one@example.com"))
    apply("contacts.add", payloads.contact("K2", "C1", "general", email="two@example.com"))
    apply("notifications.send", payloads.notification("C1", "general"))


def _deliver(
    publisher: Publisher, session_factory: SessionFactory, smtp: SmtpSink, max_attempts: int = 3
) -> DeliveryReport:
    return deliver_messages(
        publisher.message_ids,
        session_factory,
        SmtpTransport(smtp.url),
        FROM,
        max_attempts=max_attempts,
    )


def _statuses(db: Session) -> dict[str, tuple[str, int, str | None]]:
    db.expire_all()
    return {
        m.to_address: (m.status, m.attempts, m.last_error) for m in db.scalars(select(EmailMessage))
    }


def test_batch_goes_over_one_connection_as_multipart_alternative(
    apply: Apply,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
    db: Session,
) -> None:
    _owe_three_emails(apply)

    _deliver(publisher, session_factory, smtp)

    received = smtp.wait_for(3)
    assert smtp.connections == 1
    assert sorted(r.rcpt_tos[0] for r in received) == [
        "holder@example.com",
        "one@example.com",
        "two@example.com",
    ]
    message = received[0].message
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["From"] == FROM
    assert message["Subject"] == "Maintenance"
    assert message["X-Clientflow-Idempotency-Key"]
    assert {s for s, _, _ in _statuses(db).values()} == {"sent"}


def test_delivering_again_sends_nothing_twice(
    apply: Apply, publisher: Publisher, session_factory: SessionFactory, smtp: SmtpSink
) -> None:
    _owe_three_emails(apply)
    _deliver(publisher, session_factory, smtp)
    _deliver(publisher, session_factory, smtp)
    assert len(smtp.wait_for(3)) == 3
    assert smtp.connections == 1


def test_recipient_refused_with_550_fails_only_that_message(
    apply: Apply,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
    db: Session,
) -> None:
    _owe_three_emails(apply)
    smtp.fail_rcpt["one@example.com"] = "550 5.1.1 No such user"

    report = _deliver(publisher, session_factory, smtp)

    assert len(smtp.wait_for(2)) == 2
    statuses = _statuses(db)
    assert statuses["one@example.com"] == ("failed", 1, "550 5.1.1 No such user")
    assert statuses["two@example.com"][0] == "sent"
    assert report.retry == []


def test_temporary_failure_is_retried_then_sent_once(
    apply: Apply,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
    db: Session,
) -> None:
    _owe_three_emails(apply)
    smtp.temp_fail_data = 1

    first = _deliver(publisher, session_factory, smtp)
    retry_ids = first.retry
    assert len(retry_ids) == 1
    statuses = _statuses(db)
    assert sorted(s for s, _, _ in statuses.values()) == ["queued", "sent", "sent"]
    queued = next(v for v in statuses.values() if v[0] == "queued")
    assert queued[2] is not None
    assert queued[2].startswith("451")

    _deliver(publisher, session_factory, smtp)

    assert len(smtp.wait_for(3)) == 3
    assert {s for s, _, _ in _statuses(db).values()} == {"sent"}


def test_gives_up_after_the_attempt_limit_and_says_why(
    apply: Apply,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
    db: Session,
) -> None:
    apply("clients.add", payloads.client("C1", email="holder@example.com"))
    smtp.temp_fail_data = 10
    for _ in range(2):
        _deliver(publisher, session_factory, smtp, max_attempts=2)
    status, attempts, error = _statuses(db)["holder@example.com"]
    assert (status, attempts) == ("failed", 2)
    assert error is not None
    assert error.startswith("gave up after 2 attempts: 451")


def test_server_down_keeps_messages_queued_for_retry(
    apply: Apply,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
    db: Session,
) -> None:
    _owe_three_emails(apply)
    port = smtp.port
    smtp.stop()
    report = deliver_messages(
        publisher.message_ids,
        session_factory,
        SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=2),
        FROM,
        3,
    )
    assert len(report.retry) == 3
    assert {(s, a) for s, a, _ in _statuses(db).values()} == {("queued", 1)}


def test_file_transport_writes_eml_files(
    apply: Apply, publisher: Publisher, session_factory: SessionFactory, tmp_path: Path
) -> None:
    folder = tmp_path / "mail"
    _owe_three_emails(apply)
    deliver_messages(publisher.message_ids, session_factory, FileTransport(folder), FROM, 3)
    files = sorted(p.name for p in folder.glob("*.eml"))
    assert len(files) == 3
    assert all(name.startswith("general_announcement__") for name in files)


def test_a_claimed_message_is_not_sent_by_a_second_delivery(
    apply: Apply,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
    db: Session,
) -> None:
    """Two deliveries of the same ids (a redelivered task, a relay) send each message once."""
    _owe_three_emails(apply)
    first_id = publisher.message_ids[0]

    class SecondDeliveryMidway:
        """Runs the competing delivery while the first holds its claim on the first message."""

        def __init__(self) -> None:
            self.inner = SmtpTransport(smtp.url)
            self.ran = False

        def connect(self) -> Any:
            return self._connect()

        @contextmanager
        def _connect(self) -> Iterator[Any]:
            with self.inner.connect() as connection:
                outer = self

                class Competing:
                    def send(self, message: Any, *envelope: Any, **options: Any) -> None:
                        if not outer.ran:
                            outer.ran = True
                            _deliver(publisher, session_factory, smtp)
                        connection.send(message, *envelope, **options)

                yield Competing()

    deliver_messages([first_id], session_factory, SecondDeliveryMidway(), FROM, 3)

    received = smtp.wait_for(3)
    assert sorted(r.rcpt_tos[0] for r in received) == [
        "holder@example.com",
        "one@example.com",
        "two@example.com",
    ]
    assert {s for s, _, _ in _statuses(db).values()} == {"sent"}


def test_a_connection_dropped_mid_chunk_leaves_nothing_in_sending(
    apply: Apply,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
    db: Session,
) -> None:
    """Claims come CLAIM_CHUNK at a time; those claimed but never tried go back to `queued`."""
    apply("clients.add", payloads.client("C1", email="holder@example.com", send_welcome=False))
    for number in range(CLAIM_CHUNK + 5):
        apply(
            "contacts.add",
            payloads.contact(f"K{number}", "C1", "general", email=f"k{number}@example.com"),
        )
    apply("notifications.send", payloads.notification("C1", "general"))
    owed = len(publisher.message_ids)
    assert owed == CLAIM_CHUNK + 6

    class DropsAfterThree:
        """The real SMTP server; the connection breaks on the fourth message."""

        def __init__(self) -> None:
            self.inner = SmtpTransport(smtp.url)

        @contextmanager
        def connect(self) -> Iterator[Any]:
            with self.inner.connect() as connection:
                yield Dropping(connection)

    class Dropping:
        def __init__(self, connection: Any) -> None:
            self.connection, self.sent = connection, 0

        def send(self, message: Any, *envelope: Any, **options: Any) -> None:
            if self.sent == 3:
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            self.connection.send(message, *envelope, **options)
            self.sent += 1

    report = deliver_messages(publisher.message_ids, session_factory, DropsAfterThree(), FROM, 3)

    assert len(report.sent) == 3
    assert len(report.retry) == owed - 3
    statuses = [status for status, _, _ in _statuses(db).values()]
    assert sorted(set(statuses)) == ["queued", "sent"]
    assert statuses.count("sent") == 3
    assert len(smtp.wait_for(3)) == 3

    # The next delivery (the task's retry) sends the rest, each once.
    again = deliver_messages(
        publisher.message_ids, session_factory, SmtpTransport(smtp.url), FROM, 3
    )
    assert len(again.sent) == owed - 3
    assert len(smtp.wait_for(owed)) == owed
    assert len({str(m.message["To"]) for m in smtp.messages}) == owed


def test_one_transport_keeps_its_connection_between_batches_and_drops_a_broken_one(
    apply: Apply, publisher: Publisher, session_factory: SessionFactory, smtp: SmtpSink
) -> None:
    """What each worker process does: its transport is reused by every delivery it runs."""
    transport = SmtpTransport(smtp.url)
    for n in range(3):
        apply("clients.add", payloads.client(f"C{n}"))  # a welcome email each
        deliver_messages(publisher.message_ids, session_factory, transport, FROM, max_attempts=3)
    smtp.wait_for(3)
    assert smtp.connections == 1

    # The server goes away between batches: the kept connection is found dead and replaced.
    smtp.stop()
    smtp.start()
    apply("clients.add", payloads.client("C9"))
    with patch("services.mail.transports.CHECK_IDLE_AFTER_SECONDS", 0.0):
        report = deliver_messages(
            publisher.message_ids, session_factory, transport, FROM, max_attempts=3
        )
    assert len(report.sent) == 1
    assert smtp.connections == 1  # counted since the restart: one new connection
    transport.close()


def test_headers_say_automated_carry_reply_to_and_one_message_id_on_every_attempt(
    apply: Apply,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
) -> None:
    apply("clients.add", payloads.client("C1", email="holder@example.com", send_welcome=False))
    apply("notifications.send", payloads.notification("C1", "general"))
    # The server takes the message and then reports a temporary failure: the message is
    # delivered again, and the server must be able to tell it is the same one.
    smtp.temp_fail_data = 1
    ids = publisher.message_ids

    def deliver() -> DeliveryReport:
        return deliver_messages(
            ids, session_factory, SmtpTransport(smtp.url), FROM, max_attempts=3,
            reply_to="Support Désk <support@host.example>",
        )  # fmt: skip

    assert deliver().retry == ids
    assert deliver().sent == ids

    (received,) = smtp.wait_for(1)
    message = received.message
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Reply-To"] == "Support Désk <support@host.example>"
    assert message["Message-ID"] == f"<{ids[0]}@host.example>"
    assert [r.message["Message-ID"] for r in smtp.refused] == [message["Message-ID"]]


def test_each_message_is_composed_once_ahead_of_its_turn(
    apply: Apply, publisher: Publisher, session_factory: SessionFactory, smtp: SmtpSink
) -> None:
    _owe_three_emails(apply)
    sending: list[str] = []  # the recipient of the message being sent, while it is
    composed: list[tuple[str, list[str]]] = []  # (recipient, what was being sent meanwhile)
    send = SmtpConnection.send

    def composing(message: EmailMessage, *args: Any) -> Any:
        composed.append((message.to_address, list(sending)))
        return compose(message, *args)

    def sending_one(self: SmtpConnection, mime: Any, *args: Any, **options: Any) -> None:
        sending.append(str(mime["To"]))
        try:
            send(self, mime, *args, **options)
        finally:
            sending.pop()

    with (
        patch("services.mail.delivery.compose", composing),
        patch.object(SmtpConnection, "send", sending_one),
    ):
        report = _deliver(publisher, session_factory, smtp)

    assert len(report.sent) == 3
    first_sent, second_sent, last_sent = (r.rcpt_tos[0] for r in smtp.wait_for(3))
    # Each once: the first two before anything was sent (the second's envelope goes out with
    # the first), the last during the send of the first.
    order = [address for address, _ in composed]
    assert sorted(order) == sorted([first_sent, second_sent, last_sent])
    assert sorted(order[:2]) == sorted([first_sent, second_sent])
    assert [meanwhile for _, meanwhile in composed[:2]] == [[], []]
    [last_composed_while] = composed[2][1]
    assert first_sent in last_composed_while


def test_each_email_after_the_first_costs_one_write_its_envelope_going_with_the_one_before(
    apply: Apply, publisher: Publisher, session_factory: SessionFactory, smtp: SmtpSink
) -> None:
    _owe_three_emails(apply)
    writes: list[bytes] = []
    write = smtplib.SMTP.send

    def counted(self: smtplib.SMTP, data: Any) -> None:
        writes.append(data if isinstance(data, bytes) else data.encode())
        write(self, data)

    with patch.object(smtplib.SMTP, "send", counted):
        report = _deliver(publisher, session_factory, smtp)

    assert len(report.sent) == 3
    received = smtp.wait_for(3)
    assert sorted(r.rcpt_tos[0] for r in received) == [
        "holder@example.com", "one@example.com", "two@example.com",
    ]  # fmt: skip
    envelopes = [w for w in writes if w.startswith(b"MAIL FROM:")]
    contents = [w for w in writes if b"\r\n.\r\n" in w]
    # The first envelope on its own, then each content with the next envelope behind it,
    # the last alone: four writes for three emails, where one at a time takes six.
    assert (len(envelopes), len(contents)) == (1, 3)
    assert [b"MAIL FROM:" in content for content in contents] == [True, True, False]
