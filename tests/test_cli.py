"""The `clientflow` command, run as a subprocess with its settings in the environment.

A subprocess, not CliRunner: settings and session factories are cached per process, so each
run must start clean with exactly the CLIENTFLOW_* variables the test gives it. (The lookup and
resend commands are also tested in process, tests/cli_kit.py pointing those caches at the
test's database: test_cli_emails.py, test_cli_clients.py.)
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import payloads
import pytest
import redis
from servers import create_database, drop_database, environ_without_settings
from sqlalchemy import update

from models.contracts import EVENTS
from models.emails import EmailMessage
from models.engine import make_engine
from services.db import SessionFactory, make_session_factory
from services.dead_letters import record_dead_letter
from services.dispatch import Outcome, process_event
from services.rejections import record_rejection
from workers import migrate
from workers.ops.render import literal

HEAD = migrate.head()

CLI = [sys.executable, "-c", "from workers.cli import main; main()"]


def run_cli(
    cwd: Path, *args: str, check: bool = True, **settings: str
) -> subprocess.CompletedProcess[str]:
    """Run `clientflow ARGS` with only the given CLIENTFLOW_* settings (data_dir=..., ...)."""
    return run_cli_with({}, cwd, args, settings, check=check)


def run_cli_with(
    environment: dict[str, str],
    cwd: Path,
    args: tuple[str, ...],
    settings: dict[str, str],
    *,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """run_cli with other variables in the environment too (FORCE_COLOR=1)."""
    env = environ_without_settings()
    env.update({f"CLIENTFLOW_{k.upper()}": v for k, v in settings.items()})
    # Rich wraps tables at 80 columns when not on a terminal; keep rows on one line.
    env["COLUMNS"] = "250"
    env.update(environment)
    result = subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"clientflow {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture
def empty_postgres(postgres_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database with no tables at all (new_postgres_database migrates)."""
    name = f"clientflow_test_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_admin_url, name)
    yield url
    drop_database(postgres_admin_url, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    new_postgres_database: Callable[[], str],
) -> str:
    """A migrated, empty database of each kind."""
    if request.param == "postgresql":
        return new_postgres_database()
    url = f"sqlite:///{tmp_path / 'db' / 'clientflow.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def sessions(database_url: str) -> Iterator[SessionFactory]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_schema_prints_every_event_and_refuses_unknown_fields(tmp_path: Path) -> None:
    schemas = json.loads(run_cli(tmp_path, "schema").stdout)

    assert set(schemas) == set(EVENTS)
    for name, schema in schemas.items():
        assert schema["type"] == "object", name
        assert schema["additionalProperties"] is False, name
        # recipients.unsubscribe may leave client_id out: its token names the client.
        envelope = {"event_id"} if name == "recipients.unsubscribe" else {"event_id", "client_id"}
        assert envelope <= set(schema["required"]), name
        assert schema["$defs"]["Actor"]["additionalProperties"] is False, name
    assert "email" in schemas["clients.add"]["required"]
    assert schemas["notifications.send"]["properties"]["category"]["$ref"].endswith("Category")


def test_schema_of_one_event(tmp_path: Path) -> None:
    schemas = json.loads(run_cli(tmp_path, "schema", "contacts.add").stdout)

    assert list(schemas) == ["contacts.add"]
    assert schemas["contacts.add"]["additionalProperties"] is False
    assert {"contact_id", "firstname", "lastname", "email"} <= set(
        schemas["contacts.add"]["required"]
    )


def test_schema_of_an_unknown_event_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "schema", "clients.remove", check=False)

    assert result.returncode == 2
    assert "unknown event 'clients.remove'" in result.stderr
    assert result.stdout == ""


def test_db_upgrade_and_current_on_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    upgraded = run_cli(tmp_path, "db", "upgrade", data_dir=str(data_dir))
    current = run_cli(tmp_path, "db", "current", data_dir=str(data_dir))

    assert HEAD in upgraded.stdout
    assert current.stdout.strip() == HEAD
    assert (data_dir / "clientflow.db").is_file()
    # Nothing in the working directory: the data dir setting is honoured.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_db_upgrade_and_current_on_a_sqlite_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'folder' / 'cf.db'}"

    run_cli(tmp_path, "db", "upgrade", database_url=url, data_dir=str(tmp_path / "unused"))
    current = run_cli(tmp_path, "db", "current", database_url=url)

    assert current.stdout.strip() == HEAD
    assert (tmp_path / "nested" / "folder" / "cf.db").is_file()
    assert not (tmp_path / "unused" / "clientflow.db").exists()


