"""`clientflow templates list` and `preview`, in process (typer's CliRunner) against a real
PostgreSQL database and an operator's template folder given by the settings."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import payloads
import pytest
from typer.testing import CliRunner, Result

from models.engine import make_engine
from models.settings import get_settings
from services.db import make_session_factory
from services.dispatch import Outcome, process_event
from tasks import runtime
from workers.cli import app
from workers.cli.common import console

Configure = Callable[..., None]


def forget_settings() -> None:
    """Settings and the session factory are cached per process: drop both."""
    get_settings.cache_clear()
    if runtime.session_factory.cache_info().currsize:
        runtime.session_factory().kw["bind"].dispose()
    runtime.session_factory.cache_clear()


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Configure]:
    """Sets CLIENTFLOW_* variables for the commands run in this process, and only those."""
    for name in [n for n in os.environ if n.startswith("CLIENTFLOW_")]:
        monkeypatch.delenv(name)
    # Rich would wrap the table at 80 columns (no terminal here): one row per line.
    monkeypatch.setattr(console, "_width", 250)

    def apply(**settings: str) -> None:
        for key, value in settings.items():
            monkeypatch.setenv(f"CLIENTFLOW_{key.upper()}", value)
        forget_settings()

    yield apply
    forget_settings()


@pytest.fixture
def database_url(new_postgres_database: Callable[[], str]) -> str:
    """A PostgreSQL database with C1 (French, a billing contact) and C2 (no language)."""
    url = new_postgres_database()
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    events = [
        ("clients.add", payloads.client("C1", language="french", send_welcome=False)),
        ("contacts.add", payloads.contact("K1", "C1", "invoice", companyname="Difference Ltd")),
        ("clients.set_billing_contact", payloads.event("C1", contact_id="K1")),
        ("clients.add", payloads.client("C2", firstname="Grace", send_welcome=False)),
    ]  # fmt: skip
    for task, payload in events:
        result = process_event(
            task, payload, session_factory=sessions, publish=lambda *_: None, company_name="T"
        )
        assert result.outcome == Outcome.APPLIED, result
    engine.dispose()
    return url


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_preview_renders_a_real_clients_email_in_the_clients_language(
    configure: Configure, database_url: str, tmp_path: Path
) -> None:
    configure(database_url=database_url, company_name="Nuage Hébergement")
    page = tmp_path / "welcome.html"

    french = cli("templates", "preview", "client_signup", "--client", "C1", "--html", str(page))
    english = cli("templates", "preview", "client_signup", "--client", "C1", "--language", "en")
    holder = cli("templates", "preview", "client_signup", "--client", "C2")

    assert french.exit_code == 0, french.output
    assert french.stdout.splitlines()[:4] == [
        "# client_signup (fr) for client C1 (french), formatted for locale fr",
        "Subject: Bienvenue chez Nuage Hébergement",
        "",
        "Bonjour Ada Lovelace,",
    ]
    assert "L'adresse e-mail de votre compte est c1@example.com." in french.stdout
    assert f"# HTML part written to {page}" in french.stdout
    html = page.read_text()
    assert '<html lang="fr">' in html
    assert "<strong>c1@example.com</strong>" in html
    assert english.exit_code == 0, english.output
    assert "Subject: Welcome to Nuage Hébergement" in english.stdout
    assert "Dear Ada Lovelace," in english.stdout
    assert "Dear Grace Lovelace," in holder.stdout


def test_preview_of_an_invoice_email_takes_the_clients_billing_contact(
    configure: Configure, database_url: str
) -> None:
    configure(database_url=database_url)

    result = cli("templates", "preview", "invoice_overdue_first", "--client", "C1")

    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Subject: Premier avis de retard de paiement : facture n° INV-SAMPLE-1" in text
    # The sample invoice, addressed as the client's own invoices are: to its billing contact.
    assert "Facturé à :\nCharles K1\nDifference Ltd\n" in text
    assert "Solde dû : 1\u202f215,00\xa0£GB" in text


def test_preview_without_a_client_uses_the_sample_client_and_no_database(
    configure: Configure, tmp_path: Path
) -> None:
    # A database URL nothing answers at: the sample needs none.
    configure(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    context = tmp_path / "context.json"
    context.write_text('{"title": "Nouvelles", "message": "Un.\\n\\nDeux."}')

    result = cli(
        "templates", "preview", "general_announcement", "--language", "fr",
        "--context", str(context),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    # Not translated: English, for the sample client, with the variables given.
    assert result.stdout.splitlines()[:4] == [
        "# general_announcement for the sample client, formatted for locale en",
        "Subject: Nouvelles",
        "",
        "Dear Ada Lovelace,",
    ]


def test_preview_uses_the_operators_templates(configure: Configure, tmp_path: Path) -> None:
    override = tmp_path / "templates"
    (override / "client_signup" / "de").mkdir(parents=True)
    for part, text in {
        "subject.txt": "Willkommen bei {{ company_name }}",
        "body.txt": '{% extends "_base/body.txt" %}{% block content %}Hallo!{% endblock %}',
        "body.html": "<p>Hallo!</p>",
    }.items():
        (override / "client_signup" / "de" / part).write_text(text)
    configure(template_dir=str(override), company_name="Wolke")

    result = cli("templates", "preview", "client_signup", "--language", "german")

    assert result.exit_code == 0, result.output
    assert "# client_signup (de) for the sample client, formatted for locale de" in result.stdout
    assert "Subject: Willkommen bei Wolke" in result.stdout


def test_preview_failures_are_one_line(
    configure: Configure, database_url: str, tmp_path: Path
) -> None:
    override = tmp_path / "templates"
    (override / "client_signup").mkdir(parents=True)
    (override / "client_signup" / "subject.txt").write_text("{{ ''.__class__ }}")
    configure(database_url=database_url, template_dir=str(override))

    unknown_client = cli("templates", "preview", "client_signup", "--client", "NOPE")
    unknown_template = cli("templates", "preview", "no_such_template")
    sandboxed = cli("templates", "preview", "client_signup")

    assert unknown_client.exit_code == 2
    assert "no client 'NOPE' in the database" in unknown_client.stderr
    assert unknown_template.exit_code == 2
    assert unknown_template.stderr == "clientflow: unknown email template 'no_such_template'\n"
    assert sandboxed.exit_code == 2
    assert sandboxed.stderr == (
        "clientflow: template 'client_signup' is refused by the sandbox: access to attribute "
        "'__class__' of 'str' object is unsafe.\n"
    )


def test_list_shows_shipped_and_overridden_templates_with_their_variables(
    configure: Configure, tmp_path: Path
) -> None:
    override = tmp_path / "templates"
    files = {
        "client_signup/subject.txt": "Hello {{ client.firstname }}",
        "maintenance/subject.txt": "Maintenance {{ day|date }}",
        "maintenance/body.txt": '{% extends "_base/body.txt" %}{% block content %}{{ what }}'
        "{% endblock %}",
        "maintenance/body.html": "<p>{{ what }}</p>",
        "maintenance/es/subject.txt": "Mantenimiento",
        "maintenance/images/logo.txt": "not a language",
        "_base/body.html": "<html>{% block content %}{% endblock %}</html>",
    }
    for relative, text in files.items():
        (override / relative).parent.mkdir(parents=True, exist_ok=True)
        (override / relative).write_text(text)
    configure(template_dir=str(override))

    result = cli("templates", "list")

    assert result.exit_code == 0, result.output
    rows = {
        tuple(cell.strip() for cell in line.split("│")[1:3]): [
            cell.strip() for cell in line.split("│")[3:5]
        ]
        for line in result.stdout.splitlines()
        if line.count("│") == 5
    }
    assert rows[("client_signup", "en (default)")] == [
        "override: subject.txt", "client, company, company_name, recipient",
    ]  # fmt: skip
    assert rows[("client_signup", "fr")] == ["shipped", "client, company, company_name, recipient"]
    assert rows[("maintenance", "en (default)")] == [
        "override", "company, company_name, day, recipient, what",
    ]  # fmt: skip
    assert rows[("maintenance", "es")][0] == "incomplete, English is sent: no body.txt, body.html"
    assert rows[("invoice_payment_confirmation", "fr")] == [
        "shipped", "company, company_name, invoice, invoiced_to, payment, recipient",
    ]  # fmt: skip
    assert "Layouts overridden (used by every template that extends or includes them): " \
        "_base/body.html" in result.stdout  # fmt: skip
    assert "Ignored, not a language code: maintenance/images" in result.stdout
