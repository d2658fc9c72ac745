"""`twinspace connector serve` (its own process) + `register` + `publish --connector-dir`: a connector-hosted
asset through the real CLI — the rows land in the connector's data directory, the broker gets metadata."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import httpx
from sqlmodel import Session
from typer.testing import CliRunner

from broker.catalog.models import Asset
from broker.identity.onboarding import create_org_with_key
from connectors.tables import ipc_bytes_to_table, with_meta, write_table
from tests.contracts.helpers import table_bytes
from tests.serving import free_port, serve_app
from twinspace.cli.main import app as cli


def test_serve_register_then_publish_to_the_connector(app, runtime, settings, tmp_path):
    table = ipc_bytes_to_table(table_bytes())
    table = table.replace_schema_metadata(with_meta(table.schema, {"twin_category": "building_structure",
                                                                   "entity_type": "Building"}).metadata)
    write_table(tmp_path / "buildings.arrow", table)
    data_dir = tmp_path / "connector"
    org = create_org_with_key(runtime.engine, name="Buildings Dept", role="provider", key_dir=tmp_path / "keys")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSPACE_")}
    with serve_app(app) as url:
        conn = ["--broker", url, "--org-id", org.org_id, "--key", str(org.key_file), "--audience", settings.issuer]
        proc = subprocess.Popen([sys.executable, "-c", "from twinspace.cli.main import app; app()", "connector", "serve",
                                 "--data-dir", str(data_dir), "--port", str(port), *conn], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            deadline = time.time() + 30
            while True:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode() if proc.poll() else ""
                try:
                    if httpx.get(f"{endpoint}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            info = httpx.get(f"{endpoint}/.well-known/twinspace-connector").json()
            assert info["endpoint"] == endpoint and info["org_id"] == org.org_id
            r = CliRunner().invoke(cli, ["connector", "register", "--endpoint", endpoint, "--json", *conn])
            assert r.exit_code == 0, r.output
            r = CliRunner().invoke(cli, ["connector", "publish", str(tmp_path / "buildings.arrow"), "--title",
                                         "Buildings", "--classification", "public", "--domain", "planning",
                                         "--offer", "open=open-data", "--connector-dir", str(data_dir),
                                         "--connector", endpoint, *conn])
            assert r.exit_code == 0, r.output
            asset_id = r.output.split("published ")[1].split()[0]
            sha = hashlib.sha256((tmp_path / "buildings.arrow").read_bytes()).hexdigest()
            assert (data_dir / f"{sha}.arrow").is_file()
            with Session(runtime.engine) as s:
                asset = s.get(Asset, (asset_id, 1))
                assert asset.data_endpoint == endpoint and asset.content_hash == sha
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def test_serve_with_register_registers_itself_once_serving(app, runtime, settings, tmp_path):
    """``--register`` (as docker-compose runs it): the connector answers the broker's ownership challenge
    after it has started, without a separate ``connector register``."""
    from twinspace.client.broker import BrokerClient

    org = create_org_with_key(runtime.engine, name="Water Dept", role="provider", key_dir=tmp_path / "keys")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSPACE_")}
    with serve_app(app) as url:
        proc = subprocess.Popen([sys.executable, "-m", "twinspace.cli.main", "connector", "serve", "--data-dir",
                                 str(tmp_path / "c"), "--port", str(port), "--register", "--broker", url, "--org",
                                 org.org_id, "--key", str(org.key_file), "--audience", settings.issuer], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            client = BrokerClient(httpx.Client(base_url=url), org.org_id, org.private_key, audience=settings.issuer)
            deadline = time.time() + 40
            while not any(c["endpoint"] == endpoint for c in client.connectors()):
                assert proc.poll() is None and time.time() < deadline, "the connector did not register itself"
                time.sleep(0.3)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def test_serve_and_register_fail_with_a_message(tmp_path):
    key = tmp_path / "k.pem"
    from twinspace.crypto import generate_key, save_private_key

    save_private_key(key, generate_key())
    port = free_port()
    r = CliRunner().invoke(cli, ["connector", "serve", "--data-dir", str(tmp_path / "d"), "--broker",
                                 f"http://127.0.0.1:{port}", "--org", "org_x", "--key", str(key)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "broker" in r.output.lower()
    r = CliRunner().invoke(cli, ["connector", "register", "--endpoint", "ftp://x", "--broker",
                                 f"http://127.0.0.1:{port}", "--org", "org_x", "--key", str(key)])
    assert r.exit_code == 2 and "--endpoint" in r.output
