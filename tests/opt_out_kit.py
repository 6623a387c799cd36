"""Shared by the opt-out tests: a policy as the settings would give it, applying events with
it, and reading the token out of a List-Unsubscribe URL."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from conftest import COMPANY, Publisher
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.records import AuditEvent, RejectedEvent
from services.db import SessionFactory
from services.dispatch import Result, process_event
from services.opt_outs import OptOutPolicy

SECRET = b"s" * 32
URL = "https://billing.example.com/unsubscribe?token={token}"
# A fixed "now" (2026-11-30T00:00:00Z) for tokens whose expiry a test checks.
NOW = 1_795_996_800.0


def policy(
    *required: str, url: str = URL, secret: bytes = SECRET, now: float | None = None
) -> OptOutPolicy:
    made = OptOutPolicy(required=frozenset(required), unsubscribe_url=url, secret=secret)
    return made if now is None else replace(made, clock=lambda: now)


ApplyWith = Callable[[OptOutPolicy, str, dict[str, Any]], Result]


def apply_with(session_factory: SessionFactory, publisher: Publisher) -> ApplyWith:
    """process_event as a worker runs it with `opt_outs` from its settings (JSON round trip)."""

    def run(opt_outs: OptOutPolicy, task_name: str, payload: dict[str, Any]) -> Result:
        return process_event(
            task_name,
            json.loads(json.dumps(payload)),
            session_factory=session_factory,
            publish=publisher,
            company_name=COMPANY,
            opt_outs=opt_outs,
        )

    return run


def token_of(list_unsubscribe: str) -> str:
    """The token in a List-Unsubscribe value ("<URL>") or a bare URL made from URL."""
    query = urlsplit(list_unsubscribe.strip("<>")).query
    (token,) = parse_qs(query)["token"]
    return token


def rejection_reasons(db: Session, event_id: str) -> list[str]:
    db.expire_all()
    rows = db.scalars(select(RejectedEvent).where(RejectedEvent.event_id == event_id))
    return [row.reason for row in rows]


def audit_changes(db: Session, action: str) -> list[dict[str, Any]]:
    db.expire_all()
    rows = db.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
    )
    return [row.changes for row in rows]
