"""`clientflow emails list | show | resend | retry`, in process, on PostgreSQL and SQLite.

The subprocess runs are in tests/test_cli.py, delivery by a real worker in
tests/test_resend_worker.py.
"""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import payloads
import pytest
from cli_kit import MAIL_FROM, REPLY_TO, InProcessCli, cli_fixture
from conftest import Apply, Publisher
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.base import utcnow
from models.emails import EmailMessage, EmailStatus
from models.outbox import OutboxMessage
from services.db import SessionFactory
from services.mail import resend as resend_module
from services.mail.retry import REQUEUED_NOTE
from services.retention import Retention, prune

cli = cli_fixture()

NOW = utcnow()


def emails(db: Session, **where: Any) -> list[EmailMessage]:
    db.expire_all()
    query = select(EmailMessage).filter_by(**where).order_by(EmailMessage.created_at)
    return list(db.scalars(query))


def one_email(db: Session, **where: Any) -> EmailMessage:
    [message] = emails(db, **where)
    return message


def settle(db: Session, message_id: str, status: str, ago: timedelta, **values: Any) -> None:
    """Give a message a state and a time (created and last updated `ago`)."""
    when = NOW - ago
    db.execute(
        update(EmailMessage)
        .where(EmailMessage.id == message_id)
        .values(status=status, created_at=when, updated_at=when, **values)
    )
    db.commit()


def welcome(apply: Apply, db: Session, client_id: str = "C1", **fields: Any) -> EmailMessage:
    apply("clients.add", payloads.client(client_id, **fields))
    return one_email(db, client_id=client_id)


def prune_bodies(session_factory: SessionFactory, older_than: timedelta) -> None:
    prune(session_factory, Retention(None, older_than, None, None))


# --- list -------------------------------------------------------------------------------------


@pytest.fixture
def log(apply: Apply, db: Session) -> dict[str, str]:
    """Three emails of two clients, each with its own age and state; their ids by name."""
    first = welcome(apply, db, "C1")
    second = welcome(apply, db, "C2")
    apply("notifications.send", payloads.notification("C1"))
    notice = one_email(db, template="general_announcement")
    settle(db, first.id, EmailStatus.SENT, timedelta(hours=3), sent_at=NOW)
    settle(db, second.id, EmailStatus.FAILED, timedelta(hours=2), last_error="550 no such user")
    settle(db, notice.id, EmailStatus.QUEUED, timedelta(hours=1))
    return {"c1_welcome": first.id, "c2_welcome": second.id, "c1_notice": notice.id}


def test_list_is_newest_first_with_every_column(cli: InProcessCli, log: dict[str, str]) -> None:
    rows = cli.json("emails", "list")
    table = cli("emails", "list").stdout

    assert [row["id"] for row in rows] == [log["c1_notice"], log["c2_welcome"], log["c1_welcome"]]
    failed = rows[1]
    assert failed["to_address"] == "c2@example.com"
    assert failed["subject"] == "Welcome to Test Hosting"
    assert (failed["template"], failed["status"]) == ("client_signup", "failed")
    assert failed["last_error"] == "550 no such user"
    assert failed["event_id"].startswith("evt-")
    assert failed["resend_of"] is None
    assert "Email message log (3 shown)" in table
    (line,) = [line for line in table.splitlines() if log["c2_welcome"] in line]
    for shown in ("c2@example.com", "Welcome to Test Hosting", "client_signup",
                  failed["event_id"], "failed", "550 no such user"):  # fmt: skip
        assert shown in line


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("--client", "C1"), ["c1_notice", "c1_welcome"]),
        (("--status", "failed"), ["c2_welcome"]),
        (("--template", "general_announcement"), ["c1_notice"]),
        (("--client", "C1", "--template", "client_signup"), ["c1_welcome"]),
        (("--client", "C2", "--status", "sent"), []),
        (("--limit", "2"), ["c1_notice", "c2_welcome"]),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else None,
)
def test_list_filters(
    cli: InProcessCli, log: dict[str, str], options: tuple[str, ...], expected: list[str]
) -> None:
    rows = cli.json("emails", "list", *options)

    assert [row["id"] for row in rows] == [log[name] for name in expected]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("--status", "bogus"), "'--status': unknown status 'bogus'; one of: queued, sending, "
                                "sent, failed"),
        (("--status", "Sent"), "unknown status 'Sent'"),
        (("--template", "invoice"), "'--template': unknown template 'invoice'; one of: "
                                    "client_signup, domain_renewal, general_announcement, "
                                    "invoice_created,"),
        (("--client", "C9"), "'--client': no client 'C9'"),
        (("--limit", "0"), "Invalid value for '--limit'"),
        (("--limit", "many"), "Invalid value for '--limit'"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else None,
)  # fmt: skip
def test_a_bad_filter_value_is_a_usage_error(
    cli: InProcessCli, log: dict[str, str], options: tuple[str, ...], expected: str
) -> None:
    line = cli.error("emails", "list", *options, code=2)

    assert expected in line
    assert line.endswith("(see `clientflow emails list --help`)")


