"""Builds the multipart/alternative MIME message for one row of the message log (inside a
multipart/mixed one with the files when it has attachments: services.mail.attachments).

Built with the email package's compat32 classes (MIMEMultipart, MIMEText), not the newer
EmailMessage API: that one parses every header it is given through its header registry and
refolds it when written, which was a quarter of a worker's CPU per event (bench/run.py's
profile). The values here are already clean (the contracts refuse control characters, the
addresses are validated), so only the encoding of non-ASCII text is needed, and that is done
explicitly here (RFC 2047 words for headers, quoted-printable UTF-8 for the bodies).
"""

from __future__ import annotations

import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email import base64mime
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import Compat32
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache

from models.contracts.common import CONTROL_CHARACTERS, sendable_form
from models.emails import EmailMessage

# Headers written on one line whatever their length (up to RFC 5322's 998 characters), see
# _Policy._unfoldable: a URL, where folding would put whitespace that not every receiver takes
# out again; and the values this module writes itself (a boundary, a file name, a hash), which
# run a little past 78 characters and would otherwise go through email.header's folding, a
# third of the cost of flattening a message (bench/README.md).
_UNFOLDED = frozenset(
    {"List-Unsubscribe", "Content-Type", "Content-Disposition", "X-Clientflow-Idempotency-Key"}
)


# RFC 2047 section 2: a header line that holds encoded words is at most 76 characters long.
_ENCODED_LINE = 76
_WORD_CHROME = len("=?utf-8?b??=")


class EncodedWords(str):
    """A header value already written as RFC 2047 encoded words, separated by single spaces,
    each sized to sit on a line of its own: _Policy writes one per line. As a str it is the
    header's unfolded value, which any RFC 2047 reader decodes."""


class _Policy(Compat32):
    """compat32, writing a short plain-ASCII header as it is.

    compat32 writes every header through email.header.Header's folding, which is most of the
    cost of flattening a message (a dozen headers in three parts): a value that is ASCII,
    has no line break and fits on one line comes out of that unchanged anyway.
    """

    def _fits(self, name: str, value: object) -> bool:
        return (
            isinstance(value, str)
            and value.isascii()
            and "\n" not in value
            and "\r" not in value
            and len(name) + 2 + len(value) <= (self.max_line_length or 78)
        )

    def _unfoldable(self, name: str, value: object) -> bool:
        """One of _UNFOLDED, in ASCII, without a line break."""
        return (
            name in _UNFOLDED
            and isinstance(value, str)
            and value.isascii()
            and "\n" not in value
            and "\r" not in value
            and len(name) + 2 + len(value) <= 998
        )

    def _written_here(self, name: str, value: object) -> str | None:
        """The header line as written here, in ASCII, without compat32's folding; None for
        a value compat32 must fold. Asked once per header by fold and fold_binary alike."""
        if isinstance(value, EncodedWords):
            return f"{name}: " + f"{self.linesep} ".join(value.split(" ")) + self.linesep
        if self._fits(name, value) or self._unfoldable(name, value):
            return f"{name}: {value}{self.linesep}"
        return None

    def fold(self, name: str, value: str) -> str:
        written = self._written_here(name, value)
        return super().fold(name, value) if written is None else written

    def fold_binary(self, name: str, value: str) -> bytes:
        written = self._written_here(name, value)
        return super().fold_binary(name, value) if written is None else written.encode("ascii")


POLICY = _Policy()


@dataclass(frozen=True)
class Attachment:
    filename: str  # ASCII, without quotes (services.mail.attachments.pdf_filename)
    content_type: str  # "application/pdf"
    data: bytes


def _checked(name: str, value: str) -> str:
    """compat32 writes a header value as it is given, line breaks included, so a value with
    one would add headers of its own (rows logged before the contracts refused them may
    hold one): refused here, and the message fails as one that cannot be composed."""
    if CONTROL_CHARACTERS.search(value):
        raise ValueError(f"the {name} header would contain a line break or control character")
    return value


def _header_text(name: str, value: str) -> str:
    """ASCII as it is; anything else as RFC 2047 encoded words."""
    _checked(name, value)
    return value if value.isascii() else encoded_words(name, value)


