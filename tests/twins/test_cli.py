"""`twinspace twin` end to end: CityJSON → table → profile → publish (over a real socket), the SDM
network and a link; bad input exits 1 with the object named and nothing written or published."""

from __future__ import annotations

from contextlib import contextmanager

import json

from typer.testing import CliRunner

from broker.identity.onboarding import create_org_with_key
from connectors.tables import get_meta, read_table
from tests.serving import serve_app
from twinspace.cli.main import app as cli

runner = CliRunner()


def test_cityjson_profile_publish_and_link(data, tmp_path, app, runtime, settings):
    out = tmp_path / "delft.arrow"
    r = runner.invoke(cli, ["twin", "cityjson", str(data / "cityjson" / "delft.city.json"), "-o", str(out),
                            "--region", "NL-ZH", "--district-attribute", "bronhouder"])
    assert r.exit_code == 0, r.output
    assert "570 objects" in r.output and "160 Building rows" in r.output and read_table(out).num_rows == 160
    r = runner.invoke(cli, ["twin", "profile", str(out), "--kind", "buildings", "-o", str(tmp_path / "p.arrow")])
    assert r.exit_code == 0, r.output
    assert get_meta(read_table(tmp_path / "p.arrow").schema)["profile"]["entities"] == 160
    r = runner.invoke(cli, ["twin", "profile", str(out), "--kind", "buildings", "--k", "500"])
    assert r.exit_code == 1 and "cohort_too_small" in r.output
    org = create_org_with_key(runtime.engine, name="Delft Planning", role="provider", key_dir=tmp_path / "keys")
    base = ["--org-id", org.org_id, "--key", str(org.key_file), "--audience", settings.issuer,
            "--classification", "public", "--domain", "planning", "--offer", "open=open-data"]
    with serve_app(app) as url, _connector(org, url, settings, runtime, tmp_path) as connector:
        base += ["--connector", connector.endpoint, "--connector-dir", str(connector.data_dir)]
        r = runner.invoke(cli, ["twin", "publish", str(out), "--kind", "buildings", "--broker", url,
                                "--title", "Delft buildings", "--work-dir", str(tmp_path), *base])
        assert r.exit_code == 0, r.output
        assert "(160 rows) and its profile" in r.output
        source_id = r.output.split("published ")[1].split()[0]
        # a second profile (another k) of the asset already published
        r = runner.invoke(cli, ["twin", "publish", str(out), "--kind", "buildings", "--broker", url, "--k", "20",
                                "--title", "Delft buildings (k=20)", "--source-asset", source_id,
                                "--work-dir", str(tmp_path), *base])
        assert r.exit_code == 0, r.output
        assert f"of {source_id} v1" in r.output
    r = runner.invoke(cli, ["twin", "link", str(out), str(out), "-o", str(tmp_path / "x.arrow"),
                            "--left-key", "attributes.identificatiebagpnd", "--right-key", "attributes.identificatiebagpnd"])
    assert r.exit_code == 0, r.output
    assert "160 linked (identifier)" in r.output


@contextmanager
def _connector(org, url, settings, runtime, tmp_path):
    """The provider's own connector on loopback, registered with the served broker."""
    import httpx

    from twinspace.client.broker import BrokerClient
    from twinspace.testing.connector import ConnectorHarness

    link = BrokerClient(httpx.Client(base_url=url), org.org_id, org.private_key, audience=settings.issuer)
    with ConnectorHarness(org.org_id, org.private_key, broker=link, broker_issuer=settings.issuer,
                          broker_public_key=runtime.broker_key.public_key(), data_dir=tmp_path / "connector") as c:
        link.connector_register(c.endpoint)
        yield c


def test_network_and_bad_input(data, tmp_path):
    sdm = data / "smart-data-models"
    files = [str(sdm / t / "example-normalized.jsonld") for t in ("Junction", "Reservoir", "Tank", "Pipe", "Pump", "Valve")]
    r = runner.invoke(cli, ["twin", "network", *files, "-o", str(tmp_path / "n.arrow"), "--region", "FI"])
    assert r.exit_code == 0, r.output
    assert "3 nodes, 3 links, 2 component(s)" in r.output
    r = runner.invoke(cli, ["twin", "profile", str(tmp_path / "n.arrow"), "--kind", "network", "--k", "1"])
    assert r.exit_code == 0 and "pipe_length_m" in r.output
    bad = [str(sdm / t / "example.json") for t in ("Junction", "Reservoir", "Pipe", "Valve")]
    r = runner.invoke(cli, ["twin", "network", *bad, "-o", str(tmp_path / "bad.arrow"), "--region", "FI"])
    assert r.exit_code == 1 and "network_dangling_reference" in r.output and "87fe7d79" in r.output
    assert not (tmp_path / "bad.arrow").exists()
    doc = json.loads((data / "cityjson" / "delft.city.json").read_text())
    doc["version"] = "1.1"
    (tmp_path / "old.city.json").write_text(json.dumps(doc))
    r = runner.invoke(cli, ["twin", "cityjson", str(tmp_path / "old.city.json"), "-o", str(tmp_path / "o.arrow"),
                            "--region", "NL-ZH"])
    assert r.exit_code == 1 and "cityjson_unsupported_version" in r.output and not (tmp_path / "o.arrow").exists()
    r = runner.invoke(cli, ["twin", "cityjson", str(data / "cityjson" / "rotterdam_subset.city.json"),
                            "-o", str(tmp_path / "r.arrow"), "--region", "NL-ZH"])
    assert r.exit_code == 1 and "cityjson_missing_crs" in r.output
