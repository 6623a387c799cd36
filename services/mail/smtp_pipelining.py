"""ESMTP PIPELINING (RFC 2920) on an smtplib connection: one write and one wait per email.

smtplib sends each command and waits for its reply: four round trips to the server per
email (MAIL, RCPT, DATA, the message). Each wakes the server and then this process; on a busy
machine the wait for the server's turn on a core is most of it: the replies were a fifth of a
pool process's busy time in the notifications.send profile (bench/README.md, seventh
session). A server that advertises PIPELINING (Postfix, Exim, smtp-sink) takes the envelope's
three commands at once, and (RFC 2920 section 3.1: the message's content may open a group
of commands) the next email's envelope in the same write as this email's content: one round
trip per email when the caller says which email comes next.

The next email's envelope is written only once that email is flattened: after its DATA is
answered with 354 nothing but its content may follow, so it must be ready to go.

What the caller sees is what smtplib's send_message would have raised, for the same replies:
SMTPSenderRefused, SMTPRecipientsRefused, SMTPDataError, and the connection closed on a 421.
"""

from __future__ import annotations

import contextlib
import io
import re
import smtplib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import Message as MimeMessage
from typing import Any, NamedTuple

from models.contracts.common import plain_ascii_mailbox
from services.mail.wire import CRLF, message_bytes

# A line starting with a dot gets a second one (RFC 5321 4.5.2, "transparency").
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


class Envelope(NamedTuple):
    """An email and its envelope: what send writes, or writes ahead as the next one."""

    message: MimeMessage
    sender: str
    recipients: Sequence[str]


@dataclass(frozen=True)
class _Outgoing:
    """An email ready for the wire: its envelope's commands, and its content as written
    after the 354 (dots doubled, the closing dot line included)."""

    envelope: Envelope
    commands: bytes
    content: bytes


def can_pipeline(smtp: smtplib.SMTP) -> bool:
    smtp.ehlo_or_helo_if_needed()
    return bool(smtp.does_esmtp and smtp.has_extn("pipelining"))


