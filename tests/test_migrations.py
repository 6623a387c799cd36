"""Alembic migrations: they build exactly the schema the models declare, up and down."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

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
