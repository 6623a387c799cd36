"""services.mail.wire writes what BytesGenerator writes, byte for byte, for every shape
compose builds, and leaves every other message to BytesGenerator."""

from __future__ import annotations

import email
import io
from email.generator import BytesGenerator
from email.message import EmailMessage as ModernMessage
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import pytest
from test_mime import row

from services.mail.compose import POLICY, Attachment, compose
from services.mail.wire import message_bytes


def generated(message: Message) -> bytes:
    with io.BytesIO() as out:
        BytesGenerator(out).flatten(message, linesep="\r\n")
        return out.getvalue()


PDF = Attachment("INV-1.pdf", "application/pdf", b"%PDF-1.4\n" + bytes(range(256)) * 40)

SHAPES: dict[str, dict[str, Any]] = {
    "plain": {},
    "non-ASCII name, subject and bodies": {
        "to_name": "Zoë Ångström",
        "subject": "Facture £1 200,00 — échéance " + "x" * 90,
        "body_text": "Merci, Zoë\n" + "ligne " * 40,
        "body_html": "<p>Merci, Zoë</p>",
    },
    "a long ASCII subject, folded": {"subject": "Maintenance window " * 12},
    "a one-click unsubscribe link": {
        "list_unsubscribe": "https://billing.example.com/unsubscribe?token=" + "a" * 120
    },
    "bodies with From lines, dots and every line end": {
        "body_text": "From the team\n.\n..two\r\nFrom here\rFrom there\n\nFrom",
        "body_html": "<p>\nFrom us</p>\r\n.",
    },
    "empty bodies": {"body_text": "", "body_html": ""},
    "a long line in a body": {"body_text": "word" * 200},
}


@pytest.mark.parametrize("fields", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(
    "sender",
    [
        ("Billing <billing@host.example>", None),
        ("Société Générale <billing@host.example>", "Help Desk <help@host.example>"),
    ],
)
@pytest.mark.parametrize("attachments", [(), (PDF,), (PDF, PDF)], ids=["", "pdf", "two pdfs"])
def test_every_shape_compose_builds_comes_out_as_bytes_generator_writes_it(
    fields: dict[str, Any], sender: tuple[str, str | None], attachments: tuple[Attachment, ...]
) -> None:
    message = compose(row(**fields), *sender, attachments=attachments)
    assert message_bytes(message) == generated(message)


def modern() -> Message:
    message = ModernMessage()
    message["Subject"] = "Grüße"
    message.set_content("Grüße aus Köln\n")
    return message


def preamble() -> Message:
    message = MIMEMultipart("alternative", boundary="b", policy=POLICY)
    message.attach(MIMEText("hi", "plain", policy=POLICY))
    message.preamble = "This is a MIME message."
    return message


def inner_message() -> Message:
    outer = MIMEMultipart("mixed", boundary="outer", policy=POLICY)
    inner = Message(policy=POLICY)
    inner["Content-Type"] = "message/rfc822"
    inner.set_payload([MIMEText("forwarded", "plain", policy=POLICY)])
    outer.attach(inner)
    return outer


def eight_bit_body() -> Message:
    part = MIMEText("", "plain", policy=POLICY)
    part.set_payload("Grüße")  # not encoded: 8-bit text as it is
    return part


def no_boundary() -> Message:
    message = MIMEMultipart("alternative", policy=POLICY)
    message.attach(MIMEText("hi", "plain", policy=POLICY))
    return message


def no_parts() -> Message:
    return MIMEMultipart("alternative", boundary="b", policy=POLICY)


@pytest.mark.parametrize("build", [modern, preamble, inner_message, eight_bit_body, no_parts])
def test_any_other_message_is_written_by_bytes_generator(build: Any) -> None:
    # What it wrote, or what it raised (8-bit text: a UnicodeEncodeError from both).
    def outcome(write: Any) -> bytes | type[Exception]:
        try:
            return write(build())  # type: ignore[no-any-return]
        except Exception as exc:
            return type(exc)

    assert outcome(message_bytes) == outcome(generated)


def test_a_multipart_without_a_boundary_gets_one_from_bytes_generator() -> None:
    message = no_boundary()
    read = email.message_from_bytes(message_bytes(message))
    assert message.get_boundary() is not None  # chosen by BytesGenerator as it wrote
    assert read.get_boundary() == message.get_boundary()
    parts: list[Message] = read.get_payload()  # type: ignore[assignment]
    assert [part.get_payload() for part in parts] == ["hi"]
