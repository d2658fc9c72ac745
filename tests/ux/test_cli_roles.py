"""One CLI for every role, over a real socket: a provider publishes, a consumer searches, negotiates
(each side running `negotiate next`), transfers and downloads; every bad input is one clear line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from broker.identity.onboarding import create_org_with_key
from tests.serving import serve_app
from twinspace.cli.main import app as cli

runner = CliRunner()


def run(*args, code=0, env=None):
    r = runner.invoke(cli, [str(a) for a in args], env=env)
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    return r


def start_connector(client, runtime, settings, org, data_dir):
    """The provider's own connector on loopback (what `twinspace connector serve` runs), registered with
    the broker (ownership proven with the provider's key): it holds the rows the CLI publishes."""
    from twinspace.client.broker import BrokerClient
    from twinspace.testing.connector import ConnectorHarness

    link = BrokerClient(client, org.org_id, org.private_key, audience=settings.issuer)
    harness = ConnectorHarness(org.org_id, org.private_key, broker=link, broker_issuer=settings.issuer,
                               broker_public_key=runtime.broker_key.public_key(), data_dir=data_dir).start()
    link.connector_register(harness.endpoint)
    return harness


@pytest.fixture
def space(tmp_path, app, client, runtime, settings, shared_dir):
    provider = create_org_with_key(runtime.engine, name="Parking Office", role="provider", key_dir=tmp_path / "keys")
    consumer = create_org_with_key(runtime.engine, name="City Lab", role="consumer", key_dir=tmp_path / "keys",
                                   attributes={"clearance": "internal"})
    table = tmp_path / "parking.arrow"
    run("connector", "ingest", shared_dir / "data" / "taipei-parking" / "TCMSV_alldesc.json", "-o", table)
    connector = start_connector(client, runtime, settings, provider, tmp_path / "connector")
    try:
        with serve_app(app) as url:
            common = ["--broker", url, "--audience", settings.issuer]
            r = run("connector", "publish", table, *common, "--org", provider.org_id, "--key", provider.key_file,
                    "--title", "Taipei car parks", "--classification", "public", "--domain", "transport",
                    "--offer", "open=open-data", "--connector-dir", connector.data_dir,
                    "--connector", connector.endpoint)
            asset_id = r.output.split()[1]
            yield {"url": url, "common": common, "asset": asset_id, "connector": connector,
                   "provider": ["--org", provider.org_id, "--key", provider.key_file],
                   "consumer": ["--org", consumer.org_id, "--key", consumer.key_file], "tmp": tmp_path}
    finally:
        connector.stop()


def test_consumer_journey_search_negotiate_download(space):
    c, p, common = space["consumer"], space["provider"], space["common"]
    found = json.loads(run("catalog", "search", "parks", "--json", *common, *c).output)
    assert found["total"] == 1 and found["items"][0]["id"] == space["asset"]
    text = run("catalog", "search", *common, *c).output
    assert space["asset"] in text  # the full id, never cut
    shown = run("catalog", "show", space["asset"], *common, *c).output
    assert f"urn:twinspace:offer:{space['asset']}:v1:open" in shown and "{" not in shown
    neg = json.loads(run("negotiate", "request", f"{space['asset']}:open", "--purpose", "research", "--json",
                         *common, *c).output)
    nid = neg["providerPid"]
    assert neg["state"].endswith("REQUESTED")
    wrong_turn = run("negotiate", "next", nid, *common, *c, code=1)
    assert "provider's turn" in wrong_turn.output
    for side in (p, c, p, c, p):
        run("negotiate", "next", nid, *common, *side)
    final = json.loads(run("negotiate", "show", nid, "--json", *common, *c).output)
    assert final["state"].endswith("FINALIZED")
    agreement = final["twin:negotiation"]["agreement_id"]
    tp = json.loads(run("transfer", "start", agreement, "--json", *common, *c).output)
    out = space["tmp"] / "parks.csv"
    got = json.loads(run("download", tp["providerPid"], "-o", out, "--json", *common, *c).output)
    assert got["bytes"] == out.stat().st_size > 0
    import csv
    import hashlib

    assert len(list(csv.reader(out.open(encoding="utf-8", newline="")))) == 1765 + 1
    # pulled from the provider's connector, the receipt countersigned with what arrived
    assert got["connector"].startswith(space["connector"].endpoint) and got["format"] == "csv"
    assert got["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert got["receipt"] and got["acknowledged"] is True
    # by agreement id (a transfer is opened), human output, a column subset
    text = run("download", agreement, "-o", space["tmp"] / "few.csv", "--columns", "name", *common, *c).output
    assert "wrote" in text and "countersigned" in text and space["connector"].endpoint in text
    header = next(csv.reader((space["tmp"] / "few.csv").open(encoding="utf-8", newline="")))
    assert header == ["name"]
    # failures are one clear line: a transfer that is not ours (the broker), a connector that is down
    r = run("download", "tp_missing", "-o", space["tmp"] / "x.csv", *common, *c, code=1)
    assert "broker refused" in r.output and not (space["tmp"] / "x.csv").exists()
    space["connector"].stop()
    r = run("download", tp["providerPid"], "-o", space["tmp"] / "down.csv", *common, *c, code=2)
    assert "cannot reach the provider's connector at http://127.0.0.1:" in r.output
    assert not (space["tmp"] / "down.csv").exists()
    # once the provider revokes the agreement, no further data
    run("contract", "revoke", agreement, *common, *p)
    for ref in (tp["providerPid"], agreement):
        r = run("download", ref, "-o", space["tmp"] / "late.csv", *common, *c, code=1)
        assert "broker refused" in r.output and "revoked" in r.output, r.output
        assert not (space["tmp"] / "late.csv").exists()


def test_connection_options_from_env_and_profile(space, tmp_path):
    c = space["consumer"]
    env = {"TWINSPACE_BROKER_URL": space["url"], "TWINSPACE_ORG_ID": c[1], "TWINSPACE_ORG_KEY": str(c[3]),
           "TWINSPACE_AUDIENCE": space["common"][3]}
    assert json.loads(run("catalog", "search", "--json", env=env).output)["total"] == 1
    prof = tmp_path / "profiles.toml"
    prof.write_text(f'[lab]\nbroker = "{space["url"]}"\norg = "{c[1]}"\nkey = "{c[3]}"\n'
                    f'audience = "{space["common"][3]}"\n')
    env2 = {"TWINSPACE_PROFILE_FILE": str(prof)}
    assert json.loads(run("catalog", "search", "--json", "--profile", "lab", env=env2).output)["total"] == 1
    r = run("catalog", "search", "--profile", "nope", env=env2, code=2)
    assert "no profile [nope]" in r.output and "lab" in r.output


@pytest.mark.parametrize("args,expect", [
    (["catalog", "search", "--broker", "http://127.0.0.1:9", "--org", "org_x", "--key", "KEY"],
     "cannot reach the broker at http://127.0.0.1:9"),
    (["catalog", "search", "--broker", "http://127.0.0.1:9", "--org", "org_x", "--key", "CSV"],
     "cannot be used as --key: it is not a PEM file at all"),
    (["catalog", "search", "--broker", "http://127.0.0.1:9", "--org", "org_x", "--key", "RSA"],
     "a PEM file, but not an Ed25519 private key"),
    (["catalog", "search", "--broker", "127.0.0.1:9", "--org", "org_x", "--key", "KEY"], "not an http(s) URL"),
    (["catalog", "search"], "missing --broker, --org, --key"),
    (["catalog", "search", "--category", "vehicels", "--broker", "http://127.0.0.1:9", "--org", "o", "--key", "KEY"],
     "did you mean 'vehicle'"),
    (["download", "x", "-o", "y", "--format", "xls", "--broker", "http://127.0.0.1:9", "--org", "o", "--key", "KEY"],
     "--format 'xls' is not one of: csv, json, parquet"),
    (["query", "where", "agr_x", "--where", "a:eq:1", "--kind", "summ", "--broker", "http://127.0.0.1:9", "--org", "o",
      "--key", "KEY"], "--kind 'summ' is not one of: count, sum"),
    (["query", "where", "agr_x", "--where", "a:eq:1", "--he-key", "CSV", "--broker", "http://127.0.0.1:9", "--org", "o",
      "--key", "KEY"], "is not a TenSEAL context"),
    (["audit", "list", "--outcome", "denyed", "--data-dir", "DATA"], "did you mean 'deny'"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, expect):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    files = {"KEY": tmp_path / "k.pem", "CSV": tmp_path / "k.csv", "RSA": tmp_path / "rsa.pem", "DATA": tmp_path / "d"}
    files["KEY"].write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    files["CSV"].write_text("a,b\n1,2\n")
    files["RSA"].write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    r = runner.invoke(cli, [str(files.get(a, a)) for a in args], env={"TWINSPACE_PROFILE_FILE": str(tmp_path / "none")})
    assert r.exit_code == 2, r.output
    assert expect in " ".join(r.output.split()) and "Traceback" not in r.output


def test_open_data_in_one_command_with_the_provider_serving_automatically(space):
    """The provider's `negotiate auto` answers open-data requests; the consumer's `request --wait`
    takes its own steps: one command each, no review."""
    import threading

    c, p, common = space["consumer"], space["provider"], space["common"]
    stop = threading.Event()

    from twinspace.cli.common import resolve
    from twinspace.cli.negotiate import serve_once

    provider = resolve(space["url"], p[1], p[3], None, common[3]).client()

    def provider_loop():  # what `twinspace negotiate auto --watch 0.3` runs (CliRunner is not thread-safe)
        while not stop.is_set():
            serve_once(provider, p[1], ("open-data",))
            stop.wait(0.3)

    t = threading.Thread(target=provider_loop, daemon=True)
    t.start()
    try:
        r = run("negotiate", "request", f"{space['asset']}:open", "--purpose", "research", "--wait", "60", "--json",
                *common, *c)
    finally:
        stop.set()
        t.join(timeout=10)
    neg = json.loads(r.output)
    assert neg["state"].endswith("FINALIZED") and neg["twin:negotiation"]["agreement_id"].startswith("agr_")
    idle = run("negotiate", "auto", *common, *p)
    assert "no negotiation waiting" in idle.output


def test_a_mask_file_with_a_bad_line_names_it(tmp_path):
    from twinspace.cli.common import CliError
    from twinspace.cli.query import _mask

    m = tmp_path / "mask.txt"
    m.write_text("1\n0\nyes\n1\n")
    with pytest.raises(CliError) as info:
        _mask(m, False, 4)
    assert "line 3" in info.value.message


def test_audit_list_denied_finds_both_spellings(tmp_path, runtime, settings):
    from broker.audit import log_event

    log_event(runtime.engine, "policy.decision", actor="org_a", outcome="deny", details={"reasons": ["x"]})
    log_event(runtime.engine, "contract.refused", actor="org_a", outcome="denied", details={})
    log_event(runtime.engine, "auth.ok", actor="org_a", outcome="ok", details={})
    r = runner.invoke(cli, ["audit", "list", "--outcome", "denied", "--json", "--data-dir", str(settings.data_dir)])
    assert r.exit_code == 0, r.output
    kinds = [json.loads(line)["entry"]["kind"] for line in r.output.splitlines() if line.strip()]
    assert "policy.decision" in kinds and "contract.refused" in kinds and "auth.ok" not in kinds
