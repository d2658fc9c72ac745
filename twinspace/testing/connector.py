"""A real connector node on loopback for tests: ``ConnectorHarness`` runs ``create_node_app`` under
uvicorn in a daemon thread, on a socket it binds itself (so its endpoint is known before the app is
built). The broker may run in-process (a FastAPI TestClient wrapped in the connector's BrokerClient).

    with ConnectorHarness(org_id, key, broker=BrokerClient(test_client, org_id, key, issuer),
                          broker_issuer=issuer, data_dir=tmp_path / "conn") as conn:
        sha = conn.put(arrow_bytes)
        ...publish metadata with data_endpoint=conn.endpoint...
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from twinspace.client.broker import BrokerClient


class ConnectorHarness:
    def __init__(self, org_id: str, private_key: Ed25519PrivateKey, broker: BrokerClient, broker_issuer: str,
                 broker_public_key: Ed25519PublicKey | None = None, data_dir: Path | str | None = None,
                 **config_options: Any):
        from connectors.node.config import NodeConfig

        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="twinspace-connector-")
            data_dir = self._tmp.name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.config = NodeConfig(endpoint=self.endpoint, data_dir=Path(data_dir), private_key=private_key,
                                 org_id=org_id, broker=broker, broker_issuer=broker_issuer,
                                 broker_public_key=broker_public_key, **config_options)
        self.app = None
        self.server = None
        self.thread: threading.Thread | None = None

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    def put(self, arrow_bytes: bytes) -> str:
        """Store an Arrow IPC file in the connector's data dir; returns its SHA-256."""
        return self.config.store.put(arrow_bytes)

    def start(self) -> "ConnectorHarness":
        import uvicorn

        from connectors.node.app import create_node_app

        if self.thread is not None:
            return self
        self.app = create_node_app(self.config)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name=f"twinspace-connector-{self.port}")
        self.thread.start()
        deadline = time.time() + 15
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the connector did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
            self.thread = None
        try:
            self.sock.close()
        except OSError:
            pass
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "ConnectorHarness":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["ConnectorHarness"]
