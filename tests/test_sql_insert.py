"""services.sql: rows inserted in one statement whose text does not grow with them, every
column type of the hot path's tables read back as written, and ON CONFLICT's answer."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import payloads
import pytest
from conftest import Apply
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Invoice
from models.base import table_of
from models.records import ProcessedEvent
from services.sql import insert_new_rows, insert_rows

INVOICES = table_of(Invoice)


def invoice_row(day: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"INV-{day}",
        "client_id": "C1",
        "number": str(day),
        "date": date(2026, 3, day),
        "due_date": date(2026, 4, day),
        "currency": "GBP",
        # JSON that is a list: one value, not a second dimension of the array.
        "items": [{"description": f"Hosting {day}", "amount": "12.50"}, {"n": [1, 2]}],
        "subtotal": Decimal("12.50"),
        "tax": Decimal(0),
        "total": Decimal("12.50"),
        "balance": Decimal("12.50"),
        "status": "Unpaid",
        "date_paid": None,
        "service_id": None if day % 2 else f"S{day}",
        **fields,
    }


# Seven invoices are 98 parameters: arrays on PostgreSQL; two, 28: a VALUES list.
@pytest.mark.parametrize("count", [7, 2])
def test_rows_of_every_column_type_read_back_as_written_and_only_new_keys_come_back(
    apply: Apply, db: Session, count: int
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    rows = [invoice_row(n) for n in range(1, count + 1)]
    assert insert_new_rows(db, INVOICES, rows, ("id",)) == {(row["id"],) for row in rows}
    again = [invoice_row(n, number="changed") for n in range(count - 1, count + 3)]
    assert insert_new_rows(db, INVOICES, again, ("id",)) == {
        (f"INV-{n}",) for n in (count + 1, count + 2)
    }
    db.commit()

    stored = {invoice.id: invoice for invoice in db.scalars(select(Invoice))}
    assert sorted(stored) == sorted(f"INV-{n}" for n in range(1, count + 3))
    for row in rows:
        invoice = stored[row["id"]]
        assert {name: getattr(invoice, name) for name in row} == row
        # Left out of the rows: their defaults, as in a VALUES insert.
        assert invoice.created_at is not None
        assert invoice.updated_at is not None
    assert stored[f"INV-{count}"].number == str(count)  # a row already there is left as it was


def test_rows_go_in_in_their_order(db: Session) -> None:
    # services.clients inserts in id order, so that two batches lock the same ids in one order.
    now = datetime(2026, 3, 1, tzinfo=UTC)
    rows = [
        {"event_id": f"E{n}.{k}", "task_name": "t", "payload_sha256": "0" * 64, "processed_at": now}
        for k in range(4)
        for n in (5, 3, 9, 1, 7)
    ]  # 80 parameters: arrays on PostgreSQL
    table = table_of(ProcessedEvent)
    insert, parameters = insert_rows(db, table, rows)
    returned = db.execute(insert.returning(table.c.event_id), parameters).scalars().all()
    assert returned == [row["event_id"] for row in rows]


def test_rows_with_different_columns_are_refused(db: Session) -> None:
    rows = [invoice_row(1), invoice_row(2)]
    del rows[1]["date_paid"]
    with pytest.raises(ValueError, match="the same columns"):
        insert_rows(db, INVOICES, rows)


def test_on_postgresql_the_statement_is_the_same_however_many_rows(db: Session) -> None:
    if db.get_bind().dialect.name != "postgresql":
        return  # SQLite takes the rows as they are
    statements = set()
    for count in (4, 64, 500):  # from 4 invoices on: 56 parameters and more
        insert, parameters = insert_rows(
            db, INVOICES, [invoice_row(n % 28 + 1) for n in range(count)]
        )
        assert isinstance(parameters, dict)
        assert sorted(parameters) == sorted(invoice_row(1))  # a parameter per column
        assert all(len(values) == count for values in parameters.values())
        statements.add(str(insert.compile(dialect=db.get_bind().dialect)))
    [statement] = statements
    assert "unnest(" in statement
    assert "VALUES" not in statement