def encoded_words(name: str, value: str) -> EncodedWords:
    """`value` as RFC 2047 "B" encoded words of UTF-8, each on a line of at most 76
    characters, the first after "Name: ", and none splitting a character.

    Written here, not by email.header.Header: that one measures the encoded length again
    after each character it adds (the quoted-printable length byte by byte, to choose the
    shorter encoding), a quarter of a millisecond for an invoice subject with a pound sign,
    as long as flattening the rest of the message (bench/README.md, ninth session).
    """
    data = value.encode()
    words: list[str] = []
    room = _ENCODED_LINE - len(name) - len(": ")
    start = 0
    while start < len(data):
        # Whole groups of three bytes: base64 writes four characters for each.
        end = min(start + max((room - _WORD_CHROME) // 4 * 3, 6), len(data))
        while end < len(data) and 0x80 <= data[end] < 0xC0:  # a UTF-8 continuation byte
            end -= 1
        words.append(base64mime.header_encode(data[start:end], "utf-8"))
        start = end
        room = _ENCODED_LINE - len(" ")
    return EncodedWords(" ".join(words))


# Cached: the sender and Reply-To are the settings', the same for every message, and parsing an
# address is a tenth of composing one.
@lru_cache(maxsize=64)
def _address_header(header: str, value: str) -> str:
    """An address ("Name <addr>" or "addr"), its name encoded if not ASCII."""
    name, address = parseaddr(_checked(header, value))
    return formataddr((name, address), charset="utf-8") if name else value


def message_id(message: EmailMessage, mail_from: str) -> str:
    """The same on every attempt (from the row's id): a receiving system that deduplicates on
    Message-ID sees a retried delivery as the message it already has."""
    return f"<{message.id}@{_id_domain(mail_from)}>"


@lru_cache(maxsize=64)
def envelope_sender(mail_from: str) -> str:
    """The address of the From header ("Billing <billing@host>" -> "billing@host"): the SMTP
    envelope's sender, to which bounces go."""
    return parseaddr(mail_from)[1]


def envelope_recipient(message: EmailMessage) -> str:
    """The To header's address, in the ASCII form the SMTP encoder takes (see compose)."""
    return sendable_form(message.to_address)


@lru_cache(maxsize=64)
def _id_domain(mail_from: str) -> str:
    domain = envelope_sender(mail_from).rpartition("@")[2]
    return domain if domain.isascii() and domain else "clientflow.invalid"


def compose(
    message: EmailMessage,
    mail_from: str,
    reply_to: str | None = None,
    attachments: Sequence[Attachment] = (),
) -> Message:
    # A boundary of our own: the email package's would be checked against the whole text
    # with a regular expression compiled for each message; 128 random bits cannot occur in it.
    mime = MIMEMultipart("alternative", boundary=f"=_{uuid.uuid4().hex}", policy=POLICY)
    mime.attach(_text_part(message.body_text, "plain"))
    mime.attach(_text_part(message.body_html, "html"))
    if attachments:
        mime = _with_attachments(mime, attachments)
    mime["From"] = _address_header("From", mail_from)
    # Rows logged before addresses were stored in their ASCII form may hold a Unicode domain,
    # which the SMTP encoder refuses; the ASCII form reaches the same mailbox.
    mime["To"] = formataddr(
        (_checked("To", message.to_name), sendable_form(message.to_address)),
        charset="utf-8",
    )
    if reply_to:
        mime["Reply-To"] = _address_header("Reply-To", reply_to)
    mime["Subject"] = _header_text("Subject", message.subject)
    mime["Date"] = format_datetime(message.created_at)
    mime["Message-ID"] = message_id(message, mail_from)
    # RFC 3834: sent by a program, so vacation responders and the like do not answer it.
    mime["Auto-Submitted"] = "auto-generated"
    # Lets a receiving system (and our tests) see that two deliveries are the same email.
    mime["X-Clientflow-Idempotency-Key"] = message.idempotency_key
    mime["X-Clientflow-Event-Id"] = _header_text("X-Clientflow-Event-Id", message.event_id)
    mime["X-Clientflow-Template"] = _checked("X-Clientflow-Template", message.template)
    if message.list_unsubscribe:
        # RFC 8058 one-click: a mail client offers "unsubscribe" and POSTs
        # List-Unsubscribe=One-Click to the URL, whose handler publishes recipients.unsubscribe.
        url = _checked("List-Unsubscribe", message.list_unsubscribe)
        mime["List-Unsubscribe"] = f"<{url}>"
        mime["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return mime


def _with_attachments(body: MIMEMultipart, attachments: Sequence[Attachment]) -> MIMEMultipart:
    """multipart/mixed: the text and HTML alternative first, then each file (RFC 2046)."""
    mixed = MIMEMultipart("mixed", boundary=f"=_{uuid.uuid4().hex}", policy=POLICY)
    del body["MIME-Version"]  # the top-level message's header, not a part's
    mixed.attach(body)
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        if maintype != "application":
            raise ValueError(f"unsupported attachment type {attachment.content_type!r}")
        part = MIMEApplication(attachment.data, subtype, policy=POLICY)  # base64
        part.add_header(
            "Content-Disposition", "attachment", filename=_checked("filename", attachment.filename)
        )
        mixed.attach(part)
    return mixed


def _text_part(text: str, subtype: str) -> MIMENonMultipart:
    """UTF-8 as quoted-printable: readable in the raw message, and lines stay under 78.

    Encoded by binascii (C), not by the email package's Charset (Python, character by
    character): that was half the cost of composing a message.
    """
    part = MIMENonMultipart("text", subtype, policy=POLICY, charset="utf-8")
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(binascii.b2a_qp(text.encode(), istext=True).decode("ascii"))
    return part
