"""Writes the audit trail row that goes with every change to a client or its contacts."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from models.contracts import Event
from models.records import AuditEvent


def record_change(session: Session, task_name: str, event: Event, changes: dict[str, Any]) -> None:
    session.add(
        AuditEvent(
            client_id=event.client_id,
            event_id=event.event_id,
            action=task_name,
            actor_kind=event.actor.kind,
            actor_client_id=event.actor.client_id,
            # Amounts and dates (Decimal, date) are kept as their exact text.
            changes=json.loads(json.dumps(changes, default=str)),
        )
    )


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """{field: [old, new]} for the fields whose value actually changed."""
    return {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
