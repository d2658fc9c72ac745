"""A real connector node on loopback for tests: ``ConnectorHarness`` runs ``create_node_app`` under
uvicorn in a daemon thread, on a socket it binds itself (so its endpoint is known before the app is
built). The broker may run in-process (a FastAPI TestClient wrapped in the connector's BrokerClient).

    with ConnectorHarness(org_id, key, broker=BrokerClient(test_client, org_id, key, issuer),
                          broker_issuer=issuer, data_dir=tmp_path / "conn") as conn:
        sha = conn.put(arrow_bytes)
        ...publish metadata with data_endpoint=conn.endpoint...
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from twinspace.client.broker import BrokerClient
from twinspace.testing.serving import ThreadedServer


class ConnectorHarness:
    def __init__(self, org_id: str, private_key: Ed25519PrivateKey, broker: BrokerClient, broker_issuer: str,
                 broker_public_key: Ed25519PublicKey | None = None, data_dir: Path | str | None = None,
                 **config_options: Any):
        from connectors.node.config import NodeConfig

        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="twinspace-connector-")
            data_dir = self._tmp.name
        self.served = ThreadedServer(None, name="twinspace-connector", start_timeout=15)  # binds the port now
        self.port = self.served.port
        self.endpoint = self.served.url
        self.config = NodeConfig(endpoint=self.endpoint, data_dir=Path(data_dir), private_key=private_key,
                                 org_id=org_id, broker=broker, broker_issuer=broker_issuer,
                                 broker_public_key=broker_public_key, **config_options)
        self.app = None

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    @property
    def leases(self):
        """The running node's leased decisions (``connectors.node.leases.Leases``)."""
        return self.app.state.enforcer.leases

    def put(self, arrow_bytes: bytes) -> str:
        """Store an Arrow IPC file in the connector's data dir; returns its SHA-256."""
        return self.config.store.put(arrow_bytes)

    def start(self) -> "ConnectorHarness":
        from connectors.node.app import create_node_app

        if self.served.thread is None:
            self.app = self.served.app = create_node_app(self.config)
            self.served.start()
        return self

    def stop(self) -> None:
        self.served.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "ConnectorHarness":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["ConnectorHarness"]
