"""The email layout's settings and what the templates make of them: the company's address,
logo, client-area link and the invoice's pay link, inline styles only, amounts that never wrap.
(The widths themselves, in a browser: tests/test_email_widths.py.)"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from pydantic import ValidationError

from models.company import Company, as_company
from models.settings import Settings
from services.invoice_mail import invoice_context
from services.mail.catalogue import catalogue
from services.mail.preview import preview_email, sample_client, sample_invoice
from services.mail.queue import email_context
from services.mail.render import TEMPLATES_DIR
from services.routing import holder_of

SHIPPED = (TEMPLATES_DIR,)
FULL = Company(
    name="Nuage & Co",
    address_lines=("1 Rue de la Paix", "75002 Paris"),
    logo_url="https://cdn.example.com/logo.png",
    client_area_url="https://billing.example.com/clientarea.php",
    invoice_url="https://billing.example.com/invoice/{number}?id={invoice_id}",
)


def html_files() -> list[str]:
    return sorted(
        str(path.relative_to(TEMPLATES_DIR)) for path in TEMPLATES_DIR.rglob("*.html")
    )


# Settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "1 Rue de la Paix\n75002 Paris",
        "1 Rue de la Paix\\n75002 Paris",  # a literal \n, as a .env file holds it
        '["1 Rue de la Paix", "75002 Paris"]',
        " 1 Rue de la Paix \n\n 75002 Paris \n",
    ],
)
def test_the_company_address_is_lines_by_newline_or_a_json_list(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CLIENTFLOW_COMPANY_ADDRESS", value)
    assert Settings().company.address_lines == ("1 Rue de la Paix", "75002 Paris")


def test_the_company_comes_from_settings_and_its_parts_are_optional() -> None:
    assert Settings().company == Company(name="Clientflow Hosting")
    settings = Settings(
        company_name="Nuage & Co",
        company_address=["1 Rue de la Paix", "75002 Paris"],
        company_logo_url="https://cdn.example.com/logo.png",
        client_area_url="https://billing.example.com/clientarea.php",
        invoice_url="https://billing.example.com/invoice/{number}?id={invoice_id}",
    )
    assert settings.company == FULL


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("company_logo_url", "http://cdn.example.com/logo.png", "must start with https://"),
        ("company_logo_url", 'https://x.example/a.png" onerror="x', "must not contain spaces"),
        ("client_area_url", "javascript:alert(1)", "must start with https:// or http://"),
        ("invoice_url", "https://billing.example.com/invoice", "must contain {invoice_id}"),
        ("invoice_url", "ftp://billing.example.com/{number}", "must start with https://"),
    ],
)
def test_a_link_setting_that_is_not_a_plain_web_url_is_refused(
    field: str, value: str, reason: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)):
        Settings.model_validate({field: value})


# The context ---------------------------------------------------------------------------------


def test_the_invoice_link_fills_in_the_invoice_quoted_or_is_empty() -> None:
    invoice = {"id": "I 7", "number": "2026/001"}
    assert FULL.invoice_link(invoice) == "https://billing.example.com/invoice/2026%2F001?id=I%207"
    assert Company(name="X").invoice_link(invoice) == ""
    assert FULL.invoice_link({"id": "I7", "number": ""}) == ""


def test_templates_get_company_beside_company_name_and_invoices_their_pay_url() -> None:
    client = sample_client()
    invoice = {"id": "I7", "number": "INV-7"}
    context = email_context(client, holder_of(client), FULL, {"invoice": invoice})
    assert context["company_name"] == "Nuage & Co"
    assert context["company"] == {
        "name": "Nuage & Co",
        "address_lines": ["1 Rue de la Paix", "75002 Paris"],
        "logo_url": "https://cdn.example.com/logo.png",
        "client_area_url": "https://billing.example.com/clientarea.php",
    }
    assert context["invoice"]["pay_url"] == "https://billing.example.com/invoice/INV-7?id=I7"
    assert "pay_url" not in invoice  # the caller's dict, shared between recipients, is unchanged
    # A bare name, as callers before the layout passed: a company with nothing else.
    bare = email_context(client, holder_of(client), "Nuage", {"invoice": invoice})
    assert bare["company"]["address_lines"] == []
    assert bare["invoice"]["pay_url"] == ""
    assert as_company("Nuage") == Company(name="Nuage")


# The templates -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", html_files())
def test_html_is_styled_inline_only(path: str) -> None:
    source = (TEMPLATES_DIR / path).read_text(encoding="utf-8")
    assert "<style" not in source
    assert "<link" not in source
    assert "class=" not in source


@pytest.mark.parametrize("path", html_files())
def test_every_amount_is_in_an_element_that_does_not_wrap(path: str) -> None:
    source = (TEMPLATES_DIR / path).read_text(encoding="utf-8")
    amounts = source.count("|money(")
    unbroken = re.findall(
        r'<(?:td|span|strong)[^>]*style="[^"]*white-space: nowrap;[^"]*">(?:<strong>)?'
        r"\{\{ [a-z_.]+\|money\(",
        source,
    )
    assert len(unbroken) == amounts


@pytest.mark.parametrize(
    ("name", "language"),
    [(name, language) for name, variants in catalogue(SHIPPED).templates.items()
     for language in variants],
)  # fmt: skip
def test_every_email_has_the_company_header_and_footer(name: str, language: str | None) -> None:
    rendered = preview_email(name, sample_client(), FULL, language=language, folders=SHIPPED)
    assert 'width="600"' in rendered.html
    assert "max-width: 600px" in rendered.html
    assert '<img src="https://cdn.example.com/logo.png" alt="Nuage &amp; Co"' in rendered.html
    assert "1 Rue de la Paix<br>75002 Paris" in rendered.html
    assert 'href="https://billing.example.com/clientarea.php"' in rendered.html
    assert "1 Rue de la Paix\n75002 Paris\n" in rendered.text
    assert "https://billing.example.com/clientarea.php" in rendered.text
    if name.startswith("invoice_"):
        assert "https://billing.example.com/invoice/INV-SAMPLE-1?id=" in rendered.html
        assert "https://billing.example.com/invoice/INV-SAMPLE-1?id=" in rendered.text


def test_without_a_logo_the_header_is_the_name_and_there_is_no_image() -> None:
    rendered = preview_email("client_signup", sample_client(), "Nuage & Co", folders=SHIPPED)
    assert "<img" not in rendered.html
    assert ">Nuage &amp; Co</span>" in rendered.html
    assert "Your client area" not in rendered.html
    # Nothing set but the name: the text part ends with the signature, as before the layout.
    assert rendered.text.endswith("Regards,\nNuage & Co\n")


@pytest.mark.parametrize(("language", "pay", "view"), [
    (None, "Pay this invoice", "View this invoice"),
    ("fr", "Régler cette facture", "Voir cette facture"),
])  # fmt: skip
def test_an_unpaid_invoice_has_a_pay_button_and_a_paid_one_a_link_to_view_it(
    language: str | None, pay: str, view: str
) -> None:
    unpaid = preview_email("invoice_created", sample_client(), FULL, language=language)
    assert f">{pay}</a>" in unpaid.html
    assert view not in unpaid.html
    assert f"{pay}" in unpaid.text
    # The preview's sample invoice is unpaid; a confirmation's invoice has nothing left to pay.
    settled = {
        **invoice_context(sample_invoice(dt.date(2026, 3, 1))),
        "paid": "1215.00",
        "balance": "0.00",
        "status": "Paid",
    }
    paid = preview_email(
        "invoice_payment_confirmation", sample_client(), FULL, language=language,
        extra={"invoice": settled},
    )  # fmt: skip
    assert f">{view}</a>" in paid.html
    assert pay not in paid.html
    unset = preview_email("invoice_created", sample_client(), "Nuage", language=language)
    assert pay not in unset.html
    assert pay not in unset.text
