"""Alembic migrations: they build exactly the schema the models declare, up and down."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

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
