"""The Alembic migrations produce exactly the schema the SQLModel tables declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import broker.all_models  # noqa: F401
from broker.storage.db import make_engine, migrate


def _differences(conn) -> list:
    """Alembic's diff, less the indexes a model declares for another database only
    (``Index(…).ddl_if(dialect=…)``, which ``create_all`` skips there too; alembic does not look)."""
    def for_another_database(d) -> bool:
        if d[0] != "add_index":
            return False
        declared = {ix.name: ix for ix in SQLModel.metadata.tables[d[1].table.name].indexes}.get(d[1].name)
        ddl_if = getattr(declared, "_ddl_if", None)  # (alembic's diff holds a copy without it)
        if ddl_if is None or ddl_if.dialect is None:
            return False
        dialects = (ddl_if.dialect,) if isinstance(ddl_if.dialect, str) else tuple(ddl_if.dialect)
        return conn.dialect.name not in dialects
    return [d for d in compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
            if not for_another_database(d)]


def test_migrated_schema_matches_models(tmp_path, database_url):
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as conn:
        diff = _differences(conn)
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
        assert _differences(conn) == []
    engine.dispose()
