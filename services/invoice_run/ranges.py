"""Keyset ranges of ids: how a pass is split into chunks, and the bounds a chunk pages within."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql import func


@dataclass(frozen=True)
class IdRange:
    after: str  # ids above this one ("" for the first range: every id is above it)
    through: str | None  # up to this one included; None for the last range: no end


def id_range(
    column: InstrumentedAttribute[str], after: str, through: str | None
) -> list[ColumnElement[bool]]:
    """The criteria of ids within the range (above after, up to through)."""
    bounds = [column > after]
    if through is not None:
        bounds.append(column <= through)
    return bounds


def split_ids(
    session: Session,
    column: InstrumentedAttribute[str],
    criteria: Sequence[ColumnElement[bool]],
    size: int,
) -> list[IdRange]:
    """Ranges of about `size` of the ids matching `criteria` now, in id order; none if no id
    matches.

    Together they cover every id, not only those: the first starts below all ids and the last
    has no end, so a row that starts matching after the plan (an invoice upserted meanwhile)
    still lies in a range. One query: the ids are numbered in order and only every size-th
    one comes back, so planning a million invoices sends 500 ids, not a million.
    """
    numbered = (
        select(
            column.label("id"),
            func.row_number().over(order_by=column).label("n"),
            func.count().over().label("total"),
        )
        .where(*criteria)
        .subquery()
    )
    rows = session.execute(
        select(numbered.c.id, numbered.c.n, numbered.c.total)
        .where(or_(numbered.c.n % size == 0, numbered.c.n == numbered.c.total))
        .order_by(numbered.c.n)
    ).all()
    if not rows:
        return []
    # The last matching id ends no range: the last range runs on past it.
    ends = [row.id for row in rows if row.n % size == 0 and row.n < row.total]
    throughs: list[str | None] = [*ends, None]
    return [IdRange(after, through) for after, through in zip(["", *ends], throughs, strict=True)]