def test_db_current_before_anything_exists_says_empty(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "db", "current", data_dir=str(tmp_path / "data"), check=False)

    assert (result.returncode, result.stdout.strip()) == (0, "empty"), result.stderr[-500:]


def test_db_upgrade_and_current_on_a_fresh_postgres_database(
    tmp_path: Path, empty_postgres: str
) -> None:
    before = run_cli(tmp_path, "db", "current", database_url=empty_postgres)
    run_cli(tmp_path, "db", "upgrade", database_url=empty_postgres)
    after = run_cli(tmp_path, "db", "current", database_url=empty_postgres)
    again = run_cli(tmp_path, "db", "upgrade", database_url=empty_postgres)

    assert before.stdout.strip() == "empty"
    assert after.stdout.strip() == HEAD
    assert HEAD in again.stdout


def test_rejected_list_shows_what_was_refused_and_why(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    empty = run_cli(tmp_path, "rejected", "list", database_url=database_url)
    assert "Rejected events (0 shown)" in empty.stdout
    assert (
        json.loads(
            run_cli(tmp_path, "rejected", "list", "--json", database_url=database_url).stdout
        )
        == []
    )

    payload = payloads.contact("K1", "C1", email="not-an-email")
    reason = "invalid event: email: value is not a valid email address"
    record_rejection(sessions, "contacts.add", payload, reason)

    table = run_cli(tmp_path, "rejected", "list", database_url=database_url).stdout
    assert "Rejected events (1 shown)" in table
    (line,) = [line for line in table.splitlines() if payload["event_id"] in line]
    assert "contacts.add" in line
    assert "not a valid email address" in line

    (row,) = json.loads(
        run_cli(tmp_path, "rejected", "list", "--json", database_url=database_url).stdout
    )
    assert row["event_id"] == payload["event_id"]
    assert row["task_name"] == "contacts.add"
    assert row["reason"] == reason
    assert json.loads(row["payload"]) == payload
    assert datetime.fromisoformat(row["created_at"]).utcoffset() is not None


def test_rejected_list_limit_shows_the_newest_first(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    ids = []
    for number in range(3):
        payload = payloads.event("C1", status=f"bogus-{number}")
        ids.append(payload["event_id"])
        record_rejection(sessions, "clients.set_status", payload, f"reason {number}")
    record_rejection(sessions, "contacts.add", {"args": [1, 2], "kwargs": {}}, "positional")

    rows = json.loads(
        run_cli(
            tmp_path, "rejected", "list", "--json", "--limit", "3", database_url=database_url
        ).stdout
    )

    assert [r["event_id"] for r in rows] == [None, ids[2], ids[1]]
    assert rows[0]["reason"] == "positional"


def test_emails_list_shows_the_message_log(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    empty = run_cli(tmp_path, "emails", "list", database_url=database_url)
    assert "Email message log (0 shown)" in empty.stdout

    published: list[str] = []
    result = process_event(
        "clients.add",
        payloads.client("C1"),
        session_factory=sessions,
        publish=lambda name, kwargs: published.append(name),
        company_name="Test Hosting",
    )
    assert result.outcome == Outcome.APPLIED
    assert len(published) == 1

    listed = run_cli(tmp_path, "emails", "list", database_url=database_url).stdout
    assert "Email message log (1 shown)" in listed
    (line,) = [line for line in listed.splitlines() if "c1@example.com" in line]
    assert "client_signup" in line
    assert "queued" in line

    queued = run_cli(tmp_path, "emails", "list", "--status", "queued", database_url=database_url)
    sent = run_cli(tmp_path, "emails", "list", "--status", "sent", database_url=database_url)
    assert "(1 shown)" in queued.stdout
    assert "(0 shown)" in sent.stdout


# --- text from messages is shown, never obeyed ---------------------------------------------

MARKUP = "[link=http://evil]x[/link]"
TITLE = "\x1b]0;title\x07"  # an escape sequence that retitles the terminal


def shown_as_text(result: subprocess.CompletedProcess[str]) -> str:
    """The output, checked to carry no control character but the newline."""
    output = result.stdout
    assert not [c for c in output if ord(c) < 32 and c != "\n"], repr(output)
    assert "\x9b" not in output
    return output


def test_rejected_list_shows_markup_and_escapes_literally(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    record_rejection(sessions, MARKUP, {"event_id": "[bold]E1[/bold]"}, "[red]reason[/red]")
    record_rejection(sessions, f"a{TITLE}b", {"event_id": f"E2{TITLE}"}, f"why\x9b31m{TITLE}")

    output = shown_as_text(run_cli(tmp_path, "rejected", "list", database_url=database_url))

    (markup_row,) = [line for line in output.splitlines() if "E1" in line]
    assert MARKUP in markup_row
    assert "[bold]E1[/bold]" in markup_row
    assert "[red]reason[/red]" in markup_row
    (escape_row,) = [line for line in output.splitlines() if "E2" in line]
    assert "a\\x1b]0;title\\x07b" in escape_row
    assert "E2\\x1b]0;title\\x07" in escape_row
    assert "why\\x9b31m\\x1b]0;title\\x07" in escape_row
    # The JSON keeps the exact text, escaped the JSON way.
    rows = json.loads(
        run_cli(tmp_path, "rejected", "list", "--json", database_url=database_url).stdout
    )
    assert [r["task_name"] for r in rows] == [f"a{TITLE}b", MARKUP]


def test_rejected_list_on_a_terminal_makes_no_link_and_no_title(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    record_rejection(sessions, MARKUP, {}, f"reason{TITLE}")

    # FORCE_COLOR: Rich writes colours, and would write links, as on a terminal.
    forced = run_cli_with(
        {"FORCE_COLOR": "1", "TERM": "xterm-256color"},
        tmp_path,
        ("rejected", "list"),
        {"database_url": database_url},
    ).stdout

    assert "\x1b[" in forced  # the colours are there
    assert "\x1b]8;" not in forced  # no hyperlink
    assert "\x1b]0;" not in forced  # no new title
    assert "\x07" not in forced
    assert "reason\\x1b]0;title\\x07" in forced
    assert "http://evil" in forced


def test_emails_and_dlq_lists_show_markup_and_escapes_literally(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    process_event(
        "clients.add",
        payloads.client("C1"),
        session_factory=sessions,
        publish=lambda name, kwargs: None,
        company_name="Test Hosting",
    )
    with sessions() as session:
        session.execute(
            update(EmailMessage).values(status="failed", last_error=f"550 {MARKUP}{TITLE}")
        )
        session.commit()
    record_dead_letter(
        sessions,
        task_name=MARKUP,
        task_id=None,
        kwargs={},
        errors=[],
        reason=f"gave up{TITLE}",
    )

    emails = shown_as_text(run_cli(tmp_path, "emails", "list", database_url=database_url))
    letters = shown_as_text(run_cli(tmp_path, "dlq", "list", database_url=database_url))

    assert f"550 {MARKUP}\\x1b]0;title\\x07" in emails
    (row,) = [line for line in letters.splitlines() if "gave up" in line]
    assert MARKUP in row
    assert "gave up\\x1b]0;title\\x07" in row


def test_ops_status_shows_reasons_literally(
    tmp_path: Path, database_url: str, sessions: SessionFactory
) -> None:
    record_rejection(sessions, "contacts.add", {}, f"{MARKUP}{TITLE}")
    record_dead_letter(
        sessions, task_name="clients.add", task_id=None, kwargs={}, errors=[], reason=MARKUP
    )

    result = run_cli(tmp_path, "ops", "status", check=False, database_url=database_url)
    output = shown_as_text(result)

    assert result.returncode == 1  # no worker, a dead letter: unhealthy
    assert f"{MARKUP}\\x1b]0;title\\x07" in output
    assert output.count(MARKUP) == 2


def test_literal_escapes_every_control_character_and_no_other() -> None:
    text = "".join(chr(c) for c in range(0xA0)) + "\u202e\u2066é€[b]"
    shown = literal(text).plain

    assert shown.startswith("\\x00\\x01")
    assert "\n" in shown
    assert "\\x0a" not in shown
    for escaped in ("\\x1b", "\\x7f", "\\x9b", "\\u202e\\u2066é€[b]"):
        assert escaped in shown
    assert not [c for c in shown if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0]
    assert ' !"#$%&' in shown
    assert shown.count("~") == 1


# --- looking up and resending (in process: test_cli_emails.py, test_cli_clients.py) ---------


def test_emails_list_show_and_resend_as_commands_publish_to_the_broker(
    tmp_path: Path, new_postgres_database: Callable[[], str], redis_url: str
) -> None:
    url = new_postgres_database()
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    process_event(
        "clients.add",
        payloads.client("C1"),
        session_factory=sessions,
        publish=lambda name, kwargs: None,
        company_name="Test Hosting",
    )
    with sessions() as session:
        session.execute(update(EmailMessage).values(status="sent", attempts=1))
        session.commit()
    engine.dispose()
    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()  # this test's database (CLIENTFLOW_TEST_REDIS_URL): nothing else's

    def emails(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli_with({}, tmp_path, ("emails", *args),
                            {"database_url": url, "broker_url": redis_url,
                             "reply_to": "help@example.net"}, check=check)  # fmt: skip

    [listed] = json.loads(emails("list", "--json").stdout)
    shown = json.loads(emails("show", listed["id"], "--json").stdout)
    resent = emails("resend", listed["id"]).stdout
    bad = emails("list", "--status", "bogus", check=False)

    assert listed["status"] == "sent"
    assert shown["headers"]["Reply-To"] == "help@example.net"
    assert shown["headers"]["Message-ID"] == f"<{listed['id']}@clientflow.localhost>"
    copy_id = resent.split(" as ", 1)[1].split(":", 1)[0]
    assert f"resent email {listed['id']} as {copy_id}: queued, delivery published" in resent
    [raw] = broker.lrange("emails", 0, -1)
    message = json.loads(raw)
    assert message["headers"]["task"] == "emails.deliver"
    _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert kwargs == {"message_ids": [copy_id]}
    assert (bad.returncode, bad.stdout) == (2, "")
    assert "unknown status 'bogus'; one of: queued, sending, sent, failed" in bad.stderr


def test_clients_show_and_find_as_commands(tmp_path: Path, database_url: str,
                                           sessions: SessionFactory) -> None:  # fmt: skip
    for task, payload in [
        ("clients.add", payloads.client("C1", companyname="Analytical Engines Ltd")),
        ("contacts.add", payloads.contact("K1", "C1", "invoice")),
    ]:
        process_event(task, payload, session_factory=sessions, publish=lambda name, kwargs: None,
                      company_name="Test Hosting")  # fmt: skip

    card = json.loads(
        run_cli(tmp_path, "clients", "show", "C1", "--json", database_url=database_url).stdout
    )
    found = run_cli(tmp_path, "clients", "find", "ENGINES", database_url=database_url).stdout
    missing = run_cli(tmp_path, "clients", "show", "C9", check=False, database_url=database_url)

    assert card["client"]["companyname"] == "Analytical Engines Ltd"
    assert [c["id"] for c in card["contacts"]] == ["K1"]
    assert card["contacts"][0]["categories"]["invoice"] is True
    (line,) = [line for line in found.splitlines() if "C1" in line]
    assert "Ada Lovelace" in line
    assert "company" in line
    assert (missing.returncode, missing.stdout) == (1, "")
    assert "no client 'C9'" in missing.stderr


def test_templates_preview_as_a_command_with_the_operators_folder(tmp_path: Path) -> None:
    override = tmp_path / "templates"
    (override / "invoice_payment_reminder" / "fr").mkdir(parents=True)
    reminder = override / "invoice_payment_reminder" / "fr" / "subject.txt"
    reminder.write_text("Rappel : {{ invoice.balance|money(invoice.currency) }} à régler")

    result = run_cli(
        tmp_path, "templates", "preview", "invoice_payment_reminder", "--language", "fr",
        template_dir=str(override), company_name="Nuage",
    )  # fmt: skip

    lines = result.stdout.splitlines()
    assert lines[0] == (
        "# invoice_payment_reminder (fr) for the sample client, formatted for locale fr"
    )
    # The operator's subject, the shipped French body.
    assert lines[1] == "Subject: Rappel : 1\u202f215,00\xa0£GB à régler"
    assert lines[3] == "Bonjour Ada Lovelace,"
    assert "Cordialement,\nNuage" in result.stdout
