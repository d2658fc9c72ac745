"""What one broker process holds: settings, the database engine, the broker key, the replay store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine
from sqlmodel import Session

from twinspace.crypto import key_id, load_or_create_private_key, public_key_b64
from broker.identity.replay import ReplayStore, make_replay_store
from broker.settings import Settings
from broker.storage.db import make_engine, migrate
from broker.storage.gate import DbGate


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    broker_key: Ed25519PrivateKey
    replay: ReplayStore
    # Whether a policy id names a policy the broker can decide: the catalog checks offers with it but sits
    # below the policy feature, so the app wires it in (deny by default: no policy is known).
    known_policy: Callable[[Session, str], bool] = lambda session, policy_id: False
    gate: DbGate | None = None
    # Rate limits (per org, per IP; broker.api.ratelimit), set by the app factory.
    limiter: Any = None

    def __post_init__(self) -> None:
        if self.gate is None:
            s = self.settings
            self.gate = DbGate(s.db_pool_size, s.db_slot_timeout_seconds, s.retry_after_seconds, self.worker_threads)

    @classmethod
    def start(cls, settings: Settings, *, run_migrations: bool = True) -> "Runtime":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            settings.data_dir.chmod(0o700)  # keys and the SQLite file live here
        except OSError:  # pragma: no cover - not ours to change (e.g. a mounted volume)
            pass
        engine = make_engine(settings.effective_database_url,
                             pool_size=settings.db_pool_size + settings.db_pool_reserve,
                             pool_timeout=settings.db_pool_timeout_seconds)
        if run_migrations:
            migrate(engine)
        key = load_or_create_private_key(settings.effective_broker_key_file)
        return cls(settings=settings, engine=engine, broker_key=key,
                   replay=make_replay_store(settings.redis_url, engine, settings.retry_after_seconds))

    @property
    def worker_threads(self) -> int:
        """Thread-pool size: always above the number of database slots (see broker.storage.gate)."""
        s = self.settings
        return max(s.worker_threads or 2 * s.db_pool_size + 16, s.db_pool_size + 8)

    @cached_property
    def broker_kid(self) -> str:
        return key_id(self.broker_key.public_key())

    @cached_property
    def broker_public_jwk(self) -> dict[str, str]:
        pub = self.broker_key.public_key()
        return {"kty": "OKP", "crv": "Ed25519", "x": public_key_b64(pub), "kid": self.broker_kid,
                "alg": "EdDSA", "use": "sig"}
