"""Delivers queued messages from the log over one connection and records each outcome."""

from __future__ import annotations

import email.errors
import smtplib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from email.message import Message as MimeMessage

from sqlalchemy import update
from sqlalchemy.orm import Session, object_session

from models.base import utcnow
from models.emails import EmailMessage, EmailStatus
from services.db import SessionFactory, done, statement_at_a_time
from services.mail.attachments import InvoiceAttachments
from services.mail.compose import compose, envelope_recipient, envelope_sender
from services.mail.sent_records import SentRecords
from services.mail.smtp_pipelining import Envelope
from services.mail.transports import MailTransport

# What composing or flattening a message raises for content the email package refuses (a
# linefeed in a header, an address it cannot encode). Named, not Exception: a time limit or
# a bug must not be taken for bad content and fail a message for good.
COMPOSE_ERRORS = (ValueError, TypeError, LookupError, email.errors.MessageError)
# Messages claimed per commit. A worker that dies leaves at most this many in `sending`; they
# were not sent (only the one between the server's 250 and our commit may have been), and the
# relay requeues them when their lease ends: late, never twice.
CLAIM_CHUNK = 20
# Deliveries of this many messages or more record them over RECORD_LANES connections
# (SentRecords): a notification to 11 recipients and an invoice run's batches do, the few
# welcome emails of a small clients.add batch do not, sparing them the extra checkouts (the
# crossover itself was not measured). Three lanes: notifications.send (--notifications 1500,
# two runs each) 1,792 emails/s with one, 2,013 with two, 2,165 with three, no more with four.
MORE_LANES_FROM = 8
RECORD_LANES = 3


@dataclass
class DeliveryReport:
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # Transient failures still under the attempt limit: the caller retries these later.
    retry: list[str] = field(default_factory=list)
    last_error: str | None = None
    # The server could not be reached, or the connection broke before anything was sent.
    connection_failed: bool = False


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def smtp_reply(exc: BaseException) -> tuple[int | None, str]:
    """The SMTP code and text of a failure, or None for failures below SMTP (network)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        code, reply = next(iter(exc.recipients.values()))
        return code, f"{code} {_text(reply)}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code, f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return None, f"{type(exc).__name__}: {exc}"


def is_permanent(exc: BaseException) -> bool:
    """A 5xx about this message (recipient refused, content refused) will never succeed.

    Sender or authentication refusals are about our configuration, not the message, so they
    stay retryable until someone fixes the settings.
    """
    if isinstance(exc, (smtplib.SMTPNotSupportedError, *COMPOSE_ERRORS)):
        # The message needs a capability the server lacks (SMTPUTF8), or cannot be written as
        # MIME at all (a header the email package refuses): no retry changes either.
        return True
    code, _ = smtp_reply(exc)
    return (
        isinstance(exc, smtplib.SMTPRecipientsRefused | smtplib.SMTPDataError)
        and code is not None
        and code >= 500
    )


def breaks_connection(exc: BaseException) -> bool:
    """Network-level failures: the rest of the batch cannot use this connection."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


def deliver_messages(
    message_ids: list[str],
    session_factory: SessionFactory,
    transport: MailTransport,
    mail_from: str,
    max_attempts: int,
    critical: Callable[[], AbstractContextManager[None]] = nullcontext,
    reply_to: str | None = None,
) -> DeliveryReport:
    """Send each still-queued message once, over one connection, recording every outcome.

    Messages are claimed (queued -> sending, committed, CLAIM_CHUNK at a time) before their
    SMTP transactions and each is marked sent right after the server's 250, so two deliveries
    of the same ids cannot both send, and a crash can repeat at most the one message between
    "250" and our commit.
    `critical` wraps each send-and-record so the caller can keep a termination out of it
    (tasks/shield.py).
    """
    report = DeliveryReport()
    with statement_at_a_time(session_factory)() as session:
        claimed, pending = _claim_next(session, list(dict.fromkeys(message_ids)))
        if claimed:
            _send(
                session, transport, claimed, pending, (mail_from, reply_to), max_attempts,
                critical, report,
            )  # fmt: skip
    return report


def deliver_claimed(
    messages: list[EmailMessage],
    session_factory: SessionFactory,
    transport: MailTransport,
    mail_from: str,
    max_attempts: int,
    critical: Callable[[], AbstractContextManager[None]] = nullcontext,
    reply_to: str | None = None,
) -> DeliveryReport:
    """Send messages already claimed for this process (EmailQueue.claim, committed with their
    event), recording every outcome."""
    report = DeliveryReport()
    with statement_at_a_time(session_factory)() as session:
        # Sent as they are, still the committing session's (read, never changed there): one
        # that fails is merged into this session to record it (_record_failure). Merging
        # every message up front was 8 % of a pool process's time in the notifications.send
        # profile (bench/README.md, twelfth session).
        _send(
            session, transport, list(messages), [], (mail_from, reply_to), max_attempts,
            critical, report,
        )  # fmt: skip
    return report


