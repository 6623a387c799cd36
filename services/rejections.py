"""Records refused events where ops can list them, with a reason a person can act on."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from models.records import RejectedEvent
from services.db import SessionFactory

MAX_PAYLOAD_CHARS = 65_536
MAX_REASON_CHARS = 4_000


def describe_validation_error(exc: ValidationError, what: str = "invalid event") -> str:
    """One line per problem, `field: message`, without echoing the (possibly huge) input."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in error["loc"]) or "payload"
        problems.append(f"{location}: {error['msg']}")
    return f"{what}: " + "; ".join(problems)


def printable(text: str, limit: int) -> str:
    """Safe for any database text column: no NULs, no lone surrogates, at most `limit` long
    (a cut one says how much is missing, within the limit: the columns are that wide)."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if len(safe) <= limit:
        return safe
    marker = f"... [{len(safe)} chars]"
    return safe[: max(limit - len(marker), 0)] + marker[:limit]


def payload_json(payload: Any) -> str:
    # ensure_ascii escapes every non-ASCII character, so bytes that were never UTF-8 survive.
    return json.dumps(payload, ensure_ascii=True, default=repr)


def event_id_of(payload: Any) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get("event_id"), str):
        return printable(payload["event_id"], 120)
    return None


def record_rejection(
    session_factory: SessionFactory,
    task_name: str,
    payload: Any,
    reason: str,
    event_id: str | None = None,
) -> RejectedEvent:
    full = payload_json(payload)
    row = RejectedEvent(
        event_id=printable(event_id, 120) if event_id else event_id_of(payload),
        task_name=printable(task_name, 60),
        payload=printable(full, MAX_PAYLOAD_CHARS),
        reason=printable(reason, MAX_REASON_CHARS),
    )
    with session_factory() as session:
        session.add(row)
        session.commit()
    return row
