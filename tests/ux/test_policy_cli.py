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
