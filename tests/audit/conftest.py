"""Audit test helpers: the shared conformance vectors and a real anvil node (when installable)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MERKLE_VECTORS = REPO_ROOT.parent / "shared" / "conformance" / "merkle"


@pytest.fixture(scope="session")
def merkle_vectors() -> Path:
    if not (MERKLE_VECTORS / "inclusion").is_dir():
        pytest.skip(f"Merkle conformance vectors not found at {MERKLE_VECTORS} "
                    "(expected <repo>/../shared/conformance/merkle)")
    return MERKLE_VECTORS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def anvil_url():
    """A real anvil node on loopback; installed from npm into .cache/anvil if needed, else skip."""
    from tests.audit.anvil import ensure_anvil

    binary, reason = ensure_anvil()
    if binary is None:
        pytest.skip(reason)
    port = _free_port()
    proc = subprocess.Popen([str(binary), "--host", "127.0.0.1", "--port", str(port), "--silent"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.skip(f"anvil exited at start: {proc.stderr.read().decode()[:300]}")
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.skip("anvil did not open its port within 20 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()

from tests.contracts.helpers import world  # noqa: E402,F401  (receipts tests use the contract world)
