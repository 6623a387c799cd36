"""INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite, telling which rows went in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_new_rows(
    session: Session, table: Table, rows: list[dict[str, Any]], key: tuple[str, ...]
) -> set[tuple[Any, ...]]:
    """Insert rows, skip those whose key already exists, return the keys of the rows inserted.

    One statement per call (SQLAlchemy pages it only past the driver's parameter limits). A
    concurrent transaction inserting the same key makes PostgreSQL wait for it and then skip
    the row, so of two racing callers exactly one gets each key back: that is what makes an
    effect guarded by such a row exactly-once.
    """
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(table)
        .on_conflict_do_nothing(index_elements=[table.c[name] for name in key])
        .returning(*(table.c[name] for name in key))
    )
    result = session.execute(statement, rows)
    return {tuple(row) for row in result}
