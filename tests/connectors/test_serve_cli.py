"""`twinspace connector serve` + `publish --data-endpoint`: a connector-hosted asset through the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from sqlmodel import Session
from typer.testing import CliRunner

from broker.catalog.models import Asset, AssetBlob
from twinspace.crypto import public_key_b64
from broker.identity.onboarding import create_org_with_key
from twinspace.cli.main import app as cli
from connectors.tables import ipc_bytes_to_table, with_meta, write_table
from tests.contracts.helpers import table_bytes
from tests.serving import free_port, serve_app


def test_serve_then_publish_by_reference(app, runtime, settings, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    table = ipc_bytes_to_table(table_bytes())
    table = table.replace_schema_metadata(with_meta(table.schema, {"twin_category": "building_structure",
                                                                   "entity_type": "Building"}).metadata)
    write_table(served / "buildings.arrow", table)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSPACE_")}
    proc = subprocess.Popen([sys.executable, "-c", "from twinspace.cli.main import app; app()", "connector", "serve",
                             str(served), "--broker-key", public_key_b64(runtime.broker_key.public_key()),
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode() if proc.poll() else ""
            try:
                if httpx.get(f"{endpoint}/data/{'0' * 64}").status_code == 401:  # up, and wants a token
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        org = create_org_with_key(runtime.engine, name="Buildings Dept", role="provider", key_dir=tmp_path / "keys")
        with serve_app(app) as url:
            r = CliRunner().invoke(cli, ["connector", "publish", str(served / "buildings.arrow"), "--broker", url,
                                         "--org-id", org.org_id, "--key", str(org.key_file), "--title", "Buildings",
                                         "--classification", "public", "--domain", "planning",
                                         "--offer", "open=open-data", "--data-endpoint", endpoint,
                                         "--audience", settings.issuer])
        assert r.exit_code == 0, r.output
        asset_id = r.output.split("published ")[1].split()[0]
        with Session(runtime.engine) as s:
            assert s.get(Asset, (asset_id, 1)).data_endpoint == endpoint
            assert s.get(AssetBlob, (asset_id, 1)) is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
