"""`clientflow clients show | find`, in process, on PostgreSQL and SQLite (the subprocess run
is in tests/test_cli.py)."""

from __future__ import annotations

from datetime import timedelta

import payloads
import pytest
from cli_kit import InProcessCli, cli_fixture
from conftest import Apply
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.base import utcnow
from models.records import AuditEvent
from services.db import SessionFactory
from services.retention import Retention, prune

cli = cli_fixture()


@pytest.fixture
def account(apply: Apply) -> None:
    """C1 with two contacts (K1 its billing contact), two status changes, two services, an
    unpaid and a paid invoice, and a welcome email; C2 beside it, so nothing of C2's shows."""
    for task, payload in [
        ("clients.add", payloads.client("C1", companyname="Analytical Engines Ltd")),
        ("contacts.add", payloads.contact("K1", "C1", "invoice", "general")),
        ("contacts.add", payloads.contact("K2", "C1", "product", "domain", "support")),
        ("clients.set_billing_contact", payloads.event("C1", contact_id="K1")),
        ("clients.set_status", payloads.event("C1", status="Inactive")),
        ("clients.set_status", payloads.event("C1", status="Active")),
        ("services.upsert", payloads.service("S1")),
        ("services.upsert", payloads.service("S2", status="Suspended", amount="99.00")),
        ("invoices.upsert", payloads.invoice("I1")),
        ("invoices.upsert", payloads.invoice("I2", status="Paid", balance="0.00")),
        ("clients.add", payloads.client("C2")),
        ("invoices.upsert", payloads.invoice("I3", "C2")),
    ]:
        result = apply(task, payload)
        assert result.reason is None, (task, result.reason)


def test_show_as_json_has_the_whole_card(cli: InProcessCli, account: None) -> None:
    card = cli.json("clients", "show", "C1")

    client = card["client"]
    assert (client["id"], client["firstname"], client["lastname"]) == ("C1", "Ada", "Lovelace")
    assert (client["companyname"], client["status"]) == ("Analytical Engines Ltd", "Active")
    assert (client["email"], client["country"], client["invoice_emails"]) == (
        "c1@example.com", "GB", True
    )  # fmt: skip
    history = [(c["old"], c["new"], c["action"]) for c in card["status_history"]]
    assert history == [
        (None, "Active", "clients.add"),
        ("Active", "Inactive", "clients.set_status"),
        ("Inactive", "Active", "clients.set_status"),
    ]
    assert card["history_complete"] is True
    assert card["billing_contact_id"] == "K1"
    contacts = {c["id"]: (c["categories"], c["billing"]) for c in card["contacts"]}
    off = dict.fromkeys(("general", "product", "domain", "invoice", "support"), False)
    assert contacts == {
        "K1": ({**off, "general": True, "invoice": True}, True),
        "K2": ({**off, "product": True, "domain": True, "support": True}, False),
    }
    assert [(s["id"], s["status"], s["amount"]) for s in card["services"]] == [
        ("S1", "Active", "12.50"),
        ("S2", "Suspended", "99.00"),
    ]
    [unpaid] = card["unpaid_invoices"]
    assert (unpaid["id"], unpaid["balance"], unpaid["due_date"]) == ("I1", "1215.59", "2026-03-15")
    [welcome] = card["last_emails"]
    assert (welcome["template"], welcome["to_address"]) == ("client_signup", "c1@example.com")


def test_show_as_tables(cli: InProcessCli, account: None) -> None:
    output: str = cli("clients", "show", "C1").stdout
    lines = output.splitlines()

    def row(*cells: str) -> str:
        (found,) = [line for line in lines if all(cell in line for cell in cells)]
        return found

    assert lines[0] == "Client C1"
    assert "Analytical Engines Ltd" in row("company")
    assert "K1: Charles K1 <k1@example.com>" in row("billing contact")
    changes = [line.split("│")[2:4] for line in lines if "clients.set_status" in line]
    assert [[cell.strip() for cell in c] for c in changes] == [
        ["Active", "Inactive"],
        ["Inactive", "Active"],
    ]
    contact = row("│ K1 ", "k1@example.com").split("│")
    # id, name, email, general, product, domain, invoice, support, billing
    assert [cell.strip() for cell in contact[4:10]] == ["yes", "-", "-", "yes", "-", "billing"]
    assert "$99.00 USD" in row("S2", "Suspended")
    assert "£1,215.59 GBP" in row("I1", "INV-I1")
    assert "I2" not in output  # paid
    assert "I3" not in output  # another client's
    assert row("client_signup", "c1@example.com")


def test_show_says_when_retention_pruned_the_start_of_the_history(
    cli: InProcessCli, account: None, db: Session, session_factory: SessionFactory
) -> None:
    first = db.scalar(select(AuditEvent.id).order_by(AuditEvent.id))
    db.execute(
        update(AuditEvent)
        .where(AuditEvent.id == first)
        .values(created_at=utcnow() - timedelta(days=400))
    )
    db.commit()
    prune(session_factory, Retention(None, None, None, timedelta(days=365)))

    card = cli.json("clients", "show", "C1")
    output = cli("clients", "show", "C1").stdout

    assert card["history_complete"] is False
    assert [c["action"] for c in card["status_history"]] == ["clients.set_status"] * 2
    assert "older changes pruned from the audit trail by retention" in output


def test_show_of_an_unknown_client_exits_1(cli: InProcessCli) -> None:
    line = cli.error("clients", "show", "C404", code=1)

    assert line.startswith("clientflow: no client 'C404'")


@pytest.fixture
def directory(apply: Apply) -> None:
    for payload in [
        payloads.client("C1", companyname="Analytical Engines Ltd"),
        payloads.client("C2", firstname="Grace", lastname="Hopper", email="grace@navy.example"),
        payloads.client("C3", firstname="Alan", lastname="Turing", companyname="100% Uptime"),
        payloads.client("C4", firstname="Alan", lastname="Kay", companyname="1000 Hosts"),
    ]:
        apply("clients.add", payload)
    apply("contacts.add", payloads.contact("K1", "C4", email="Billing@ACME.example"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("LOVELACE", [("C1", ["name"])]),
        ("ada love", [("C1", ["name"])]),
        ("engines", [("C1", ["company"])]),
        ("NAVY.example", [("C2", ["email"])]),
        ("acme", [("C4", ["contact K1"])]),
        ("alan", [("C4", ["name"]), ("C3", ["name"])]),  # by last name: Kay, Turing
        ("100%", [("C3", ["company"])]),  # % is itself, not a wildcard
        ("C2", [("C2", ["id"])]),
        ("C1", [("C1", ["id", "email"])]),  # c1@example.com too
        ("nobody", []),
    ],
)
def test_find_matches_name_company_or_email_in_any_case(
    cli: InProcessCli, directory: None, text: str, expected: list[tuple[str, list[str]]]
) -> None:
    found = cli.json("clients", "find", text)

    assert [(c["id"], c["matched"]) for c in found] == expected


def test_find_as_a_table(cli: InProcessCli, directory: None) -> None:
    output = cli("clients", "find", "hopper").stdout

    assert "Clients matching 'hopper' (1 shown)" in output
    (line,) = [line for line in output.splitlines() if "C2" in line]
    for cell in ("Grace Hopper", "grace@navy.example", "Active", "name"):
        assert cell in line


def test_find_with_a_limit_and_without_text(cli: InProcessCli, directory: None) -> None:
    assert [c["id"] for c in cli.json("clients", "find", "a", "--limit", "2")] == ["C2", "C4"]
    line = cli.error("clients", "find", "  ", code=2)
    assert "give some text to look for" in line
