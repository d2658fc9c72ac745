"""The demo's processes: each provider's connector as its own process (own port, own key, own data directory), as in a real deployment — the broker never holds a row.

    <demo root>/broker/           the broker's state (database, broker key, audit)
    <demo root>/keys/             each participant's private key (what it keeps on its own machine)
    <demo root>/providers/<label> a provider's working files (raw and de-identified tables)
    <demo root>/connectors/<label> a provider connector's data directory (its rows, claims, outbox)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from twinspace.testing.serving import free_port


@dataclass
class ConnectorProcess:
    """One provider's connector: ``twinspace connector serve`` in a process of its own."""

    label: str
    org_id: str
    key_file: Path
    data_dir: Path
    broker_url: str
    audience: str
    port: int = field(default_factory=free_port)
    cors_origins: list[str] = field(default_factory=list)  # the broker console's origin(s): browser pulls
    process: subprocess.Popen | None = None
    log_file: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ConnectorProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = self.data_dir / "connector.log"
        command = [sys.executable, "-m", "twinspace.cli.main", "connector", "serve", "--data-dir", str(self.data_dir),
                   "--host", "127.0.0.1", "--port", str(self.port), "--public-url", self.endpoint,
                   "--broker", self.broker_url, "--org", self.org_id, "--key", str(self.key_file),
                   "--audience", self.audience]
        for origin in self.cors_origins:
            command += ["--cors-origin", origin]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSPACE_")}
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.label} connector exited: {self.log_file.read_text()[-2000:]}")
            try:
                if httpx.get(self.endpoint + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.label} connector did not start; see {self.log_file}")
            time.sleep(0.1)

    def put(self, data: bytes) -> str:
        """Place a de-identified table in the connector's store (on the provider's machine)."""
        from connectors.node.store import DataStore

        return DataStore(self.data_dir).put(data)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
