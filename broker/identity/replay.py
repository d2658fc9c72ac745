"""One-time use of client assertions (``jti``), shared by every broker replica.

Redis when configured (SET NX with expiry), else the database (a unique row per jti).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Engine

from broker.identity.models import UsedAssertion
from broker.storage.db import session_scope


class ReplayStore(Protocol):
    def claim(self, key: str, ttl_seconds: int) -> bool:
        """Record ``key``; False when it was seen before (a replay)."""


class DatabaseReplayStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def claim(self, key: str, ttl_seconds: int) -> bool:
        now = datetime.now(timezone.utc)
        try:
            with session_scope(self.engine) as session:
                session.add(UsedAssertion(key=key, expires_at=now + timedelta(seconds=ttl_seconds)))
        except IntegrityError:
            return False
        self._purge(now)
        return True

    def _purge(self, now: datetime) -> None:
        with session_scope(self.engine) as session:
            session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < now))


class RedisReplayStore:
    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url)

    def claim(self, key: str, ttl_seconds: int) -> bool:
        return bool(self.client.set(f"twinspace:jti:{key}", b"1", nx=True, ex=max(1, ttl_seconds)))

    def ping(self) -> None:
        self.client.ping()


def make_replay_store(redis_url: str | None, engine: Engine) -> ReplayStore:
    return RedisReplayStore(redis_url) if redis_url else DatabaseReplayStore(engine)
