"""Keeps email addresses out of ops records that outlive the email (dead letters, run errors).

An SMTP reply names the recipient ("550 <ada@example.org>: no such user") and an exception
can quote a value; both end up in error text that ops keep for months and paste into tickets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Loose on purpose: anything shaped like local@domain.tld is hidden, valid or not.
_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:@]+@[^\s<>()\[\]\"',;:@]+\.[^\s<>()\[\]\"',;:@]+")
HIDDEN = "<address>"


def redact_addresses(text: str) -> str:
    return _ADDRESS.sub(HIDDEN, text)


def ids_only(kwargs: Mapping[str, object]) -> str:
    """What task events and worker logs show of a task's arguments: its ids, not the data.

    Celery puts `kwargsrepr` in every task-sent and task-received event (Flower keeps them)
    and in its log lines; by default that is the whole payload, names and addresses included.
    """
    shown = {k: v for k, v in kwargs.items() if k == "event_id" or k.endswith(("_id", "_ids"))}
    hidden = len(kwargs) - len(shown)
    text = ", ".join(f"{k}={v!r}" for k, v in shown.items())
    return f"{{{text}{', ' if text and hidden else ''}{f'+{hidden} fields' if hidden else ''}}}"