# --- show -------------------------------------------------------------------------------------


def test_show_prints_the_headers_as_sent_and_the_text_part(
    cli: InProcessCli, apply: Apply, db: Session
) -> None:
    # Non-ASCII and markup in the name: decoded from RFC 2047, shown as the characters they are.
    message = welcome(apply, db, firstname="Zoë", lastname="[red]Lovelace[/red]")

    shown = cli.json("emails", "show", message.id)
    card = cli("emails", "show", message.id).stdout

    assert shown["headers"] == {
        "From": MAIL_FROM,
        "To": f"Zoë [red]Lovelace[/red] <{message.to_address}>",
        "Reply-To": REPLY_TO,
        "Subject": "Welcome to Test Hosting",
        "Date": format_datetime(message.created_at),
        "Message-ID": f"<{message.id}@test-hosting.example>",
    }
    assert shown["idempotency_key"] == message.idempotency_key
    assert (shown["event_id"], shown["template"]) == (message.event_id, "client_signup")
    assert (shown["status"], shown["attempts"], shown["last_error"]) == ("queued", 0, None)
    assert shown["body_text"] == message.body_text
    assert "Dear Zoë [red]Lovelace[/red]," in shown["body_text"]
    assert (shown["body_pruned"], shown["resends"], shown["compose_error"]) == (False, [], None)
    for line in (f"To:          Zoë [red]Lovelace[/red] <{message.to_address}>",
                 f"Reply-To:    {REPLY_TO}",
                 f"idempotency key  {message.idempotency_key}",
                 "Dear Zoë [red]Lovelace[/red],"):  # fmt: skip
        assert line in card


def test_show_says_when_retention_pruned_the_body(
    cli: InProcessCli, apply: Apply, db: Session, session_factory: SessionFactory
) -> None:
    message = welcome(apply, db)
    settle(db, message.id, EmailStatus.SENT, timedelta(days=100))
    prune_bodies(session_factory, timedelta(days=90))

    shown = cli.json("emails", "show", message.id)
    card = cli("emails", "show", message.id).stdout

    assert (shown["body_pruned"], shown["body_text"]) == (True, None)
    assert shown["headers"]["Subject"] == "Welcome to Test Hosting"  # the headers stay
    assert "body pruned by retention (CLIENTFLOW_EMAIL_BODIES_KEEP_DAYS)" in card
    assert "cannot be resent" in card
    assert "Dear" not in card


def test_show_of_an_unknown_id_exits_1(cli: InProcessCli) -> None:
    line = cli.error("emails", "show", "no-such-id", code=1)

    assert line == "clientflow: no email 'no-such-id' in the message log"


# --- resend -----------------------------------------------------------------------------------


def test_resend_queues_a_copy_as_a_new_message_and_publishes_its_delivery(
    cli: InProcessCli, apply: Apply, db: Session, publisher: Publisher
) -> None:
    original = welcome(apply, db)
    settle(db, original.id, EmailStatus.SENT, timedelta(hours=1), attempts=1)

    output = cli("emails", "resend", original.id).stdout

    copy = one_email(db, resend_of=original.id)
    assert output.split() == (
        f"resent email {original.id} as {copy.id}: queued, delivery published".split()
    )
    same = ("to_address", "to_name", "subject", "body_text", "body_html", "template",
            "category", "event_id", "client_id")  # fmt: skip
    assert {f: getattr(copy, f) for f in same} == {f: getattr(original, f) for f in same}
    assert copy.id != original.id
    assert copy.idempotency_key not in (original.idempotency_key, "")
    assert (copy.status, copy.attempts, copy.last_error) == ("queued", 0, None)
    assert publisher.deliveries[-1] == [copy.id]
    db.expire_all()
    assert db.scalar(select(OutboxMessage.published_at).order_by(OutboxMessage.id.desc()))
    assert one_email(db, id=original.id).status == "sent"  # the original is left as it was
    listed = {row["id"]: row for row in cli.json("emails", "list")}
    assert listed[copy.id]["resend_of"] == original.id
    assert cli.json("emails", "show", original.id)["resends"] == [copy.id]
    assert cli.json("emails", "show", copy.id)["headers"]["Message-ID"] == (
        f"<{copy.id}@test-hosting.example>"
    )


