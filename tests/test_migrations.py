"""Alembic migrations: they build exactly the schema the models declare, up and down."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from models import Base
from models.engine import make_engine
from workers import migrate

HEAD = migrate.head()


# SQLite cannot reflect expression indexes (lower(email)) and says so; PostgreSQL compares them.
@pytest.mark.filterwarnings(
    "ignore:Skipped unsupported reflection of expression-based index",
    "ignore:autogenerate skipping metadata-specified expression-based index",
)
@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_migrated_schema_matches_models(
    backend: str, new_postgres_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_postgres_database() if backend == "postgres" else f"sqlite:///{tmp_path}/m.db"
    migrate.upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []
    assert migrate.current(url) == HEAD


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_downgrade_to_base_and_up_again(
    backend: str, new_postgres_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_postgres_database() if backend == "postgres" else f"sqlite:///{tmp_path}/m.db"
    migrate.upgrade(url)
    migrate.downgrade(url, "base")
    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(url)
    assert "clients" in inspect(engine).get_table_names()
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_holders_keep_their_invoice_choice_and_receive_the_other_categories(
    backend: str, new_postgres_database: Callable[[], str], tmp_path: Path
) -> None:
    """0008 keeps invoice_emails as the holder's invoice flag and adds the other four, on."""
    url = new_postgres_database() if backend == "postgres" else f"sqlite:///{tmp_path}/m.db"
    if backend == "postgres":  # made at head: 0008's downgrade takes it back
        migrate.downgrade(url, "0007")
    else:
        migrate.upgrade(url, "0007")
    engine = make_engine(url)
    with engine.begin() as conn:
        for client_id, invoice_emails in (("C1", True), ("C2", False)):
            conn.execute(
                text(
                    "INSERT INTO clients (id, firstname, lastname, email, address1, city, state,"
                    " postcode, country, phonenumber, status, invoice_emails, created_at,"
                    " updated_at) VALUES (:id, 'A', 'L', :email, 'a', 'c', 's', 'p', 'GB',"
                    " '+44 1', 'Active', :invoice, :now, :now)"
                ),
                {"id": client_id, "email": f"{client_id}@example.com", "invoice": invoice_emails,
                 "now": datetime(2026, 11, 29, tzinfo=UTC)},
            )  # fmt: skip
    migrate.upgrade(url)
    flags = "general_emails, product_emails, domain_emails, invoice_emails, support_emails"
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT id, {flags} FROM clients ORDER BY id")).all()
    engine.dispose()
    assert [(row[0], *map(bool, row[1:])) for row in rows] == [
        ("C1", True, True, True, True, True),
        ("C2", True, True, True, False, True),
    ]


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_an_open_run_keeps_exact_counts_across_0012(
    backend: str, new_postgres_database: Callable[[], str], tmp_path: Path
) -> None:
    """0012: a run open at the upgrade had every chunk, pending ones too, summed into its
    counts; after it the run has its ended chunks' counts and a pending chunk's are still to
    add (its `unfolded`), so its end adds them once."""
    url = new_postgres_database() if backend == "postgres" else f"sqlite:///{tmp_path}/m.db"
    if backend == "postgres":  # made at head
        migrate.downgrade(url, "0011")
    else:
        migrate.upgrade(url, "0011")
    engine = make_engine(url)
    done = {"generated": 0, "notices": {"invoice_created": 3}, "emails": 3, "problems": ["a"],
            "batches": {"notify": 1}, "queries_per_batch": {"notify": 9}}
    pending = {"generated": 0, "notices": {"invoice_created": 2}, "emails": 2, "problems": [],
               "batches": {"notify": 1}, "queries_per_batch": {"notify": 7}}
    summed = {"generated": 0, "notices": {"invoice_created": 5}, "emails": 5, "problems": ["a"],
              "batches": {"notify": 2}, "queries_per_batch": {"notify": 9},
              "chunks": {"planned": 2, "done": 1, "failed": 0}}  # fmt: skip
    now = datetime(2026, 11, 29, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scheduled_runs (id, name, run_date, status, started_at, counts)"
                " VALUES (1, 'invoices.run', '2026-11-29', 'running', :now, :counts)"
            ),
            {"now": now, "counts": json.dumps(summed)},
        )
        for seq, status, counts in ((1, "done", done), (2, "pending", pending)):
            conn.execute(
                text(
                    "INSERT INTO scheduled_run_chunks (run_id, phase, seq, after_id, status,"
                    " counts, created_at) VALUES (1, 'notify', :seq, '', :status, :counts, :now)"
                ),
                {"seq": seq, "status": status, "counts": json.dumps(counts), "now": now},
            )
    migrate.upgrade(url)
    with engine.connect() as conn:
        run_counts = conn.execute(text("SELECT counts FROM scheduled_runs")).scalar_one()
        unfolded = conn.execute(
            text("SELECT seq, unfolded FROM scheduled_run_chunks ORDER BY seq")
        ).all()
    engine.dispose()

    def loaded(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    assert loaded(run_counts) == {**done, "chunks": {"planned": 2, "done": 1, "failed": 0}}
    assert [(seq, loaded(value)) for seq, value in unfolded] == [(1, {}), (2, pending)]
