"""The broker over a real TCP socket, driven by the participant SDK from a key file."""

from __future__ import annotations

import pytest

from broker.identity.onboarding import create_org_with_key
from twinspace.client.broker import BrokerClient, BrokerError
from tests.serving import serve_app


def test_sdk_authenticates_over_http_with_a_key_file(app, runtime, settings):
    org = create_org_with_key(runtime.engine, name="Grid Operator", role="provider", key_dir=settings.data_dir / "keys")
    with serve_app(app) as base_url:
        sdk = BrokerClient.connect(base_url, org.org_id, org.key_file, audience=settings.issuer)
        assert sdk.whoami()["name"] == "Grid Operator"
        with pytest.raises(BrokerError) as err:
            sdk.post("/orgs", json={"name": "X", "role": "provider", "public_key": "A" * 43})
        assert err.value.status == 403 and err.value.code == "wrong_role"


def test_twinspace_serve_with_two_workers(tmp_path):
    """``twinspace init`` then ``twinspace serve --workers 2``: both worker processes start on the same
    database and broker key, and a participant authenticates through either of them."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx
    from typer.testing import CliRunner

    from twinspace.cli.main import app as cli
    from tests.serving import free_port

    data = tmp_path / "state"
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "--data-dir", str(data)]).exit_code == 0
    created = runner.invoke(cli, ["org", "create", "Grid Operator", "--role", "provider", "--data-dir", str(data)])
    assert created.exit_code == 0, created.output
    org_id = created.output.split("org id ")[1].split(",")[0].strip()
    key_file = data / "keys" / "grid-operator.pem"

    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSPACE_")}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from twinspace.cli.main import app; app()", "serve",
                                 "--workers", "2", "--port", str(port), "--data-dir", str(data)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 60
        while log.read_text().count("Application startup complete") < 2:
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        kids = set()
        for _ in range(8):  # a new connection each time, so requests land on both workers
            with httpx.Client(base_url=base, headers={"Connection": "close"}) as http:
                kids.add(http.get("/.well-known/jwks.json").json()["keys"][0]["kid"])
            sdk = BrokerClient.connect(base, org_id, key_file, audience="twinspace-broker")
            assert sdk.whoami()["name"] == "Grid Operator"
        assert len(kids) == 1
        assert "Traceback" not in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
