"""Every email template renders, with single-line subjects, escaped HTML and strict variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.company import Company
from services.mail.catalogue import PARTS
from services.mail.render import TEMPLATES_DIR, TemplateError, render_email, template_names

# Sample context per template: what the handlers and a publisher's notifications.send supply.
BASE_CONTEXT: dict[str, Any] = {
    "client": {
        "id": "C1",
        "firstname": "Ada",
        "lastname": "Lovelace",
        "full_name": "Ada Lovelace",
        "companyname": None,
        "email": "ada@example.com",
        "status": "Active",
    },
    "recipient": {"name": "Ada Lovelace", "email": "ada@example.com"},
    "company_name": "Test Hosting",
    "company": Company(name="Test Hosting").template_context(),
}
INVOICE: dict[str, Any] = {
    "id": "I1",
    "number": "INV-1",
    "date": "2026-03-01",
    "due_date": "2026-03-15",
    "status": "Unpaid",
    "currency": "GBP",
    # Amounts and dates as services.invoice_mail gives them; the templates format them.
    "items": [{"description": "Hosting <Pro>", "amount": "1000.00"}],
    "subtotal": "1000.00",
    "tax": "200.00",
    "total": "1200.00",
    "paid": "0.00",
    "balance": "1200.00",
    # What services.mail.queue.email_context adds to every invoice: no CLIENTFLOW_INVOICE_URL.
    "pay_url": "",
}
INVOICED_TO: dict[str, Any] = {
    "name": "Charles Babbage",
    "companyname": "Difference Engines",
    "address_lines": ["1 Dorset Street", "London W1U 4EG", "GB"],
    "email": "accounts@example.com",
    "phonenumber": None,
}
INVOICE_SAMPLE = {"invoice": INVOICE, "invoiced_to": INVOICED_TO}
SAMPLES: dict[str, dict[str, Any]] = {
    "invoice_created": INVOICE_SAMPLE,
    "invoice_payment_reminder": INVOICE_SAMPLE,
    "invoice_overdue_first": INVOICE_SAMPLE,
    "invoice_overdue_second": INVOICE_SAMPLE,
    "invoice_overdue_third": INVOICE_SAMPLE,
    "invoice_payment_confirmation": {
        **INVOICE_SAMPLE,
        "payment": {"amount": "1200.00", "date": "2026-03-10", "transaction_id": "T1"},
    },
    "client_signup": {},
    "general_announcement": {"title": "News", "message": "One.\n\nTwo."},
    "service_notice": {"service": "VPS", "headline": "rebooted", "message": "Done."},
    "domain_renewal": {"domain": "example.com", "expiry_date": "2027-01-01"},
}


def test_every_template_has_its_three_parts_and_a_sample() -> None:
    names = template_names((TEMPLATES_DIR,))
    assert set(names) == set(SAMPLES), "add a sample context for each new template"
    for name in names:
        for part in PARTS:
            assert (TEMPLATES_DIR / name / part).is_file(), f"{name}/{part}"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_renders_with_single_line_subject(name: str) -> None:
    rendered = render_email(name, {**BASE_CONTEXT, **SAMPLES[name]})
    assert rendered.subject
    assert "\n" not in rendered.subject
    assert rendered.text.startswith("Dear Ada Lovelace,")
    assert "<p>Dear Ada Lovelace,</p>" in rendered.html
    assert "Test Hosting" in rendered.text


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_variable_is_required(name: str) -> None:
    for missing in SAMPLES[name]:
        context = {**BASE_CONTEXT, **{k: v for k, v in SAMPLES[name].items() if k != missing}}
        with pytest.raises(TemplateError, match=f"'{missing}' is undefined"):
            render_email(name, context)


INVOICE_TEMPLATES = sorted(name for name in SAMPLES if name.startswith("invoice_"))


@pytest.mark.parametrize("name", INVOICE_TEMPLATES)
def test_invoice_emails_carry_the_items_totals_and_invoiced_to_block(name: str) -> None:
    rendered = render_email(name, {**BASE_CONTEXT, **SAMPLES[name]})
    assert "INV-1" in rendered.subject
    for part in (rendered.text, rendered.html):
        for money in ("£1,000.00", "£200.00", "£1,200.00", "£0.00"):
            assert money in part
        for line in ("Charles Babbage", "Difference Engines", "1 Dorset Street", "London W1U 4EG"):
            assert line in part
        assert "accounts@example.com" in part
    # The line items as an HTML table, escaped; the text part keeps them as written.
    assert '<td style="padding: 4px;">Hosting &lt;Pro&gt;</td>' in rendered.html
    assert "<th" in rendered.html
    assert "Hosting <Pro>: £1,000.00" in rendered.text
    assert "Due date: March 15, 2026" in rendered.text


def test_html_is_escaped_text_is_not() -> None:
    context = {**BASE_CONTEXT, "title": "Tom & Jerry", "message": "<script>alert(1)</script>"}
    rendered = render_email("general_announcement", context)
    assert "&lt;script&gt;" in rendered.html
    assert "<script>" not in rendered.html
    assert "Tom &amp; Jerry" in rendered.html
    assert "<script>alert(1)</script>" in rendered.text
    assert rendered.subject == "Tom & Jerry"


def test_multi_line_subject_refused(tmp_path: Path) -> None:
    (tmp_path / "_base").mkdir()
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "subject.txt").write_text("{{ title }}\nBcc: victim@example.com\n")
    (folder / "body.txt").write_text("x")
    (folder / "body.html").write_text("x")
    with pytest.raises(TemplateError, match=r"line break or control character \(U\+000A\)"):
        render_email("broken", {"title": "Hi"}, folders=(tmp_path,))


# Every character Python's str.splitlines() breaks on, and other controls: each would let a
# context variable inject a header, and the email package refuses to write any of them.
@pytest.mark.parametrize(
    "separator", ["\r", "\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029",
                  "\x00", "\x07", "\x1b", "\x7f", "\x9b"],
)  # fmt: skip
def test_a_subject_variable_with_any_line_separator_is_refused(separator: str) -> None:
    context = {**BASE_CONTEXT, "title": f"Hello{separator}Bcc: x@example.org", "message": "Hi"}
    with pytest.raises(TemplateError, match=f"U\\+{ord(separator):04X}"):
        render_email("general_announcement", context)


def test_a_context_value_of_the_wrong_shape_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "_base").mkdir()
    folder = tmp_path / "calls"
    folder.mkdir()
    (folder / "subject.txt").write_text("{{ title() }}")
    (folder / "body.txt").write_text("{% for line in lines %}{{ line.x }}{% endfor %}")
    (folder / "body.html").write_text("x")
    with pytest.raises(TemplateError, match="TypeError: 'str' object is not callable"):
        render_email("calls", {"title": "Hi", "lines": []}, folders=(tmp_path,))


def test_base_is_not_a_sendable_template() -> None:
    with pytest.raises(TemplateError, match="unknown email template '_base'"):
        render_email("_base", BASE_CONTEXT)
