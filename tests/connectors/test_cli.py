"""`twinspace connector` end to end: ingest → deidentify → publish to a broker over a real socket."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from twinspace.cli.main import app as cli
from broker.identity.onboarding import create_org_with_key
from tests.serving import serve_app
from tests.ux.test_cli_roles import start_connector

runner = CliRunner()


def test_cli_pipeline(shared_dir, tmp_path, app, client, runtime, settings):
    sdm = shared_dir / "data" / "smart-data-models"
    out = tmp_path / "streetlight.arrow"
    r = runner.invoke(cli, ["connector", "ingest", str(sdm / "Streetlight" / "example-normalized.jsonld"),
                            "--out", str(out), "--region", "ES"])
    assert r.exit_code == 0, r.output
    assert "1 Streetlight rows (goods_equipment)" in r.output
    bad = runner.invoke(cli, ["connector", "ingest", str(sdm / "PointOfInterest" / "example.jsonld"),
                              "--out", str(tmp_path / "poi.arrow")])
    assert bad.exit_code == 1 and not (tmp_path / "poi.arrow").exists()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("columns:\n  dateLastLampChange: {technique: date, granularity: month}\n")
    r = runner.invoke(cli, ["connector", "deidentify", str(out), "-c", str(cfg), "-o", str(tmp_path / "d.arrow")])
    assert r.exit_code == 0, r.output
    report = tmp_path / "d.arrow.report.json"
    assert json.loads(report.read_text())["meets_policy"] is True
    assert (tmp_path / "d.arrow.report.txt").read_text().startswith("De-identification report")
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("quasi_identifiers: [zip]\nprivacy: {k: 2}\n")
    r = runner.invoke(cli, ["connector", "deidentify", str(out), "-c", str(bad_cfg), "-o", str(tmp_path / "e.arrow")])
    assert r.exit_code == 1 and "deid_unknown_column" in r.output
    org = create_org_with_key(runtime.engine, name="Lighting Dept", role="provider", key_dir=tmp_path / "keys")
    connector = start_connector(client, runtime, settings, org, tmp_path / "connector")
    try:
        with serve_app(app) as url:
            publish = ["connector", "publish", str(tmp_path / "d.arrow"), "--broker", url, "--org", org.org_id,
                       "--key", str(org.key_file), "--title", "Streetlights", "--classification", "public",
                       "--domain", "energy", "--offer", "open=open-data", "--report", str(report),
                       "--audience", settings.issuer, "--connector-dir", str(connector.data_dir)]
            # a connector the broker does not know is refused (one line, no traceback)
            r = runner.invoke(cli, [*publish, "--connector", "http://127.0.0.1:9"])
            assert r.exit_code != 0 and "Traceback" not in r.output
            r = runner.invoke(cli, [*publish, "--connector", connector.endpoint])
            assert r.exit_code == 0, r.output
            assert "published ast_" in r.output
            asset_id = r.output.split()[1]
            listed = client.get(f"/catalog/assets/{asset_id}", headers=_headers(client, org, settings)).json()
            assert listed["data_endpoint"] == connector.endpoint  # the rows stay at the connector
            assert connector.config.store.read(listed["content_hash"]) is not None
    finally:
        connector.stop()


def _headers(client, org, settings):
    from twinspace.client.broker import BrokerClient

    return BrokerClient(client, org.org_id, org.private_key, audience=settings.issuer).headers()
