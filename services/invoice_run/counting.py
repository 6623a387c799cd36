"""Counts the SQL statements a batch sends, so a run can report its queries per batch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session


@dataclass
class StatementCounter:
    count: int = 0

    def __call__(self, *_: Any) -> None:
        self.count += 1


@contextmanager
def counting_statements(session: Session) -> Iterator[StatementCounter]:
    """Every statement on this session's connection while inside (an executemany is one)."""
    connection = session.connection()
    counter = StatementCounter()
    event.listen(connection, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        event.remove(connection, "before_cursor_execute", counter)