class Pipeline:
    """The pipelined conversation on one smtplib connection, with at most one envelope
    written ahead of its email (the next one's, with this one's content)."""

    def __init__(self, smtp: smtplib.SMTP) -> None:
        self.smtp = smtp
        self._ahead: _Outgoing | None = None

    @property
    def ahead(self) -> bool:
        """Whether an envelope was written whose email has not been sent yet: the server
        waits for that email's content, so the connection can only be sent that or closed."""
        return self._ahead is not None

    def send(
        self,
        message: MimeMessage,
        sender: str,
        recipients: Sequence[str],
        meanwhile: Callable[[], object] | None = None,
        then: Envelope | None = None,
    ) -> None:
        """send_message(message, sender, recipients), pipelined.

        `then`, the email the caller sends next on this connection: its envelope goes out
        with this one's content, and the caller's next send must be that email.
        `meanwhile` is called once the message is written and before the server's reply
        to it is read (not at all if the server refused the envelope): work the process can
        do while the server takes the message, instead of waiting for it."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            outgoing = _prepare(self.smtp, Envelope(message, sender, recipients))
            self.smtp.send(outgoing.commands)
        elif ahead.envelope.message is message:
            outgoing = ahead
        else:
            # The server is waiting for another email's content: nothing else can follow.
            self.smtp.close()
            raise smtplib.SMTPServerDisconnected(
                "closed: the connection was waiting for another email's content"
            )
        self._envelope_accepted(outgoing.envelope)

        following = self._prepared(then)
        self.smtp.send(outgoing.content + (following.commands if following else b""))
        self._ahead = following
        if meanwhile is not None:
            meanwhile()
        done = self.smtp.getreply()
        if done[0] != 250:
            if done[0] == 421:
                self._ahead = None
                self.smtp.close()
            elif self._ahead is None:
                # After a refused email smtplib says RSET; with the next envelope written
                # behind it there is nothing to reset (the refusal ended the transaction).
                _reset(self.smtp)
            raise smtplib.SMTPDataError(*done)

    def _envelope_accepted(self, envelope: Envelope) -> None:
        """Read the replies to MAIL, each RCPT and DATA; raise as send_message would."""
        smtp = self.smtp
        mail = smtp.getreply()
        if mail[0] == 421:
            smtp.close()
            raise smtplib.SMTPSenderRefused(*mail, envelope.sender)
        refused: dict[str, tuple[int, bytes]] = {}
        for address in envelope.recipients:
            code, text = smtp.getreply()
            if code not in (250, 251):
                refused[address] = (code, text)
            if code == 421:
                smtp.close()
                raise smtplib.SMTPRecipientsRefused(refused)
        data_reply = smtp.getreply()
        if data_reply[0] == 421:
            smtp.close()
            raise smtplib.SMTPDataError(*data_reply)
        everyone_refused = len(refused) == len(envelope.recipients)
        if data_reply[0] == 354 and (mail[0] != 250 or everyone_refused):
            # A server that should have refused DATA (no sender, no recipient) but did not:
            # end the empty message it is waiting for, and let its reply go.
            smtp.send(b"." + CRLF)
            smtp.getreply()
        if mail[0] != 250:
            _reset(smtp)
            raise smtplib.SMTPSenderRefused(*mail, envelope.sender)
        if everyone_refused:
            _reset(smtp)
            raise smtplib.SMTPRecipientsRefused(refused)
        if data_reply[0] != 354:
            _reset(smtp)
            raise smtplib.SMTPDataError(*data_reply)

    def _prepared(self, then: Envelope | None) -> _Outgoing | None:
        if then is None:
            return None
        try:
            return _prepare(self.smtp, then)
        except Exception:
            # Not written ahead: its own send prepares it again and raises there, where the
            # caller records that email's failure.
            return None


def _prepare(smtp: smtplib.SMTP, envelope: Envelope) -> _Outgoing:
    message, sender, recipients = envelope
    international = not all(address.isascii() for address in (sender, *recipients))
    if international and not smtp.has_extn("smtputf8"):
        raise smtplib.SMTPNotSupportedError(
            "One or more source or delivery addresses require internationalized email "
            "support, but the server does not advertise the required SMTPUTF8 capability"
        )
    data = _flatten(message, international)
    options = [f"SIZE={len(data)}"] if smtp.has_extn("size") else []
    if international:
        options += ["SMTPUTF8", "BODY=8BITMIME"]
    commands = [f"MAIL FROM:{_path(sender)}{''.join(' ' + o for o in options)}"]
    commands += [f"RCPT TO:{_path(address)}" for address in recipients]
    commands.append("DATA")
    return _Outgoing(
        envelope,
        "".join(f"{command}\r\n" for command in commands).encode(
            "utf-8" if international else "ascii"
        ),
        _LEADING_DOT.sub(b"..", data) + b"." + CRLF,
    )


def _path(address: str) -> str:
    """smtplib.quoteaddr(address): "<address>", without its parse where the address is a
    plain mailbox (parseaddr, twice per email, was 5 % of a pool process's time in the
    notifications.send profile, bench/README.md, twelfth session)."""
    return f"<{address}>" if plain_ascii_mailbox(address) else smtplib.quoteaddr(address)


def _flatten(message: MimeMessage, international: bool) -> bytes:
    """The message as send_message writes it: CRLF line ends, ending with one."""
    if not international:
        data = message_bytes(message)
    else:
        with io.BytesIO() as out:
            # As smtplib does; compat32 (compose's policy) has no utf8 and raises TypeError,
            # which delivery takes for an email that cannot be composed, as before.
            policy: Any = message.policy
            BytesGenerator(out, policy=policy.clone(utf8=True)).flatten(message, linesep="\r\n")
            data = out.getvalue()
    return data if data.endswith(CRLF) else data + CRLF


def _reset(smtp: smtplib.SMTP) -> None:
    """RSET after a refused transaction, as smtplib does; a server gone meanwhile is the next
    message's to find."""
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()
