"""services.mail.compose: what the MIME message says, and what it refuses to write."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from typing import Any

import pytest

from models.contracts.common import sendable_address, sendable_form
from models.emails import EmailMessage, EmailStatus
from services.mail.compose import compose, envelope_recipient


def row(**fields: Any) -> EmailMessage:
    values: dict[str, Any] = {
        "id": "m-1", "idempotency_key": "k" * 64, "event_id": "E-1", "client_id": "C1",
        "template": "client_signup", "category": "general", "to_address": "ada@example.com",
        "to_name": "Ada Lovelace", "subject": "Welcome", "body_text": "Hi",
        "body_html": "<p>Hi</p>", "status": EmailStatus.QUEUED, "attempts": 0,
        "created_at": datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
    }  # fmt: skip
    return EmailMessage(**{**values, **fields})


def parsed(message: EmailMessage, mail_from: str = "Billing <billing@host.example>") -> Any:
    return email.message_from_bytes(
        compose(message, mail_from).as_bytes(), policy=email.policy.default
    )


def test_non_ascii_names_subjects_and_bodies_read_back_as_written() -> None:
    message = parsed(
        row(to_name="Zoë Ångström", subject="Facture £1 200,00 — échéance " + "x" * 90,
            body_text="Merci, Zoë\n" + "ligne " * 40, body_html="<p>Merci, Zoë</p>"),
        "Société Générale <billing@host.example>",
    )  # fmt: skip
    assert message["To"] == "Zoë Ångström <ada@example.com>"
    assert message["From"] == "Société Générale <billing@host.example>"
    assert message["Subject"] == "Facture £1 200,00 — échéance " + "x" * 90
    assert message.get_body(("plain",)).get_content() == "Merci, Zoë\n" + "ligne " * 40
    assert message.get_body(("html",)).get_content() == "<p>Merci, Zoë</p>"


@pytest.mark.parametrize("length", range(1, 61))
@pytest.mark.parametrize("characters", ["é", "€", "😀", "a€é😀", "£ "])
def test_a_non_ascii_subject_of_any_length_reads_back_on_lines_of_76_at_most(
    characters: str, length: int
) -> None:
    # Every length of one-, two-, three- and four-byte characters, so that each place a
    # word can end falls inside a character somewhere.
    subject = (characters * length)[:length]
    raw = compose(row(subject=subject), "billing@host.example").as_bytes()
    lines = raw.split(b"\n\n", 1)[0].decode("ascii").split("\n")
    first = next(i for i, line in enumerate(lines) if line.startswith("Subject: "))
    after = next(i for i in range(first + 1, len(lines)) if not lines[i].startswith(" "))
    assert max(len(line) for line in lines[first:after]) <= 76
    assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"] == subject


@pytest.mark.parametrize(
    "field", ["subject", "to_name", "template", "event_id", "list_unsubscribe"]
)
@pytest.mark.parametrize("breaker", ["\r\nBcc: x@example.org", "\nBcc: x@example.org", "\u2028"])
def test_a_value_with_a_line_break_is_refused_not_written_as_a_header(
    field: str, breaker: str
) -> None:
    with pytest.raises(ValueError, match="line break or control character"):
        compose(row(**{field: "Hello" + breaker}), "billing@host.example")


def test_a_configured_sender_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="From header"):
        compose(row(), "billing@host.example\r\nBcc: x@example.org")


def test_a_row_with_an_unsubscribe_url_gets_both_rfc_8058_headers() -> None:
    url = "https://billing.example.com/unsubscribe?token=abc.def"
    message = parsed(row(list_unsubscribe=url))
    assert message["List-Unsubscribe"] == f"<{url}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain = parsed(row())
    assert plain["List-Unsubscribe"] is None
    assert plain["List-Unsubscribe-Post"] is None


@pytest.mark.parametrize(
    "address",
    [
        "ada@example.com",
        "Ada.Lovelace+billing@mail.example.co.uk",
        "o'brien@example.com",
        "x!#$%&'*+/=?^_`{|}~-y@a-b.example",
        "billing@xn--bcher-kva.example",
        "a@" + "b" * 63 + ".example",
        "a" * 65 + "@example.com",  # email-validator takes a long local part; so does this
        "a@" + ".".join(["b" * 63] * 3) + "." + "c" * 60,  # 254 characters
    ],
)
def test_an_address_as_the_contracts_store_it_is_sent_as_it_is(address: str) -> None:
    assert sendable_address(address) == address  # the stored form
    assert sendable_form(address) == address
    assert envelope_recipient(row(to_address=address)) == address


def test_any_other_address_goes_through_the_contracts_parse() -> None:
    # A row logged before addresses were stored in their ASCII form.
    assert sendable_form("Ada@Bücher.example") == "Ada@xn--bcher-kva.example"
    for unsendable in (
        "zoë@example.com",  # a non-ASCII mailbox: no SMTPUTF8
        "ada@example.com\r\nBcc: x@example.org",
        "ada lovelace@example.com",
        '"ada"@example.com>',
        "ada@example",
        "ada..lovelace@example.com",
        "ada@-example.com",
        "ada@" + "b" * 64 + ".example",
        "a@" + ".".join(["b" * 63] * 3) + "." + "c" * 61,  # 255 characters
    ):
        with pytest.raises(ValueError, match="cannot be sent to"):
            sendable_form(unsendable)
        with pytest.raises(ValueError, match="cannot be sent to"):
            compose(row(to_address=unsendable), "billing@host.example")