def _send(
    session: Session,
    transport: MailTransport,
    claimed: list[EmailMessage],
    pending: list[str],
    sender: tuple[str, str | None],  # From, Reply-To
    max_attempts: int,
    critical: Callable[[], AbstractContextManager[None]],
    report: DeliveryReport,
) -> None:
    """Send the claimed messages, then claim and send the pending ids, over one connection."""
    attachments = InvoiceAttachments(session)
    envelope_from = envelope_sender(sender[0])
    # More connections for the records where the delivery is long enough to repay their
    # checkouts and pings: each has one record on the wire at a time, so with three a record's
    # reply is waited for only once three more emails went out, not one.
    lanes = RECORD_LANES if len(claimed) + len(pending) >= MORE_LANES_FROM else 1
    records = SentRecords(session, report.sent, lanes)
    upcoming = Upcoming(lambda message: compose(message, *sender, attachments.for_message(message)))
    try:
        # The records are settled before the connection's QUIT, and before each other use
        # of the session.
        with transport.connect() as connection, records:
            attachments.load(claimed)
            while claimed:
                message = claimed.pop(0)
                mime = upcoming.take(message)
                # Before the critical section: writing a PDF is no reason to hold off a
                # termination, and a message interrupted here was not sent.
                files = attachments.for_message(message) if mime is None else ()
                then = None
                if claimed:
                    # The next email, composed now if it was not while the one before was
                    # sent, so that its envelope can go with this one.
                    upcoming.make(claimed[0])()
                    then = upcoming.envelope(claimed[0], envelope_from)
                with critical():
                    try:
                        connection.send(
                            mime if mime is not None else compose(message, *sender, files),
                            envelope_from,
                            [envelope_recipient(message)],
                            meanwhile=upcoming.make(claimed[1]) if len(claimed) > 1 else None,
                            then=then,
                        )
                    except (smtplib.SMTPException, OSError, *COMPOSE_ERRORS) as exc:
                        # One message's failure; the rest of the batch still goes out
                        # unless the connection itself is gone.
                        records.settle()
                        _record_failure(session, message, exc, max_attempts, report)
                        if breaks_connection(exc):
                            raise
                        continue
                    records.add(message.id)
                if not claimed:
                    records.settle()
                    claimed, pending = _claim_next(session, pending)
                    attachments.load(claimed)
    except (smtplib.SMTPException, OSError) as exc:
        # Could not connect, or the connection dropped: what is left was not attempted,
        # but it counts as an attempt so a server that never returns ends in `failed`.
        report.connection_failed = True
        for message in claimed + _claim_many(session, pending):
            _record_failure(session, message, exc, max_attempts, report)


class Upcoming:
    """The next two messages of a delivery, composed (their PDFs made) ahead of their turn.

    The next one's envelope goes out with the current one's content (smtp_pipelining: one
    round trip per email), so it is composed before the current one is sent; the one after
    it is composed while the server takes the current one: the SMTP connection calls `make`'s
    work between writing a message and reading the server's reply to it, time the process
    otherwise spends waiting.

    Only ahead of time, never instead: work that fails leaves nothing made, and the message
    is composed again in its turn, where its failure is recorded as before. It runs inside
    the critical section of the message before it, so a termination waits for it: one
    message's composing, milliseconds.
    """

    def __init__(self, make: Callable[[EmailMessage], MimeMessage]) -> None:
        self._make = make
        self._made: list[tuple[EmailMessage, MimeMessage]] = []

    def make(self, message: EmailMessage) -> Callable[[], None]:
        def work() -> None:
            if self._find(message) is not None:
                return
            try:
                self._made.append((message, self._make(message)))
            except Exception:
                return

        return work

    def envelope(self, message: EmailMessage, sender: str) -> Envelope | None:
        """The message's envelope, if it was composed ahead: to be written ahead."""
        mime = self._find(message)
        return None if mime is None else Envelope(mime, sender, [envelope_recipient(message)])

    def take(self, message: EmailMessage) -> MimeMessage | None:
        """The message composed ahead, if it was."""
        mime = self._find(message)
        self._made = [made for made in self._made if made[0] is not message]
        return mime

    def _find(self, message: EmailMessage) -> MimeMessage | None:
        return next((mime for made, mime in self._made if made is message), None)


def _claim_next(session: Session, pending: list[str]) -> tuple[list[EmailMessage], list[str]]:
    """Claim the next chunk that still has a queued message; returns it and what is left."""
    while pending:
        chunk, pending = pending[:CLAIM_CHUNK], pending[CLAIM_CHUNK:]
        claimed = _claim_many(session, chunk)
        if claimed:  # an empty claim: another delivery has them all
            return claimed, pending
    return [], []


def _claim_many(session: Session, message_ids: list[str]) -> list[EmailMessage]:
    """Claim those still queued in one commit; returns them in the order asked."""
    if not message_ids:
        return []
    rows = session.scalars(
        update(EmailMessage)
        .where(EmailMessage.id.in_(message_ids), EmailMessage.status == EmailStatus.QUEUED)
        .values(
            status=EmailStatus.SENDING,
            claimed_at=utcnow(),
            attempts=EmailMessage.attempts + 1,
            updated_at=utcnow(),
        )
        .returning(EmailMessage),
        execution_options={"populate_existing": True},
    ).all()
    done(session)
    by_id = {message.id: message for message in rows}
    return [by_id[message_id] for message_id in message_ids if message_id in by_id]


def _record_failure(
    session: Session,
    message: EmailMessage,
    exc: BaseException,
    max_attempts: int,
    report: DeliveryReport,
) -> None:
    if object_session(message) is not session:  # one of deliver_claimed's (see there)
        message = session.merge(message, load=False)
    _, reply = smtp_reply(exc)
    if isinstance(exc, COMPOSE_ERRORS):
        reply = f"cannot be composed, not retried: {reply}"
    report.last_error = reply
    if is_permanent(exc):
        message.status = EmailStatus.FAILED
        message.last_error = reply
        report.failed.append(message.id)
    elif message.attempts >= max_attempts:
        message.status = EmailStatus.FAILED
        message.last_error = f"gave up after {message.attempts} attempts: {reply}"
        report.failed.append(message.id)
    else:
        message.status = EmailStatus.QUEUED
        message.last_error = reply
        report.retry.append(message.id)
    done(session)
