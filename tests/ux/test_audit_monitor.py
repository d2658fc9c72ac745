"""`twinspace audit monitor`: trusts a checkpoint, checks consistency on each run, alarms on a fork or
rollback (exit 3) and keeps the trusted checkpoint then."""

from __future__ import annotations

import base64
import json

from typer.testing import CliRunner

from broker.audit import log_event
from broker.identity.onboarding import create_org_with_key
from tests.serving import serve_app
from twinspace.cli.main import app as cli

runner = CliRunner()


def test_monitor_first_run_growth_fork_and_rollback(tmp_path, app, runtime, settings):
    auditor = create_org_with_key(runtime.engine, name="Audit Office", role="auditor", key_dir=tmp_path / "keys")
    state = tmp_path / "monitor.json"
    with serve_app(app) as url:
        args = ["audit", "monitor", "--state", str(state), "--broker", url, "--org", auditor.org_id, "--key",
                str(auditor.key_file), "--audience", settings.issuer, "--json"]
        first = runner.invoke(cli, args)
        assert first.exit_code == 0, first.output
        assert json.loads(first.output)["verdict"] == "first"
        trusted = json.loads(state.read_text())
        for i in range(3):
            log_event(runtime.engine, "test.event", actor="x", details={"i": i})
        grown = runner.invoke(cli, args)
        assert grown.exit_code == 0, grown.output
        report = json.loads(grown.output)
        assert report["verdict"] == "ok" and report["tree_size"] > trusted["tree_size"]
        good = state.read_text()

        forked = json.loads(good)
        forked["root_hash"] = base64.b64encode(b"\x01" * 32).decode()  # we trusted another history
        state.write_text(json.dumps(forked))
        log_event(runtime.engine, "test.event", actor="x", details={"i": 9})
        r = runner.invoke(cli, args)
        assert r.exit_code == 3 and json.loads(r.output)["verdict"] == "fork"
        assert json.loads(state.read_text()) == forked  # the trusted checkpoint is kept

        rolled = json.loads(good)
        rolled["tree_size"] += 1000  # we saw a bigger log than the broker now shows
        state.write_text(json.dumps(rolled))
        r = runner.invoke(cli, args[:-1])
        assert r.exit_code == 3 and "rollback" in r.output

        state.write_text(good)
        wrong_key = runner.invoke(cli, args + ["--log-key", "other+12345678+" + "A" * 44])
        assert wrong_key.exit_code in (2, 3) and "Traceback" not in wrong_key.output
