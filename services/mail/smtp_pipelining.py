"""ESMTP PIPELINING (RFC 2920) on an smtplib connection: MAIL, RCPT and DATA in one write.

smtplib sends each command and waits for its reply: four round trips to the server per
email (MAIL, RCPT, DATA, the message). Each wakes the server and then this process; on a busy
machine the wait for the server's turn on a core is most of it: the replies were a fifth of a
pool process's busy time in the notifications.send profile (bench/README.md, seventh
session). A server that advertises PIPELINING (Postfix, Exim, smtp-sink) takes the three
commands at once: two round trips per email.

What the caller sees is what smtplib's send_message would have raised, for the same replies:
SMTPSenderRefused, SMTPRecipientsRefused, SMTPDataError, and the connection closed on a 421.
"""

from __future__ import annotations

import contextlib
import io
import re
import smtplib
from collections.abc import Callable, Sequence
from email.generator import BytesGenerator
from email.message import Message as MimeMessage
from typing import Any

CRLF = b"\r\n"
# A line starting with a dot gets a second one (RFC 5321 4.5.2, "transparency").
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def can_pipeline(smtp: smtplib.SMTP) -> bool:
    smtp.ehlo_or_helo_if_needed()
    return bool(smtp.does_esmtp and smtp.has_extn("pipelining"))


def send_pipelined(
    smtp: smtplib.SMTP,
    message: MimeMessage,
    sender: str,
    recipients: Sequence[str],
    meanwhile: Callable[[], object] | None = None,
) -> None:
    """send_message(message, sender, recipients), with the envelope's commands pipelined.

    `meanwhile` is called once the message is written and before the server's reply to it
    is read (not at all if the server refused the envelope): work the process can do while
    the server takes the message, instead of waiting for it."""
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
        smtp.command_encoding = "utf-8"
    commands = [f"MAIL FROM:{smtplib.quoteaddr(sender)}{''.join(' ' + o for o in options)}"]
    commands += [f"RCPT TO:{smtplib.quoteaddr(address)}" for address in recipients]
    commands.append("DATA")
    smtp.send("".join(f"{command}\r\n" for command in commands))

    mail = smtp.getreply()
    if mail[0] == 421:
        smtp.close()
        raise smtplib.SMTPSenderRefused(*mail, sender)
    refused: dict[str, tuple[int, bytes]] = {}
    for address in recipients:
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
    if data_reply[0] == 354 and (mail[0] != 250 or len(refused) == len(recipients)):
        # A server that should have refused DATA (no sender, no recipient) but did not:
        # end the empty message it is waiting for, and let its reply go.
        smtp.send(b"." + CRLF)
        smtp.getreply()
    if mail[0] != 250:
        _reset(smtp)
        raise smtplib.SMTPSenderRefused(*mail, sender)
    if len(refused) == len(recipients):
        _reset(smtp)
        raise smtplib.SMTPRecipientsRefused(refused)
    if data_reply[0] != 354:
        _reset(smtp)
        raise smtplib.SMTPDataError(*data_reply)

    smtp.send(_LEADING_DOT.sub(b"..", data) + b"." + CRLF)
    if meanwhile is not None:
        meanwhile()
    done = smtp.getreply()
    if done[0] != 250:
        if done[0] == 421:
            smtp.close()
        else:
            _reset(smtp)
        raise smtplib.SMTPDataError(*done)


def _flatten(message: MimeMessage, international: bool) -> bytes:
    """The message as send_message writes it: CRLF line ends, ending with one."""
    with io.BytesIO() as out:
        if international:
            # As smtplib does; compat32 (compose's policy) has no utf8 and raises TypeError,
            # which delivery takes for an email that cannot be composed, as before.
            policy: Any = message.policy
            BytesGenerator(out, policy=policy.clone(utf8=True)).flatten(message, linesep="\r\n")
        else:
            BytesGenerator(out).flatten(message, linesep="\r\n")
        data = out.getvalue()
    return data if data.endswith(CRLF) else data + CRLF


def _reset(smtp: smtplib.SMTP) -> None:
    """RSET after a refused transaction, as smtplib does; a server gone meanwhile is the next
    message's to find."""
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()
