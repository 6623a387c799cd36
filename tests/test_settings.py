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
