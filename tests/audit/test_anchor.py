"""Anchoring checkpoints on an EVM chain: the in-process chain, a real anvil node, a node that is down."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from broker.app import create_app
from broker.audit import record_event
from broker.audit.anchor import Chain, get_anchorer
from twinspace.audit.chain import read_anchor_events
from broker.audit.service import create_checkpoint, log_vkey
from broker.audit.tools import db_checkpoint_notes, db_lines
from twinspace.audit.verify import AnchorRecord, verify_log
from twinspace.cli.main import app as cli
from broker.runtime import Runtime
from broker.settings import Settings
from broker.storage.db import session_scope


def _events(engine, n, kind="transfer.completed"):
    for i in range(n):
        with session_scope(engine) as s:
            record_event(s, kind, actor="org-1", details={"i": i})


def _runtime(tmp_path, database_url=None, **kw) -> Runtime:
    return Runtime.start(Settings(data_dir=tmp_path / "b", database_url=database_url, redis_url=None, **kw))


def test_contract_requires_owner_and_strictly_growing_sizes():
    chain = Chain.embedded_chain()
    chain.deploy()
    chain.anchor(5, b"\x01" * 32)
    assert chain.latest() == (5, b"\x01" * 32)
    with pytest.raises(Exception, match="grow"):
        chain.anchor(5, b"\x02" * 32)
    with pytest.raises(Exception, match="grow"):
        chain.anchor(4, b"\x02" * 32)
    c = chain.contract()
    with pytest.raises(Exception, match="only the broker"):
        c.functions.anchor(9, b"\x03" * 32).transact({"from": chain.w3.eth.accounts[1]})
    chain.anchor(9, b"\x03" * 32)
    events = read_anchor_events(chain.w3, chain.address)
    assert [(e.tree_size, e.root_hash) for e in events] == [(5, b"\x01" * 32), (9, b"\x03" * 32)]


def test_embedded_anchoring_and_verification(tmp_path, database_url):
    rt = _runtime(tmp_path, database_url, audit_anchoring="embedded")  # chain id 131277322940537 > 2**31
    _events(rt.engine, 5)
    anchorer = get_anchorer(rt)
    first = anchorer.anchor_latest()
    assert first["anchored"] and first["tree_size"] == create_checkpoint(rt).tree_size
    assert anchorer.anchor_latest()["anchored"] is False  # nothing new: one anchor per checkpoint, not per call
    _events(rt.engine, 3)
    second = anchorer.anchor_latest()
    assert second["tree_size"] == first["tree_size"] + 3
    status = anchorer.status()
    assert status["lag_entries"] == 0 and status["anchored_tree_size"] == second["tree_size"]
    anchors = anchorer.events()
    report = verify_log(db_lines(rt.engine), db_checkpoint_notes(rt.engine), log_vkey(rt), anchors=anchors)
    assert report.ok and report.anchors_checked == 2 and report.latest_anchor.tree_size == second["tree_size"]
    # an anchor that does not match the entries, or that goes backwards, is reported
    bad = anchors + [AnchorRecord(second["tree_size"], b"\x00" * 32, 99)]
    report = verify_log(db_lines(rt.engine), db_checkpoint_notes(rt.engine), log_vkey(rt), anchors=bad)
    assert {p.kind for p in report.problems} == {"anchor_order", "anchor_mismatch"}
    rt.engine.dispose()


def test_anvil_anchoring_with_cli_verification(anvil_url, tmp_path):
    rt = _runtime(tmp_path, chain_rpc_url=anvil_url)  # auto → rpc
    _events(rt.engine, 4)
    anchorer = get_anchorer(rt)
    assert anchorer.mode == "rpc"
    t0 = time.perf_counter()
    res = anchorer.anchor_latest()
    assert res["anchored"] and time.perf_counter() - t0 < 30
    assert res["chain_id"] == 31337  # anvil's default chain
    # the contract address is remembered: a restarted broker reuses it instead of deploying again
    rt2 = Runtime.start(rt.settings)
    _events(rt2.engine, 2)
    res2 = get_anchorer(rt2).anchor_latest()
    assert res2["contract"] == res["contract"] and res2["tree_size"] == res["tree_size"] + 2
    runner = CliRunner()
    r = runner.invoke(cli, ["audit", "verify", "--data-dir", str(rt.settings.data_dir), "--rpc-url", anvil_url,
                            "--contract", res["contract"], "--json"])
    assert r.exit_code == 0, r.output
    assert '"anchors_checked": 2' in r.output
    # the auditor's own view of the chain catches a rewritten log
    from tests.audit.tamper_helpers import drop_append_only_guards

    drop_append_only_guards(rt.engine)
    with rt.engine.begin() as conn:
        conn.execute(__import__("sqlalchemy").text("DELETE FROM audit_checkpoint"))
        conn.execute(__import__("sqlalchemy").text("DELETE FROM audit_entry WHERE seq = (SELECT max(seq) FROM audit_entry)"))
    r = runner.invoke(cli, ["audit", "verify", "--data-dir", str(rt.settings.data_dir), "--rpc-url", anvil_url,
                            "--contract", res["contract"], "--json"])
    assert r.exit_code == 1 and '"truncated"' in r.output
    rt.engine.dispose()
    rt2.engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_node_down_log_keeps_working_and_anchoring_catches_up(tmp_path):
    from tests.audit.anvil import ensure_anvil

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(data_dir=tmp_path / "b", database_url=None, redis_url=None, chain_rpc_url=url,
                        audit_anchor_interval_seconds=1, audit_checkpoint_interval_seconds=0.2)
    rt = Runtime.start(settings)
    app = create_app(settings, runtime=rt)
    with TestClient(app) as client:
        from broker.identity.onboarding import create_org_with_key
        from twinspace.client.broker import BrokerClient

        new = create_org_with_key(rt.engine, name="Auditor", role="auditor", key_dir=settings.data_dir / "keys")
        auditor = BrokerClient(client, new.org_id, new.private_key, audience=settings.issuer)
        _events(rt.engine, 3)
        r = client.post("/audit/anchors", headers=auditor.headers())
        assert r.status_code == 503 and r.json()["code"] == "chain_unavailable"
        _events(rt.engine, 2)  # the log keeps working
        cp = client.post("/audit/checkpoints", headers=auditor.headers())
        assert cp.status_code == 200
        st = client.get("/audit/status", headers=auditor.headers()).json()["anchoring"]
        assert st["lag_entries"] == cp.json()["tree_size"] and st["last_error"] and st["consecutive_failures"] >= 1
        assert st["lag_seconds"] is not None
        binary, reason = ensure_anvil()
        if binary is None:
            pytest.skip(reason)
        node = subprocess.Popen([str(binary), "--host", "127.0.0.1", "--port", str(port), "--silent"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30  # the background daemon retries on its own
            while time.monotonic() < deadline:
                st = client.get("/audit/status", headers=auditor.headers()).json()["anchoring"]
                if st["anchored_tree_size"] and st["lag_entries"] == 0:
                    break
                time.sleep(0.3)
            assert st["lag_entries"] == 0 and st["last_error"] is None, st
            assert st["anchored_tree_size"] >= cp.json()["tree_size"]
        finally:
            node.terminate()
            node.wait(timeout=10)
    rt.engine.dispose()


def test_replicas_racing_to_anchor_the_same_checkpoint(tmp_path):
    rt = _runtime(tmp_path, audit_anchoring="embedded")
    _events(rt.engine, 3)
    anchorer = get_anchorer(rt)
    chain = anchorer.chain()
    cp = create_checkpoint(rt)
    chain.anchor(cp.tree_size, bytes.fromhex(cp.root_hash))  # another replica's transaction lands first
    real_latest, calls = chain.latest, []

    def stale_then_real():  # this replica read the chain just before that transaction was mined
        calls.append(1)
        return (0, b"") if len(calls) == 1 else real_latest()

    chain.latest = stale_then_real
    res = anchorer.anchor_latest()  # its own transaction reverts: the size must grow
    assert len(calls) == 2
    assert res == {"anchored": False, "tree_size": cp.tree_size, "reason": "anchored by another replica"}
    assert anchorer.status()["last_error"] is None and anchorer.failures == 0
    rt.engine.dispose()
