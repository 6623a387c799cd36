"""The one retry policy: exponential backoff with full jitter, and what counts as transient."""

from __future__ import annotations

import random

from billiard.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from models.settings import get_settings
from services.errors import Transient

# Failures the world may recover from. Anything else is a bug or bad input and is not retried.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    Transient,
    # The task ran out of time (a hung server, a lock held long): the next attempt may not.
    SoftTimeLimitExceeded,
    OperationalError,
    DisconnectionError,
    BrokerError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT_ERRORS)


def backoff_seconds(retries: int) -> float:
    """Full jitter spreads retries of many workers hit by one outage across the window."""
    settings = get_settings()
    ceiling = min(settings.retry_backoff_max, settings.retry_backoff_base * 2**retries)
    return random.uniform(ceiling / 2, ceiling)
