"""Alembic environment: migrates the database named by the caller (see workers/migrate.py)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from models import Base
from models.engine import make_engine

config = context.config
target_metadata = Base.metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = make_engine(config.attributes["url"])
    with engine.connect() as conn:
        run(conn)
    engine.dispose()