def test_each_resend_without_a_key_is_another_copy_of_the_first(
    cli: InProcessCli, apply: Apply, db: Session, publisher: Publisher
) -> None:
    original = welcome(apply, db)
    settle(db, original.id, EmailStatus.SENT, timedelta(hours=1))

    cli("emails", "resend", original.id)
    [first] = emails(db, resend_of=original.id)
    settle(db, first.id, EmailStatus.SENT, timedelta(minutes=30))
    cli("emails", "resend", first.id)  # a resend of the resend

    copies = emails(db, resend_of=original.id)
    assert len(copies) == 2
    assert len({c.idempotency_key for c in copies}) == 2
    assert publisher.message_ids[-2:] == [c.id for c in copies]
    assert cli.json("emails", "show", original.id)["resends"] == [c.id for c in copies]
    assert cli.json("emails", "show", first.id)["resends"] == []


def test_resend_with_the_same_key_twice_sends_once(
    cli: InProcessCli, apply: Apply, db: Session, publisher: Publisher
) -> None:
    original = welcome(apply, db)
    settle(db, original.id, EmailStatus.SENT, timedelta(hours=1))
    deliveries = len(publisher.deliveries)

    cli("emails", "resend", original.id, "--key", "ticket-4711")
    again = cli("emails", "resend", original.id, "--key", "ticket-4711").stdout
    other = cli("emails", "resend", original.id, "--key", "ticket-4712")

    copies = emails(db, resend_of=original.id)
    assert len(copies) == 2, "one copy per key"
    assert "was already resent with this key as" in again
    assert copies[0].id in again
    assert "nothing more queued" in again
    assert other.exit_code == 0
    assert len(publisher.deliveries) == deliveries + 2


def test_an_invoice_email_is_resent_with_its_stored_content(
    cli: InProcessCli, apply: Apply, db: Session, publisher: Publisher
) -> None:
    """Its template needs the invoice, which the log does not keep: the stored subject and
    bodies are sent, so the copy says what the first said."""
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("invoices.upsert", payloads.invoice("I1"))
    apply("invoices.record_payment", payloads.payment("I1", "1215.59"))
    original = one_email(db, template="invoice_payment_confirmation")
    settle(db, original.id, EmailStatus.SENT, timedelta(hours=1))

    cli("emails", "resend", original.id)

    copy = one_email(db, resend_of=original.id)
    assert "INV-I1" in copy.subject
    assert "payment of £1,215.59 on March 10, 2026" in copy.body_text
    assert (copy.subject, copy.body_text, copy.body_html) == (
        original.subject, original.body_text, original.body_html
    )  # fmt: skip
    assert publisher.deliveries[-1] == [copy.id]


