"""One-time use of client assertions and proofs of possession (``jti``), shared by every replica.

Redis when configured (SET NX with expiry), else the database: a unique row per jti written in the
*caller's* transaction (``INSERT … ON CONFLICT DO NOTHING``), never in a second session — a nested
session inside a request needs a second pooled connection, and at full load every connection is
held by a request waiting for its second one (the broker wedged). A claim in the caller's
transaction becomes permanent when that transaction commits; a concurrent claim of the same key
waits for it (unique index) and then sees the row.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Protocol

from sqlalchemy import delete, insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session

from twinspace.errors import ServiceUnavailable
from broker.identity.models import UsedAssertion
from broker.storage.db import session_scope
from broker.storage.sqlite_lock import end_write

# Expired rows are purged by about one claim in PURGE_EVERY (bounded table, no write per claim).
PURGE_EVERY = 512


class ReplayStoreUnavailable(ServiceUnavailable):
    default_code = "replay_store_unavailable"


class ReplayStore(Protocol):
    def claim(self, key: str, ttl_seconds: int, session: Session | None = None) -> bool:
        """Record ``key``; False when it was seen before (a replay)."""


class DatabaseReplayStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def claim(self, key: str, ttl_seconds: int, session: Session | None = None) -> bool:
        if session is None:  # CLI and tests: a unit of work of its own
            with session_scope(self.engine) as own:
                return self.claim(key, ttl_seconds, own)
        now = datetime.now(timezone.utc)
        table = UsedAssertion.__table__
        dialect = session.get_bind().dialect.name
        values = {"key": key, "expires_at": now + timedelta(seconds=ttl_seconds)}
        if dialect == "postgresql":
            stmt = pg_insert(table).values(**values).on_conflict_do_nothing(index_elements=["key"])
        elif dialect == "sqlite":
            stmt = sqlite_insert(table).values(**values).on_conflict_do_nothing(index_elements=["key"])
        else:  # pragma: no cover - other databases: a plain insert (IntegrityError on a replay)
            stmt = insert(table).values(**values)
        connection = session.connection()
        # SQLite has one write lock per database: a claim in a transaction that has not written yet
        # commits at once instead of holding that lock through the rest of the request.
        commit_now = dialect == "sqlite" and not connection.connection.dbapi_connection.in_transaction
        # RETURNING, not rowcount: psycopg reports -1 for a conflict-ignoring insert through SQLAlchemy.
        claimed = session.execute(stmt.returning(table.c.key)).first() is not None
        if claimed and random.randrange(PURGE_EVERY) == 0:
            session.execute(delete(table).where(table.c.expires_at < now))
        if commit_now:
            connection.connection.dbapi_connection.commit()
            end_write(connection)
        return claimed


class RedisReplayStore:
    def __init__(self, url: str, timeout: float = 0.5, retry_after: int = 2):
        import redis

        # Short socket timeouts: a dead Redis must answer 503 quickly, not hold a thread for minutes.
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.retry_after = retry_after

    def claim(self, key: str, ttl_seconds: int, session: Session | None = None) -> bool:
        import redis

        try:
            return bool(self.client.set(f"twinspace:jti:{key}", b"1", nx=True, ex=max(1, ttl_seconds)))
        except redis.RedisError:
            raise ReplayStoreUnavailable("Replay protection (Redis) is unavailable; retry shortly.",
                                         extra={"retry_after": self.retry_after}) from None

    def ping(self) -> None:
        self.client.ping()


def make_replay_store(redis_url: str | None, engine: Engine, retry_after: int = 2) -> ReplayStore:
    return RedisReplayStore(redis_url, retry_after=retry_after) if redis_url else DatabaseReplayStore(engine)
