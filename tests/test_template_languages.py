"""Emails in the client's language: each shipped translation renders, amounts and dates are
written as its language writes them, and anything untranslated falls back to English."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_templates import BASE_CONTEXT, SAMPLES

from services.mail.catalogue import catalogue
from services.mail.languages import locale_for
from services.mail.overview import overview
from services.mail.render import TEMPLATES_DIR, TemplateError, render_email

SHIPPED = (TEMPLATES_DIR,)
INVOICE_TEMPLATES = sorted(name for name in SAMPLES if name.startswith("invoice_"))

# What each shipped language writes: its greeting, and the sample's amounts and due date.
LANGUAGES: dict[str | None, dict[str, str]] = {
    None: {
        "greeting": "Dear Ada Lovelace,",
        "signature": "Regards,",
        "total": "£1,200.00",
        "item": "£1,000.00",
        "due": "March 15, 2026",
    },
    "fr": {
        "greeting": "Bonjour Ada Lovelace,",
        "signature": "Cordialement,",
        # Babel's French: a narrow no-break space between thousands, a no-break space before
        # the symbol, and "£GB" where a bare "£" could be another pound.
        "total": "1\u202f200,00\xa0£GB",
        "item": "1\u202f000,00\xa0£GB",
        "due": "15 mars 2026",
    },
}


def shipped_variants() -> list[tuple[str, str | None]]:
    found = catalogue(SHIPPED)
    return [(name, language) for name in found.names() for language in found.templates[name]]


def context_for(name: str) -> dict[str, Any]:
    return {**BASE_CONTEXT, **SAMPLES[name]}


def test_the_welcome_and_invoice_emails_are_shipped_in_french() -> None:
    french = {name for name, language in shipped_variants() if language == "fr"}
    assert french == {"client_signup", *INVOICE_TEMPLATES}
    assert {language for _, language in shipped_variants()} == set(LANGUAGES)


@pytest.mark.parametrize(("name", "language"), shipped_variants())
def test_every_shipped_template_renders_in_each_of_its_languages(
    name: str, language: str | None
) -> None:
    rendered = render_email(name, context_for(name), language=language, folders=SHIPPED)
    expected = LANGUAGES[language]
    assert rendered.variant == (name if language is None else f"{name} ({language})")
    assert rendered.locale == (language or "en")
    assert rendered.subject
    assert "\n" not in rendered.subject
    assert rendered.text.startswith(expected["greeting"])
    assert expected["signature"] in rendered.text
    assert f"<p>{expected['greeting']}</p>" in rendered.html
    assert f'<html lang="{language or "en"}">' in rendered.html


@pytest.mark.parametrize("language", sorted(LANGUAGES, key=str))
@pytest.mark.parametrize("name", INVOICE_TEMPLATES)
def test_invoice_amounts_and_dates_are_written_as_the_language_writes_them(
    name: str, language: str | None
) -> None:
    rendered = render_email(name, context_for(name), language=language, folders=SHIPPED)
    expected = LANGUAGES[language]
    assert "INV-1" in rendered.subject
    for part in (rendered.text, rendered.html):
        assert expected["total"] in part
        assert expected["item"] in part
        assert expected["due"] in part
        assert "2026-03-15" not in part
    assert "Hosting &lt;Pro&gt;" in rendered.html


def test_the_invoice_subject_carries_the_total_and_due_date_in_french() -> None:
    rendered = render_email(
        "invoice_created", context_for("invoice_created"), language="french", folders=SHIPPED
    )
    assert rendered.subject == (
        "Facture client n° INV-1 : 1\u202f200,00\xa0£GB, échéance le 15 mars 2026"
    )


def test_the_payment_confirmation_writes_the_payment_in_french() -> None:
    name = "invoice_payment_confirmation"
    rendered = render_email(name, context_for(name), language="fr", folders=SHIPPED)
    assert (
        "nous avons bien reçu votre paiement de 1\u202f200,00\xa0£GB le 10 mars 2026 "
        "(transaction T1)" in rendered.text
    )


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("english", "en"), ("french", "fr"), ("French", "fr"), ("fr", "fr"), ("FR", "fr"),
        ("fr-ca", "fr_CA"), ("fr_ca", "fr_CA"), ("german", "de"), ("portuguese-br", "pt_BR"),
        ("portuguese-pt", "pt_PT"), ("farsi", "fa"), ("ukranian", "uk"), ("en_gb", "en_GB"),
        (" spanish ", "es"),
        # Babel names Klingon but has no locale for it; the others it does not know at all.
        ("klingon", None), ("elvish", None), ("xx", None), ("", None), (None, None),
    ],
)  # fmt: skip
def test_a_clients_language_names_a_babel_locale(language: str | None, expected: str) -> None:
    locale = locale_for(language)
    assert (None if locale is None else str(locale)) == expected


@pytest.mark.parametrize("language", ["klingon", "xx", None, "", "german"])
def test_an_unknown_or_untranslated_language_gets_the_english_email(
    language: str | None,
) -> None:
    rendered = render_email(
        "invoice_created", context_for("invoice_created"), language=language, folders=SHIPPED
    )
    assert rendered.variant == "invoice_created"
    assert rendered.locale == "en"  # German amounts in an English sentence would read oddly
    assert rendered.subject == "Customer Invoice #INV-1: £1,200.00 due March 15, 2026"
    assert rendered.text.startswith("Dear Ada Lovelace,")


def test_a_template_with_no_translation_is_sent_in_english_to_a_french_client() -> None:
    name = "general_announcement"
    rendered = render_email(name, context_for(name), language="french", folders=SHIPPED)
    assert rendered.variant == name
    assert rendered.locale == "en"
    assert rendered.text.startswith("Dear Ada Lovelace,")


def test_a_regional_english_formats_the_english_email_its_own_way() -> None:
    rendered = render_email(
        "invoice_created", context_for("invoice_created"), language="en_gb", folders=SHIPPED
    )
    assert rendered.variant == "invoice_created"
    assert rendered.locale == "en_GB"
    assert rendered.subject == "Customer Invoice #INV-1: £1,200.00 due 15 March 2026"


def test_a_regional_french_takes_the_french_email() -> None:
    rendered = render_email(
        "client_signup", context_for("client_signup"), language="fr-ca", folders=SHIPPED
    )
    assert rendered.variant == "client_signup (fr)"
    assert rendered.locale == "fr_CA"
    assert rendered.subject == "Bienvenue chez Test Hosting"


def test_an_incomplete_translation_is_not_sent_and_is_listed(tmp_path: Path) -> None:
    german = tmp_path / "general_announcement" / "de"
    german.mkdir(parents=True)
    (german / "subject.txt").write_text("Neuigkeiten: {{ title }}")
    folders = (tmp_path, TEMPLATES_DIR)
    name = "general_announcement"

    rendered = render_email(name, context_for(name), language="german", folders=folders)

    assert rendered.variant == name
    assert rendered.subject == "News"
    rows = {(row.name, row.language): row for row in overview(folders)}
    assert rows[(name, "de")].origin == "incomplete, English is sent: no body.txt, body.html"
    assert rows[(name, "en (default)")].origin == "shipped"


def test_amounts_keep_two_decimals_in_every_currency() -> None:
    context = context_for("invoice_created")
    context["invoice"] = {**context["invoice"], "currency": "JPY", "balance": "1200.5"}
    rendered = render_email("invoice_created", context, folders=SHIPPED)
    assert "The amount due is ¥1,200.50" in rendered.text


def test_an_amount_that_is_no_number_is_a_reason() -> None:
    context = context_for("invoice_created")
    context["invoice"] = {**context["invoice"], "balance": "£1,200.00 GBP"}
    with pytest.raises(TemplateError, match=r"money needs an amount, not '£1,200\.00 GBP'"):
        render_email("invoice_created", context, folders=SHIPPED)


def test_a_date_that_is_no_date_is_a_reason() -> None:
    context = context_for("invoice_created")
    context["invoice"] = {**context["invoice"], "due_date": "the ides of March"}
    with pytest.raises(TemplateError, match="ValueError: Invalid isoformat string"):
        render_email("invoice_created", context, folders=SHIPPED)
