"""kombu's Redis transport, made to survive a queue entry that is not a kombu message.

Anything can LPUSH into a Redis list. kombu pops the entry and parses it inside the consumer
loop; an entry that is not a JSON envelope raises there and Celery stops the worker with
"Unrecoverable error". This channel records such an entry as a rejected event and carries on.
"""

from __future__ import annotations

import binascii
import json
import logging
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

# What parsing a foreign entry raises: not JSON or not UTF-8 (ValueError, UnicodeDecodeError),
# JSON of the wrong shape (TypeError, KeyError, AttributeError), a body that is not base64.
MALFORMED = (ValueError, TypeError, KeyError, AttributeError, binascii.Error)


class ForeignEntry(ValueError):
    """A JSON entry that is not a kombu envelope; carries the entry for the record."""

    def __init__(self, entry: Any, problem: str) -> None:
        super().__init__(problem)
        self.entry = entry


class CheckedMessage(virtual.Message):
    # The envelope is checked before kombu reads it: kombu's KeyError for a missing field
    # would otherwise be taken for a lost connection (KeyError is among its connection
    # errors) and the entry dropped without a trace.
    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict):
            raise ForeignEntry(payload, "not a kombu envelope (no 'properties' object)")
        try:
            super().__init__(payload, channel, **kwargs)
        except MALFORMED as exc:
            raise ForeignEntry(payload, f"{type(exc).__name__}: {exc}") from exc


def _raw_entry(exc: BaseException) -> str:
    if isinstance(exc, ForeignEntry):
        return json.dumps(exc.entry, ensure_ascii=True, default=repr)
    raw: Any = getattr(exc, "doc", None) or getattr(exc, "object", None)
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "backslashreplace")
    return str(raw) if raw is not None else "(not available once parsed)"


class Channel(kombu_redis.Channel):
    Message = CheckedMessage

    # The type stubs for kombu do not describe the Redis channel's internals used here.
    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[misc]
        except ForeignEntry as exc:
            from workers.consumer import record_foreign_entry

            record_foreign_entry(_raw_entry(exc), str(exc))
            return True
        except self.connection_errors:  # type: ignore[attr-defined]
            raise
        except MALFORMED as exc:
            from workers.consumer import record_foreign_entry

            record_foreign_entry(_raw_entry(exc), f"{type(exc).__name__}: {exc}")
            return True  # the entry was consumed; the loop goes on


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make redis:// URLs in this process use the transport above."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
