"""Engine creation, sessions and migrations. SQLite by default, PostgreSQL (psycopg 3) in production."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 7_462_001  # advisory lock id: replicas starting together migrate one at a time


def make_engine(url: str, *, pool_size: int | None = None, pool_timeout: float | None = None, **kwargs) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout so replicas/threads coexist.

    ``pool_size`` is the whole pool (no overflow): the request gate in ``broker.storage.gate`` admits
    fewer requests than there are connections, so a request never waits for a connection held by a
    request that waits for a thread. ``pool_timeout`` bounds any wait that does happen (503, not a wedge).
    """
    pooled = not url.startswith("sqlite:///:memory:") and url not in ("sqlite://", "sqlite:///")
    if pooled and pool_size is not None:
        kwargs.setdefault("pool_size", pool_size)
        kwargs.setdefault("max_overflow", 0)
    if pooled and pool_timeout is not None:
        kwargs.setdefault("pool_timeout", pool_timeout)
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and pooled:
            _create_private_file(Path(url.removeprefix("sqlite:///").split("?", 1)[0]))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every sqlite test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        if pooled:
            from broker.storage.sqlite_lock import install

            install(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _create_private_file(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does (it would use the umask, typically 0644); its
    -wal and -shm files inherit the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def alembic_config(engine: Engine):
    from alembic.config import Config  # imported when migrating only: ~0.3 s of every start-up otherwise

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def _declared_heads() -> set[str]:
    """The migration heads, read from the revision files' ``revision`` / ``down_revision`` /
    ``depends_on`` lines (cheap: no alembic import)."""
    import ast
    import re

    revisions, parents = set(), set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for name, value in re.findall(r"^(revision|down_revision|depends_on)\s*=\s*(.+?)\s*(?:#.*)?$",
                                      path.read_text(encoding="utf-8"), re.M):
            parsed = ast.literal_eval(value)
            found = {parsed} if isinstance(parsed, str) else set(parsed or ())
            (revisions if name == "revision" else parents).update(found)
    return revisions - parents


def _at_heads(engine: Engine) -> bool:
    """Whether the database already stands at every head, so start-up can skip alembic (~0.5 s)."""
    try:
        with engine.connect() as conn:
            stored = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
    except Exception:  # noqa: BLE001 - no table yet (a fresh database) or unreadable: migrate
        return False
    return bool(stored) and stored == _declared_heads()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision of every feature branch ("heads")."""
    if _at_heads(engine):
        return
    from alembic import command

    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = alembic_config(engine)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "heads")
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()
    else:
        with _sqlite_migration_lock(engine):
            command.upgrade(cfg, "heads")


@contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes (``serve --workers N`` starting
    together on a fresh data dir), as the advisory lock does on PostgreSQL."""
    database = engine.url.database
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        fcntl = None
    if fcntl is None or not database or database == ":memory:":
        yield
        return

    lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A unit of work: committed when the block succeeds, rolled back when it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def utcnow():
    """Timezone-aware now, the default for every timestamp column."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
