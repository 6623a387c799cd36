"""Pipelined sending (services/mail/smtp_pipelining.py) against smtplib's own, reply by reply.

The same real SMTP server, once advertising PIPELINING and once not: every refusal comes out
as the same exception with the same code, leaves the connection as usable (or as broken), and
what arrives is byte for byte what smtplib's send_message would have sent.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from email.mime.text import MIMEText
from typing import Any

import pytest
from smtp_sink import SmtpSink

from services.mail.compose import POLICY
from services.mail.smtp_pipelining import Envelope
from services.mail.transports import MailConnection, SmtpConnection, SmtpTransport

SENDER = "billing@host.example"


@pytest.fixture(params=[True, False], ids=["pipelined", "one-at-a-time"])
def pipelining(request: pytest.FixtureRequest, smtp: SmtpSink) -> bool:
    smtp.pipelining = request.param
    return bool(request.param)


@pytest.fixture
def connection(smtp: SmtpSink, pipelining: bool) -> Iterator[MailConnection]:
    transport = SmtpTransport(smtp.url)
    with transport.connect() as connection:
        yield connection
    transport.close()


def message(body: str = "Hello.\n", to: str = "r@example.com") -> MIMEText:
    mime = MIMEText(body, "plain", "us-ascii", policy=POLICY)  # 7bit: dots stay at line starts
    mime["Subject"] = "Test"
    mime["From"] = SENDER
    mime["To"] = to
    return mime


def failure(connection: MailConnection, to: str = "r@example.com") -> tuple[type, Any]:
    with pytest.raises(smtplib.SMTPException) as raised:
        connection.send(message(to=to), SENDER, [to])
    exc = raised.value
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return type(exc), exc.recipients
    assert isinstance(exc, smtplib.SMTPResponseException)
    return type(exc), (exc.smtp_code, exc.smtp_error)


def test_the_path_taken_is_the_servers_choice(
    connection: MailConnection, pipelining: bool, monkeypatch: pytest.MonkeyPatch, smtp: SmtpSink
) -> None:
    used: list[str] = []
    original = smtplib.SMTP.send_message

    def spied(self: smtplib.SMTP, *args: Any, **kwargs: Any) -> Any:
        used.append("send_message")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(smtplib.SMTP, "send_message", spied)
    connection.send(message(), SENDER, ["r@example.com"])
    assert used == ([] if pipelining else ["send_message"])
    assert [m.rcpt_tos for m in smtp.wait_for(1)] == [["r@example.com"]]


def test_what_arrives_is_what_send_message_writes_dots_and_all(
    connection: MailConnection, smtp: SmtpSink
) -> None:
    body = ".a line starting with a dot\n.\n..two\nlast line, no newline"
    mime = message(body)
    connection.send(mime, SENDER, ["r@example.com"])
    [received] = smtp.wait_for(1)
    assert b"\r\n.a line starting" in received.data  # the transparency dots taken off again
    # Both end the data with a line break (the body has none) before the closing dot.
    assert received.data == mime.as_bytes(policy=POLICY.clone(linesep="\r\n")) + b"\r\n"
    assert received.mail_from == SENDER


def test_a_refused_recipient_is_refused_alike_and_the_connection_sends_on(
    connection: MailConnection, smtp: SmtpSink
) -> None:
    smtp.fail_rcpt["gone@example.com"] = "550 5.1.1 No such user"
    assert failure(connection, "gone@example.com") == (
        smtplib.SMTPRecipientsRefused,
        {"gone@example.com": (550, b"5.1.1 No such user")},
    )
    connection.send(message(), SENDER, ["r@example.com"])
    assert [m.rcpt_tos for m in smtp.wait_for(1)] == [["r@example.com"]]


def test_a_refused_message_is_refused_alike_and_the_connection_sends_on(
    connection: MailConnection, smtp: SmtpSink
) -> None:
    smtp.temp_fail_data = 1
    assert failure(connection) == (smtplib.SMTPDataError, (451, b"4.3.0 Try again later"))
    connection.send(message(), SENDER, ["r@example.com"])
    assert len(smtp.wait_for(1)) == 1


def test_a_refused_sender_is_refused_alike_and_the_connection_sends_on(
    connection: MailConnection, smtp: SmtpSink
) -> None:
    smtp.unavailable_reply = "451 4.3.0 Mail system busy"
    assert failure(connection) == (smtplib.SMTPSenderRefused, (451, b"4.3.0 Mail system busy"))
    smtp.unavailable_reply = None
    connection.send(message(), SENDER, ["r@example.com"])
    assert len(smtp.wait_for(1)) == 1


def test_a_closing_server_breaks_the_connection_alike(
    connection: MailConnection, smtp: SmtpSink
) -> None:
    smtp.unavailable_reply = "421 4.3.2 Service not available"
    assert failure(connection) == (
        smtplib.SMTPSenderRefused,
        (421, b"4.3.2 Service not available"),
    )
    assert isinstance(connection, SmtpConnection)
    assert connection.broken


def test_a_recipient_smtplib_cannot_encode_fails_alike(connection: MailConnection) -> None:
    # A non-ASCII local part: send_message's SMTPUTF8 path clones the message's policy with
    # utf8=True, which compose's compat32 policy does not have (delivery: cannot be composed).
    with pytest.raises(TypeError, match="utf8"):
        connection.send(message(to="zoë@example.com"), SENDER, ["zoë@example.com"])


def test_work_meanwhile_runs_once_the_message_is_written_and_before_its_reply_is_read(
    connection: MailConnection, smtp: SmtpSink
) -> None:
    seen: list[int] = []

    def meanwhile() -> None:
        # The server has the whole message already: it was written before this ran.
        seen.append(len(smtp.wait_for(1)))

    connection.send(message(), SENDER, ["r@example.com"], meanwhile=meanwhile)
    assert seen == [1]
    connection.send(message(), SENDER, ["r@example.com"])  # and the reply was read, in turn
    assert len(smtp.wait_for(2)) == 2


def test_no_work_meanwhile_for_a_message_refused_before_it_is_written(
    connection: MailConnection, smtp: SmtpSink
) -> None:
    smtp.fail_rcpt["gone@example.com"] = "550 5.1.1 No such user"
    ran: list[str] = []
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        connection.send(
            message(to="gone@example.com"), SENDER, ["gone@example.com"],
            meanwhile=lambda: ran.append("ran"),
        )  # fmt: skip
    assert ran == []


def chain(connection: MailConnection, mimes: list[MIMEText], recipients: list[str]) -> list[Any]:
    """Send each email with the next one's envelope as `then`, as delivery does; what each
    send raised (None when it went out)."""
    outcomes: list[Any] = []
    for index, (mime, to) in enumerate(zip(mimes, recipients, strict=True)):
        then = (
            Envelope(mimes[index + 1], SENDER, [recipients[index + 1]])
            if index + 1 < len(mimes)
            else None
        )
        try:
            connection.send(mime, SENDER, [to], then=then)
            outcomes.append(None)
        except smtplib.SMTPException as exc:
            outcomes.append(type(exc))
    return outcomes


def test_emails_sent_with_the_next_envelope_ahead_arrive_as_send_message_writes_them(
    connection: MailConnection, smtp: SmtpSink
) -> None:
    bodies = [".first\n..dots\n", "second\n.\n", "third, no newline"]
    mimes = [message(body) for body in bodies]
    recipients = ["a@example.com", "b@example.com", "c@example.com"]
    assert chain(connection, mimes, recipients) == [None, None, None]
    received = smtp.wait_for(3)
    assert [r.rcpt_tos for r in received] == [[to] for to in recipients]
    for mime, arrived in zip(mimes, received, strict=True):
        assert arrived.data.rstrip(b"\r\n") == mime.as_bytes(
            policy=POLICY.clone(linesep="\r\n")
        ).rstrip(b"\r\n")
    assert isinstance(connection, SmtpConnection)
    assert connection.reusable


def test_a_refused_message_with_the_next_envelope_behind_it_is_refused_alike_and_the_next_goes(
    connection: MailConnection, smtp: SmtpSink
) -> None:
    smtp.temp_fail_data = 1
    outcomes = chain(connection, [message(), message()], ["a@example.com", "b@example.com"])
    assert outcomes == [smtplib.SMTPDataError, None]
    assert [r.rcpt_tos for r in smtp.wait_for(1)] == [["b@example.com"]]
    assert [r.rcpt_tos for r in smtp.refused] == [["a@example.com"]]
    connection.send(message(), SENDER, ["c@example.com"])  # and the connection sends on
    assert len(smtp.wait_for(2)) == 2


def test_a_recipient_refused_in_an_envelope_written_ahead_is_its_own_emails_refusal(
    connection: MailConnection, smtp: SmtpSink
) -> None:
    smtp.fail_rcpt["gone@example.com"] = "550 5.1.1 No such user"
    recipients = ["a@example.com", "gone@example.com", "c@example.com"]
    outcomes = chain(connection, [message(), message(), message()], recipients)
    assert outcomes == [None, smtplib.SMTPRecipientsRefused, None]
    assert [r.rcpt_tos for r in smtp.wait_for(2)] == [["a@example.com"], ["c@example.com"]]


def test_a_next_email_that_cannot_be_written_is_not_written_ahead_and_fails_in_its_turn(
    connection: MailConnection, smtp: SmtpSink
) -> None:
    # A non-ASCII local part cannot be flattened by compat32 (see above): the first email
    # goes out alone, the second fails as it does on its own, the third goes out.
    first, unwritable, third = message(), message(to="zoë@example.com"), message()
    connection.send(
        first, SENDER, ["a@example.com"], then=Envelope(unwritable, SENDER, ["zoë@example.com"])
    )
    with pytest.raises(TypeError, match="utf8"):
        connection.send(
            unwritable, SENDER, ["zoë@example.com"], then=Envelope(third, SENDER, ["c@example.com"])
        )
    connection.send(third, SENDER, ["c@example.com"])
    assert [r.rcpt_tos for r in smtp.wait_for(2)] == [["a@example.com"], ["c@example.com"]]


def test_a_connection_left_waiting_for_an_email_written_ahead_is_closed_not_kept(
    smtp: SmtpSink, pipelining: bool
) -> None:
    transport = SmtpTransport(smtp.url)
    second = message()
    with transport.connect() as connection:
        connection.send(
            message(), SENDER, ["a@example.com"], then=Envelope(second, SENDER, ["b@example.com"])
        )
        assert isinstance(connection, SmtpConnection)
        assert connection.reusable is not pipelining
        if pipelining:
            # Another email instead of the one written ahead: refused, the connection closed
            # (the server would take this one's content for the other's).
            with pytest.raises(smtplib.SMTPServerDisconnected):
                connection.send(message(), SENDER, ["c@example.com"])
            assert connection.broken
    with transport.connect() as connection:  # a new connection where the last was closed
        connection.send(message(), SENDER, ["d@example.com"])
    transport.close()
    assert smtp.connections == (2 if pipelining else 1)
    assert [r.rcpt_tos for r in smtp.wait_for(2)] == [["a@example.com"], ["d@example.com"]]


@pytest.mark.parametrize(
    ("sender", "recipient", "arrives_as"),
    [
        ("billing@host.example", "o'brien+x@mail.example.co.uk", "o'brien+x@mail.example.co.uk"),
        ("b!#$%&*/=?^_`{|}~-@host.example", "r.s@example.com", "r.s@example.com"),
        # Not plain mailboxes: taken through smtplib.quoteaddr's parse, as send_message does.
        ("Billing <billing@host.example>", "Ada <ada@example.com>", "ada@example.com"),
    ],
)
def test_the_envelope_names_the_same_mailboxes_either_way(
    connection: MailConnection, smtp: SmtpSink, sender: str, recipient: str, arrives_as: str
) -> None:
    connection.send(message(to=recipient), sender, [recipient])
    [received] = smtp.wait_for(1)
    assert (received.mail_from, received.rcpt_tos) == (
        smtplib.quoteaddr(sender)[1:-1], [arrives_as],
    )  # fmt: skip