def test_two_resends_racing_with_one_key_make_one_copy(
    apply: Apply,
    db: Session,
    session_factory: SessionFactory,
    publisher: Publisher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second looks before the first commits, finds no copy, and meets the first's at the
    unique key: it returns that copy and queues nothing."""
    original = welcome(apply, db)
    settle(db, original.id, EmailStatus.SENT, timedelta(hours=1))
    first = resend_module.resend(session_factory, publisher, original.id, key="k")
    looked: list[str] = []
    real_look = resend_module._copy_with

    def too_early(session: Session, key: str) -> EmailMessage | None:
        looked.append(key)
        return None if len(looked) == 1 else real_look(session, key)

    monkeypatch.setattr(resend_module, "_copy_with", too_early)
    second = resend_module.resend(session_factory, publisher, original.id, key="k")

    assert len(looked) == 2, "looked again after the conflict"
    assert (first.new, second.new, second.published) == (True, False, False)
    assert second.copy.id == first.copy.id
    assert [m.id for m in emails(db, resend_of=original.id)] == [first.copy.id]
    assert publisher.deliveries[-1] == [first.copy.id]
    assert len(publisher.deliveries) == 2  # the welcome's and the first resend's


@pytest.mark.parametrize("status", ["queued", "sending"])
def test_a_message_still_on_its_way_is_not_resent(
    cli: InProcessCli, apply: Apply, db: Session, publisher: Publisher, status: str
) -> None:
    original = welcome(apply, db)
    settle(db, original.id, status, timedelta(minutes=1))
    sent_before = len(publisher.sent)

    line = cli.error("emails", "resend", original.id, code=1)

    assert f"email {original.id} is still {status} (not sent yet)" in line
    assert emails(db, resend_of=original.id) == []
    assert len(publisher.sent) == sent_before


def test_a_pruned_body_cannot_be_resent(
    cli: InProcessCli,
    apply: Apply,
    db: Session,
    session_factory: SessionFactory,
    publisher: Publisher,
) -> None:
    original = welcome(apply, db)
    settle(db, original.id, EmailStatus.SENT, timedelta(days=100))
    prune_bodies(session_factory, timedelta(days=90))
    sent_before = len(publisher.sent)

    line = cli.error("emails", "resend", original.id, code=1)

    assert f"email {original.id} cannot be resent: retention pruned its body" in line
    assert emails(db, resend_of=original.id) == []
    assert len(publisher.sent) == sent_before


def test_resend_of_an_unknown_id_exits_1(cli: InProcessCli) -> None:
    line = cli.error("emails", "resend", "no-such-id", code=1)

    assert line == "clientflow: no email 'no-such-id' in the message log"


def test_an_operator_may_resend_to_a_closed_client(
    cli: InProcessCli, apply: Apply, db: Session, publisher: Publisher
) -> None:
    original = welcome(apply, db)
    settle(db, original.id, EmailStatus.SENT, timedelta(hours=1))
    apply("clients.close", payloads.event("C1"))

    output = cli("emails", "resend", original.id).stdout

    copy = one_email(db, resend_of=original.id)
    assert publisher.deliveries[-1] == [copy.id]
    assert "note: client C1 is Closed; an operator may still resend its mail" in output


# --- retry ------------------------------------------------------------------------------------


def test_retry_puts_failed_emails_back_with_their_attempts_reset(
    cli: InProcessCli,
    apply: Apply,
    db: Session,
    session_factory: SessionFactory,
    publisher: Publisher,
) -> None:
    recent, old, sent, pruned = (welcome(apply, db, f"C{n}") for n in range(1, 5))
    settle(db, recent.id, "failed", timedelta(hours=1), attempts=9, last_error="gave up: 421")
    settle(db, old.id, "failed", timedelta(days=3), attempts=9, last_error="550 no such user")
    settle(db, sent.id, "sent", timedelta(hours=1), attempts=1)
    settle(db, pruned.id, "failed", timedelta(days=100), attempts=9, last_error="550 gone")
    prune_bodies(session_factory, timedelta(days=90))
    since = (NOW - timedelta(days=1)).date().isoformat()

    first = cli("emails", "retry", "--failed", "--since", since).stdout
    after_first = {m.id: m for m in emails(db)}
    second = cli("emails", "retry", "--failed").stdout

    assert "requeued 1 failed email(s); delivery published" in first
    assert (after_first[recent.id].status, after_first[recent.id].attempts) == ("queued", 0)
    assert after_first[recent.id].last_error == f"{REQUEUED_NOTE}gave up: 421"
    assert after_first[old.id].status == "failed"
    assert publisher.deliveries[-2] == [recent.id]
    assert "requeued 1 failed email(s)" in second
    assert "1 failed email(s) left failed: retention pruned their bodies" in second
    assert publisher.deliveries[-1] == [old.id]
    after = {m.id: (m.status, m.attempts) for m in emails(db)}
    assert after == {
        recent.id: ("queued", 0),
        old.id: ("queued", 0),
        sent.id: ("sent", 1),
        pruned.id: ("failed", 9),
    }
    assert "requeued 0 failed emails: none to retry" in cli("emails", "retry", "--failed").stdout


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ((), "give --failed: only failed emails are put back in the queue"),
        (("--failed", "--since", "yesterday"), "'--since': 'yesterday' is not a date like"),
    ],
    ids=["no --failed", "bad --since"],
)
def test_retry_refuses_bad_options(
    cli: InProcessCli, publisher: Publisher, options: tuple[str, ...], expected: str
) -> None:
    line = cli.error("emails", "retry", *options, code=2)

    assert expected in line
    assert publisher.sent == []
