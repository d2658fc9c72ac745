"""What one broker process holds: settings, the database engine, the broker key, the replay store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine
from sqlmodel import Session

from twinspace.crypto import key_id, load_or_create_private_key, public_key_b64
from broker.identity.replay import ReplayStore, make_replay_store
from broker.settings import Settings
from broker.storage.db import make_engine, migrate


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    broker_key: Ed25519PrivateKey
    replay: ReplayStore
    # Whether a policy id names a policy the broker can decide: the catalog checks offers with it but sits
    # below the policy feature, so the app wires it in (deny by default: no policy is known).
    known_policy: Callable[[Session, str], bool] = lambda session, policy_id: False

    @classmethod
    def start(cls, settings: Settings, *, run_migrations: bool = True) -> "Runtime":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.effective_database_url)
        if run_migrations:
            migrate(engine)
        key = load_or_create_private_key(settings.effective_broker_key_file)
        return cls(settings=settings, engine=engine, broker_key=key,
                   replay=make_replay_store(settings.redis_url, engine))

    @cached_property
    def broker_kid(self) -> str:
        return key_id(self.broker_key.public_key())

    @cached_property
    def broker_public_jwk(self) -> dict[str, str]:
        pub = self.broker_key.public_key()
        return {"kty": "OKP", "crv": "Ed25519", "x": public_key_b64(pub), "kid": self.broker_kid,
                "alg": "EdDSA", "use": "sig"}
