"""models.base.table_of: the one way code reaches a model's Core table (for INSERT … ON
CONFLICT, bulk UPDATE and table sizes), typed as a Table instead of cast at each use."""

from __future__ import annotations

from sqlalchemy import Table

from models import Base
from models.base import table_of


def test_every_model_gives_its_own_table_from_the_metadata() -> None:
    models = [mapper.class_ for mapper in Base.registry.mappers]
    assert len(models) == len(Base.metadata.tables)
    for model in models:
        table = table_of(model)
        assert isinstance(table, Table)
        assert table is Base.metadata.tables[table.name]
        assert table is model.__table__
