"""Settings that would break a guarantee are refused at start-up, with the reason."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from models.settings import Settings


def test_the_defaults_are_consistent() -> None:
    settings = Settings()
    assert settings.retry_backoff_max < settings.redis_visibility_timeout
    assert settings.redis_visibility_timeout < settings.email_redeliver_after_seconds


def test_a_visibility_timeout_below_the_longest_retry_is_refused() -> None:
    with pytest.raises(ValidationError, match="must exceed retry_backoff_max"):
        Settings(retry_backoff_max=600, redis_visibility_timeout=300)


def test_redelivering_forgotten_emails_before_redis_restores_them_is_refused() -> None:
    with pytest.raises(ValidationError, match="must exceed redis_visibility_timeout"):
        Settings(redis_visibility_timeout=3600, email_redeliver_after_seconds=600)


def test_required_email_categories_are_a_comma_separated_list_of_the_five(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().required_email_categories == frozenset()
    monkeypatch.setenv("CLIENTFLOW_REQUIRED_EMAIL_CATEGORIES", "invoice, support")
    assert Settings().required_email_categories == {"invoice", "support"}
    monkeypatch.setenv("CLIENTFLOW_REQUIRED_EMAIL_CATEGORIES", "invoice,billing")
    with pytest.raises(ValidationError, match="Input should be 'general', 'product'"):
        Settings()


SECRET = "k" * 32


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://billing.example.com/u?token={token}", "must be an https:// URL"),
        ("https://billing.example.com/unsubscribe", "must contain {token} once"),
        ("https://b.example/{token}/{token}", "must contain {token} once"),
        ("https://b.example/u?token={token}&x=a b", "must not contain spaces"),
        ("https://b.example/u?token={token}\r\nBcc: x@example.org", "must not contain spaces"),
        ("https://b.example/" + "x" * 600 + "?token={token}", "is too long"),
    ],
)
def test_an_unsubscribe_url_that_could_not_work_is_refused(url: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Settings(unsubscribe_url=url, unsubscribe_secret=SECRET)


def test_an_unsubscribe_url_needs_a_secret_long_enough_to_be_a_key() -> None:
    url = "https://billing.example.com/unsubscribe?token={token}"
    assert Settings(unsubscribe_url=url, unsubscribe_secret=SECRET).unsubscribe_url == url
    with pytest.raises(ValidationError, match="unsubscribe_url needs unsubscribe_secret"):
        Settings(unsubscribe_url=url)
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(unsubscribe_url=url, unsubscribe_secret="short")


def test_the_secret_is_not_shown_where_settings_are_printed() -> None:
    assert SECRET not in repr(Settings(unsubscribe_secret=SECRET))


def test_the_company_address_is_lines_without_control_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().company_address == ()
    assert Settings().invoice_pdf is True
    monkeypatch.setenv("CLIENTFLOW_COMPANY_ADDRESS", " 1 Main Street, Unit 4 \\nLondon W1 1AA\\n ")
    assert Settings().company_address == ("1 Main Street, Unit 4", "London W1 1AA")
    monkeypatch.setenv("CLIENTFLOW_COMPANY_ADDRESS", "1 Main Street\x1b[2J\\nLondon")
    with pytest.raises(ValidationError, match="must not contain control characters"):
        Settings()
