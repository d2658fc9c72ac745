"""Shared fixtures: an isolated broker per test, participants authenticated through the real flow,
and the machine's PostgreSQL / Redis when they run (tests that need them skip with a reason if not)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.identity.onboarding import create_org_with_key
from broker.runtime import Runtime
from broker.settings import Settings
from twinspace.client.broker import BrokerClient

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
PG_BASE = os.environ.get("TWINSPACE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TWINSPACE_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _postgres_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_BASE.replace("postgresql+psycopg", "postgresql"), connect_timeout=2):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not available here"
        return f"PostgreSQL not reachable at {PG_BASE}: {type(exc).__name__}"


def _redis_available() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared material not found at {SHARED_DIR} (expected ../shared beside the clone)")
    return SHARED_DIR


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test; dropped afterwards."""
    reason = _postgres_available()
    if reason:
        pytest.skip(reason)
    import psycopg

    schema = "ts_" + uuid.uuid4().hex[:12]
    plain = PG_BASE.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def redis_url() -> str:
    reason = _redis_available()
    if reason:
        pytest.skip(reason)
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str | None:
    """Parametrises storage/auth tests over both backends (PostgreSQL skips when absent)."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")


@pytest.fixture
def settings(tmp_path) -> Settings:
    # Test connectors listen on loopback: the broker's SSRF guard admits exactly that range.
    return Settings(data_dir=tmp_path / "broker", database_url=None, redis_url=None,
                    connector_allow_networks=["127.0.0.0/8"])


@pytest.fixture
def runtime(settings) -> Runtime:
    rt = Runtime.start(settings)
    yield rt
    rt.engine.dispose()


@pytest.fixture
def engine(runtime):
    return runtime.engine


@pytest.fixture
def app(settings, runtime):
    return create_app(settings, runtime=runtime)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@dataclass
class OrgHandle:
    org_id: str
    name: str
    role: str
    private_key: Ed25519PrivateKey
    kid: str
    client: BrokerClient

    def headers(self) -> dict[str, str]:
        return self.client.headers()


@dataclass
class HostingClient(BrokerClient):
    """A provider's client whose ``catalog_publish(meta, data)`` first places ``data`` at the provider's
    own connector (a real connector process on loopback, started and registered on first use) and
    publishes the metadata with that ``data_endpoint`` — the broker never receives the rows."""

    connector_factory: Callable[[], Any] | None = None

    def catalog_publish(self, metadata: dict[str, Any], data: bytes | None = None,
                        asset_id: str | None = None) -> dict[str, Any]:
        if data is not None and not metadata.get("data_endpoint") and self.connector_factory is not None:
            connector = self.connector_factory()
            connector.put(data)
            metadata = {**metadata, "data_endpoint": connector.endpoint}
        return super().catalog_publish(metadata, data, asset_id=asset_id)


@pytest.fixture
def make_org(runtime, settings, client, tmp_path):
    """``make_org(role, name=None, org_type=..., attributes=...)`` → an authenticated OrgHandle. A
    provider's handle has ``connector()``: its own connector (started and registered on first use)."""
    from twinspace.testing.connector import ConnectorHarness

    counter = {"n": 0}
    running: list[Any] = []

    def _make(role: str, name: str | None = None, *, org_type: str = "other",
              attributes: dict[str, Any] | None = None) -> OrgHandle:
        counter["n"] += 1
        name = name or f"{role.title()} Org {counter['n']}"
        new = create_org_with_key(runtime.engine, name=name, role=role, key_dir=settings.data_dir / "keys",
                                  org_type=org_type, attributes=attributes)
        handle = OrgHandle(new.org_id, new.name, new.role, new.private_key, new.kid, None)  # type: ignore[arg-type]
        own: dict[str, Any] = {}

        def connector() -> Any:
            if "harness" not in own:
                link = BrokerClient(client, new.org_id, new.private_key, audience=settings.issuer)
                harness = ConnectorHarness(new.org_id, new.private_key, broker=link, broker_issuer=settings.issuer,
                                           broker_public_key=runtime.broker_key.public_key(),
                                           data_dir=tmp_path / f"connector-{new.org_id}")
                harness.start()
                running.append(harness)
                handle.client.connector_register(harness.endpoint)
                own["harness"] = harness
            return own["harness"]

        handle.connector = connector  # type: ignore[attr-defined]
        handle.client = HostingClient(client, new.org_id, new.private_key, audience=settings.issuer,
                                      connector_factory=connector if role == "provider" else None)
        return handle

    yield _make
    for harness in running:
        harness.stop()
