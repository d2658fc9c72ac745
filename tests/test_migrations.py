"""The Alembic migrations produce exactly the schema the SQLModel tables declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import broker.all_models  # noqa: F401
from broker.storage.db import make_engine, migrate


def test_migrated_schema_matches_models(tmp_path, database_url):
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert diff == [], f"migrations and models differ: {diff}"


def _migrate_in_child(url: str, barrier) -> None:
    engine = make_engine(url)
    barrier.wait()
    migrate(engine)
    engine.dispose()


def test_processes_migrating_one_fresh_sqlite_file_together_all_succeed(tmp_path):
    """``twinspace serve --workers N`` on a fresh data dir: every worker migrates at start."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    children = [ctx.Process(target=_migrate_in_child, args=(url, barrier)) for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [c.exitcode for c in children] == [0, 0, 0, 0]
    engine = make_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
    engine.dispose()
