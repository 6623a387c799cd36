"""INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite, telling which rows went in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

Insert = postgresql.Insert | sqlite.Insert


def insert_into(session: Session, target: Any) -> Insert:
    """INSERT for the session's database, with its ON CONFLICT clauses (PostgreSQL or
    SQLite); `target` is a table or a mapped class, as for sqlalchemy.insert."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(target)
    return sqlite.insert(target)


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
    statement = (
        insert_into(session, table)
        .on_conflict_do_nothing(index_elements=[table.c[name] for name in key])
        .returning(*(table.c[name] for name in key))
    )
    result = session.execute(statement, rows)
    return {tuple(row) for row in result}
