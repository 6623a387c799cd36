"""The worker's consumer, extended so no malformed message is dropped without a record.

Celery logs and acknowledges messages it cannot decode, and messages naming a task it does not
know; both would vanish from everything but the log. Here each is also written to the
rejected events, with what could be read of it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from celery.worker.consumer import Consumer

from services.rejections import record_rejection

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 65_536


def _readable_body(message: Any) -> str:
    body = getattr(message, "body", b"")
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogateescape")
    raw = bytes(body[:MAX_BODY_BYTES])
    return raw.decode("utf-8", "backslashreplace")


def _record(task_name: str, message: Any, reason: str) -> None:
    from workers import runtime

    headers = getattr(message, "headers", None) or {}
    try:
        record_rejection(
            runtime.session_factory(),
            task_name,
            {"headers": {k: str(v) for k, v in headers.items()}, "body": _readable_body(message)},
            reason,
            event_id=str(headers["id"]) if "id" in headers else None,
        )
    except Exception:
        # Never let bookkeeping take the consumer down; Celery's own log line remains.
        log.exception("could not record a malformed message")


def record_foreign_entry(raw: str, error: str) -> None:
    """A queue entry that is not a kombu message at all (see workers/redis_transport.py)."""
    from workers import runtime

    try:
        record_rejection(
            runtime.session_factory(),
            "<not a message>",
            {"entry": raw[:MAX_BODY_BYTES]},
            f"queue entry is not a Celery message: {error}",
        )
    except Exception:
        log.exception("could not record a foreign queue entry")


class RecordingConsumer(Consumer):
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _record(
            "<undecodable>",
            message,
            f"message body cannot be decoded ({message.content_type}): {exc}",
        )
        super().on_decode_error(message, exc)


@signals.task_unknown.connect
def _unknown_task(name: str | None = None, message: Any = None, **_: Any) -> None:
    _record(str(name or "<unknown>"), message, f"unknown task {name!r}: no such event")


@signals.task_rejected.connect
def _invalid_message(message: Any = None, exc: Exception | None = None, **_: Any) -> None:
    _record("<invalid>", message, f"message is not a valid task message: {exc}")
