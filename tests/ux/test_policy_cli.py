"""Policy decisions as OPA users expect: a decision_id in the answer and its audit entry, an explain
mode naming the check that decided, and `policy test` like `opa test`."""

from __future__ import annotations

import json

from sqlmodel import Session
from typer.testing import CliRunner

from broker.audit import service as audit
from broker.identity.onboarding import create_org_with_key
from broker.policy.service import PROBE_INPUT
from tests.serving import serve_app
from twinspace.cli.main import app as cli

runner = CliRunner()


def test_eval_explain_and_decision_id_in_audit(tmp_path, app, runtime, settings):
    op = create_org_with_key(runtime.engine, name="Operator", role="operator", key_dir=tmp_path / "keys")
    inp = tmp_path / "input.json"
    inp.write_text(json.dumps({**PROBE_INPUT, "params": {"purposes": ["planning"]}, "request": {"purpose": "ads"}}))
    with serve_app(app) as url:
        conn = ["--broker", url, "--org", op.org_id, "--key", str(op.key_file), "--audience", settings.issuer]
        r = runner.invoke(cli, ["policy", "explain", "purpose-restricted", "-i", str(inp), "--json", *conn])
        assert r.exit_code == 0, r.output
        d = json.loads(r.output)
        assert d["allow"] is False and d["decision_id"].startswith("dec_")
        by_check = {x["check"]: x for x in d["explanation"]["rules"]}
        assert "purpose_denied" in d["explanation"]["decided_by"]
        assert by_check["purpose_denied"]["reasons"] == ["the declared purpose is not among the permitted purposes"]
        assert by_check["role_denied"]["passed"] is True
        assert sorted(r for x in d["explanation"]["rules"] for r in x["reasons"] if not x["passed"]) == d["reasons"]
        text = runner.invoke(cli, ["policy", "eval", "purpose-restricted", "-i", str(inp), *conn]).output
        assert "DENY" in text and "decision_id dec_" in text
        bad = runner.invoke(cli, ["policy", "eval", "purpose-restricted", "-i", str(tmp_path / "nope.json"), *conn])
        assert bad.exit_code == 2 and "cannot read" in bad.output
    with Session(runtime.engine) as session:
        entries = [audit.entry_json(e)["entry"] for e in audit.query_entries(
            session, audit.EntryFilter(kind="policy.decision", limit=100))]
    assert d["decision_id"] in {e["details"].get("decision_id") for e in entries}


def test_policy_test_runs_the_rego_unit_tests(tmp_path):
    r = runner.invoke(cli, ["policy", "test", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["passed"] >= 30
    bad = tmp_path / "pol" / "twinspace"
    bad.mkdir(parents=True)
    (bad / "x_test.rego").write_text("package twinspace.x\nimport rego.v1\ntest_fails if { 1 == 2 }\n")
    r = runner.invoke(cli, ["policy", "test", str(tmp_path / "pol")])
    assert r.exit_code in (1, 2) and "Traceback" not in r.output


def test_signed_bundle_build_verify_and_tamper(tmp_path):
    import io
    import tarfile

    from twinspace.crypto import generate_key, public_key_b64, save_private_key

    key = generate_key()
    pem = tmp_path / "signer.pem"
    save_private_key(pem, key)
    out = tmp_path / "bundle.tar.gz"
    r = runner.invoke(cli, ["policy", "bundle", "build", "policies", "--key", str(pem), "--revision", "2026.12.1",
                            "-o", str(out)])
    assert r.exit_code == 0, r.output
    pub = public_key_b64(key.public_key())
    ok = runner.invoke(cli, ["policy", "bundle", "verify", str(out), "--public-key", pub, "--json"])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.output)
    assert report["revision"] == "2026.12.1" and "twinspace/lib.rego" in report["files"]
    # change one policy after signing
    buf = io.BytesIO()
    with tarfile.open(out, "r:gz") as src, tarfile.open(fileobj=buf, mode="w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name.endswith("open_data.rego"):
                data += b"\n# allow everything\n"
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    bad = tmp_path / "tampered.tar.gz"
    bad.write_bytes(buf.getvalue())
    r = runner.invoke(cli, ["policy", "bundle", "verify", str(bad), "--public-key", pub])
    assert r.exit_code == 1 and "open_data.rego was changed after signing" in r.output
    other = public_key_b64(generate_key().public_key())
    r = runner.invoke(cli, ["policy", "bundle", "verify", str(out), "--public-key", other])
    assert r.exit_code == 1 and "does not verify" in r.output
    r = runner.invoke(cli, ["policy", "bundle", "build", "policies", "--key", str(tmp_path / "nope.pem"),
                            "--revision", "x"])
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output
