"""The Alembic migrations produce exactly the schema the SQLModel tables declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import broker.storage.all_models  # noqa: F401
from broker.storage.db import make_engine, migrate


def test_migrated_schema_matches_models(tmp_path, database_url):
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert diff == [], f"migrations and models differ: {diff}"
