"""The `twinspace audit` commands on a local broker, and the demo's audit step."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from broker.audit import record_event
from twinspace.cli.main import app as cli
from broker.storage.db import session_scope


@pytest.fixture
def local(runtime, settings):
    with session_scope(runtime.engine) as s:
        for i in range(5):
            record_event(s, "policy.decision", actor="org-7", outcome="deny" if i % 2 else "ok",
                         agreement_id="agr-1", details={"reason": f"rule {i}"})
    return ["--data-dir", str(settings.data_dir)]


def test_cli_list_prove_receipt_status(local, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["audit", "list", "--outcome", "deny", "--json", *local])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [e["entry"]["details"]["reason"] for e in rows] == ["rule 1", "rule 3"]
    r = runner.invoke(cli, ["audit", "checkpoint", *local])
    assert r.exit_code == 0 and "\n\n\u2014 " in r.output
    size = int(r.output.splitlines()[1])
    r = runner.invoke(cli, ["audit", "prove", str(size), *local])
    assert r.exit_code == 0 and json.loads(r.output)["tree_size"] == size
    r = runner.invoke(cli, ["audit", "prove", str(size + 10), *local])
    assert r.exit_code == 2 and "index_out_of_range" in r.output
    r = runner.invoke(cli, ["audit", "consistency", "1", str(size), *local])
    assert r.exit_code == 0 and json.loads(r.output)["second"] == size
    key = runner.invoke(cli, ["audit", "key", *local]).output.strip()
    out = tmp_path / "receipt.json"
    r = runner.invoke(cli, ["audit", "receipt", str(size), "--out", str(out), *local])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["audit", "verify-receipt", str(out), "--key", key])
    assert r.exit_code == 0 and "receipt valid" in r.output
    receipt = json.loads(out.read_text())
    receipt["body"] = receipt["body"].replace("rule", "rulE")
    out.write_text(json.dumps(receipt))
    r = runner.invoke(cli, ["audit", "verify-receipt", str(out), "--key", key])
    assert r.exit_code == 1 and "INVALID" in r.output
    r = runner.invoke(cli, ["audit", "status", *local])
    assert r.exit_code == 0 and json.loads(r.output)["mode"] == "off"
    r = runner.invoke(cli, ["audit", "anchor", *local])
    assert r.exit_code == 2 and "anchoring_off" in r.output


def test_demo_audit_step_verifies_and_anchors(settings, runtime, app, client):
    from rich.console import Console

    from twinspace.demo.audit import step_audit_verify
    from twinspace.demo.run import DemoContext, step_participants

    console = Console(record=True, width=200)
    ctx = DemoContext(console, settings, runtime, app, client)
    step_participants(ctx)
    step_audit_verify(ctx)
    out = console.export_text()
    state = ctx.state["audit"]
    assert state["entries"] > 5 and state["anchored_size"] and state["anchored_size"] <= state["entries"]
    assert "Audit log verified" in out and state["root"] in out and f"size {state['anchored_size']} in block" in out


def test_fetch_bundle_through_the_api_then_verify(client, make_org, runtime, tmp_path):
    from broker.audit.service import log_vkey
    from twinspace.audit.bundle import fetch_bundle

    auditor = make_org("auditor")
    with session_scope(runtime.engine) as s:
        record_event(s, "negotiation.offer", actor="org-1", agreement_id="agr-2", details={"step": "offer"})
    result = fetch_bundle(auditor.client, tmp_path / "bundle")
    assert result["entries"] >= 3 and result["checkpoints"] >= 1 and result["claimed_vkey"] == log_vkey(runtime)
    r = CliRunner().invoke(cli, ["audit", "verify", "--bundle", str(tmp_path / "bundle"),
                                 "--key", log_vkey(runtime), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["entries"] == result["entries"] and report["latest_checkpoint"] == result["entries"]
    consumer = make_org("consumer")
    with pytest.raises(Exception) as err:
        fetch_bundle(consumer.client, tmp_path / "nope")
    assert getattr(err.value, "status", None) == 403
