"""INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite, telling which rows went in."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

Insert = postgresql.Insert | sqlite.Insert
# What an insert of rows is executed with: a list of arrays by column (PostgreSQL), or the
# rows (SQLite).
Parameters = dict[str, list[Any]] | list[dict[str, Any]]


# psycopg caches the conversion of a statement of up to this many parameters
# (psycopg._queries.MAX_CACHED_STATEMENT_PARAMS). Up to it a VALUES list is the cheaper
# insert: a lone client's row went in for 0.54 ms of this process's CPU that way, 0.75 ms
# through arrays (psycopg dumps each array in Python); from three clients the arrays win.
_PSYCOPG_CACHED_PARAMETERS = 50


def insert_into(session: Session, target: Any) -> Insert:
    """INSERT for the session's database, with its ON CONFLICT clauses (PostgreSQL or
    SQLite); `target` is a table or a mapped class, as for sqlalchemy.insert."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(target)
    return sqlite.insert(target)


def insert_rows(
    session: Session, table: Table, rows: list[dict[str, Any]]
) -> tuple[Insert, Parameters]:
    """An INSERT of rows (each with the same columns), and what to execute it with; its
    ON CONFLICT and RETURNING clauses are the caller's to add.

    On PostgreSQL the rows come from unnest() over an array per column, in their order: the
    statement's text and its parameters are the same few however many rows, where a VALUES
    list grows with them. psycopg caches the conversion of a statement's placeholders only up
    to 50 parameters and 4,096 characters and parses a longer one again on every execution:
    for a batch of more than two clients that was 14.5 % of a pool process's time in the
    clients.add profile (bench/README.md, twelfth session). Columns left out get their
    defaults, as in a VALUES insert. Rows of fewer parameters than psycopg caches, and
    SQLite's, go in as a VALUES list.
    """
    names = list(rows[0])
    if any(row.keys() != rows[0].keys() for row in rows):
        # An executemany would take the first row's columns for all of them.
        raise ValueError(f"rows to insert into {table.name} must have the same columns")
    if (
        session.get_bind().dialect.name != "postgresql"
        or len(rows) * len(names) <= _PSYCOPG_CACHED_PARAMETERS
    ):
        return insert_into(session, table), rows
    columns = {name: [row[name] for row in rows] for name in names}
    return _from_arrays(table, tuple(names)), columns


# Built once per table and columns: constructing the statement, a SELECT of a function per
# column, cost more than executing it for a lone row.
@lru_cache(maxsize=64)
def _from_arrays(table: Table, names: tuple[str, ...]) -> postgresql.Insert:
    # One dimension: a JSON value that is a list is one element, not a second dimension.
    arrays = {name: postgresql.ARRAY(table.c[name].type, dimensions=1) for name in names}
    source = select(*(func.unnest(bindparam(name, type_=arrays[name])) for name in names))
    return postgresql.insert(table).from_select(names, source)


def insert_new_rows(
    session: Session, table: Table, rows: list[dict[str, Any]], key: tuple[str, ...]
) -> set[tuple[Any, ...]]:
    """Insert rows, skip those whose key already exists, return the keys of the rows inserted.

    One statement per call (insert_rows). A concurrent transaction inserting the same key
    makes PostgreSQL wait for it and then skip the row, so of two racing callers exactly one
    gets each key back: that is what makes an effect guarded by such a row exactly-once.
    """
    if not rows:
        return set()
    insert, parameters = insert_rows(session, table, rows)
    statement = insert.on_conflict_do_nothing(
        index_elements=[table.c[name] for name in key]
    ).returning(*(table.c[name] for name in key))
    result = session.execute(statement, parameters)
    return {tuple(row) for row in result}
