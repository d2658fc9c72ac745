"""The connector's configuration: who it is (org, key, endpoint), where its data lives, which broker
it trusts. The stores (data files, single-use claims, receipt delivery and outbox) hang off the config so every
part of the node (pull, push, compute) shares them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from twinspace.client.broker import BrokerClient, BrokerError
from twinspace.crypto import key_id, public_key_b64, public_key_from_b64
from twinspace.dataplane import normalise_endpoint
from twinspace.errors import BadGateway, ServiceUnavailable


@dataclass(eq=False)
class NodeConfig:
    """``endpoint``: the public base URL of this connector (its audience, normalised here);
    ``broker``: an authenticated client to the broker (signed in with the provider key);
    ``broker_public_key``: pinned; when None it is fetched once from the broker's JWKS."""

    endpoint: str
    data_dir: Path
    private_key: Ed25519PrivateKey
    org_id: str
    broker: BrokerClient
    broker_issuer: str = "twinspace-broker"
    broker_public_key: Ed25519PublicKey | None = None
    leeway: int = 10
    push_allow_networks: list[str] = field(default_factory=list)
    pop_max_age: int = 120
    max_body_bytes: int = 64 * 1024
    max_compute_body_bytes: int = 64 * 1024 * 1024
    outbox_interval: float = 3.0
    broker_timeout: float = 30.0

    def __post_init__(self) -> None:
        self.endpoint = normalise_endpoint(self.endpoint)
        self.data_dir = Path(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._key_lock = threading.Lock()
        self.broker_lock = threading.RLock()  # BrokerClient caches its token without a lock

    # --- identity -------------------------------------------------------------------------
    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def kid(self) -> str:
        return key_id(self.public_key)

    @cached_property
    def path_prefix(self) -> str:
        """The path of the endpoint (non-empty behind a reverse proxy mounting us under a prefix)."""
        from urllib.parse import urlsplit

        return urlsplit(self.endpoint).path

    # --- the broker -----------------------------------------------------------------------
    def broker_key(self) -> Ed25519PublicKey:
        """The broker's public key: as configured, else fetched once from its JWKS and pinned."""
        if self.broker_public_key is not None:
            return self.broker_public_key
        with self._key_lock:
            if self.broker_public_key is None:
                self.broker_public_key = fetch_broker_key(self.broker, self.broker_issuer)
        return self.broker_public_key

    def broker_key_b64(self) -> str:
        return public_key_b64(self.broker_key())

    def broker_post(self, path: str, json: Any) -> Any:
        """An authenticated POST to the broker over the client's keep-alive pool. Only the token lookup is
        serialised (the client's token cache is not thread-safe); the requests themselves run concurrently
        (httpx clients are), so one slow broker answer does not queue every other pull behind it."""
        with self.broker_lock:
            token = self.broker.token()
        return self.broker._check(self.broker.http.post(path, json=json, headers={"Authorization": f"Bearer {token}"}))

    # --- stores ---------------------------------------------------------------------------
    @cached_property
    def store(self):
        from connectors.node.store import DataStore

        return DataStore(self.data_dir)

    @cached_property
    def claims(self):
        from connectors.node.store import ClaimStore

        return ClaimStore(self.data_dir / "node.db")

    @cached_property
    def receipts(self):
        from connectors.node.receipts import ReceiptSender

        return ReceiptSender(self)

    @cached_property
    def outbox(self):
        from connectors.node.store import Outbox

        return Outbox(self.data_dir / "node.db", self)


def fetch_broker_key(broker: BrokerClient, issuer: str) -> Ed25519PublicKey:
    """``GET /.well-known/jwks.json`` → the broker's Ed25519 key (the first OKP/Ed25519 entry)."""
    try:
        response = broker.http.get("/.well-known/jwks.json")
    except Exception:  # noqa: BLE001 - any transport failure
        raise ServiceUnavailable("The broker cannot be reached to fetch its public key.",
                                 code="broker_unreachable") from None
    try:
        body = response.json()
        if response.status_code != 200:
            raise ValueError
        if body.get("issuer") not in (None, issuer):
            raise BadGateway("The broker's JWKS names another issuer.", code="broker_key_mismatch")
        for jwk in body.get("keys") or []:
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and isinstance(jwk.get("x"), str):
                pub = public_key_from_b64(jwk["x"])
                if jwk.get("kid") not in (None, key_id(pub)):
                    continue
                return pub
    except (ValueError, TypeError, AttributeError):
        pass
    raise BadGateway("The broker's JWKS holds no usable Ed25519 key.", code="broker_key_unavailable")


__all__ = ["NodeConfig", "fetch_broker_key", "BrokerError"]
