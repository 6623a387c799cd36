"""Every email template renders, with single-line subjects, escaped HTML and strict variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.mail.render import PARTS, TEMPLATES_DIR, TemplateError, render_email, template_names

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
}
SAMPLES: dict[str, dict[str, Any]] = {
    "client_signup": {},
    "general_announcement": {"title": "News", "message": "One.\n\nTwo."},
    "service_notice": {"service": "VPS", "headline": "rebooted", "message": "Done."},
    "domain_renewal": {"domain": "example.com", "expiry_date": "2027-01-01"},
}


def test_every_template_has_its_three_parts_and_a_sample() -> None:
    names = template_names()
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
    with pytest.raises(TemplateError, match="multi-line subject"):
        render_email("broken", {"title": "Hi"}, templates_dir=tmp_path)


def test_base_is_not_a_sendable_template() -> None:
    with pytest.raises(TemplateError, match="unknown email template '_base'"):
        render_email("_base", BASE_CONTEXT)
