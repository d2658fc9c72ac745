"""``twinspace demo``: the whole data space end to end, offline, exit 0; a failing step exits 1 plainly."""

from __future__ import annotations

import socket

import pytest
from rich.console import Console
from typer.testing import CliRunner

from twinspace.demo import run as demo_module
from twinspace.cli.main import app as cli


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open an IP connection fails the demo (it must need no network and no services)."""
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"network use in the demo: {address!r}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda sock, address: guarded(sock, address) or 0)
    for name in ("TWINSPACE_DATABASE_URL", "TWINSPACE_REDIS_URL", "TWINSPACE_OPA_URL", "TWINSPACE_CHAIN_RPC_URL"):
        monkeypatch.delenv(name, raising=False)
    return attempts


def test_demo_runs_every_step_offline_and_exits_0(tmp_path, no_network):
    console = Console(record=True, width=240)
    code = demo_module.run_demo(data_dir=tmp_path / "demo", console=console)
    out = console.export_text()
    assert code == 0, out
    assert no_network == []
    # Foundation: the cast is registered and each participant authenticated with its own key.
    for who in ("Taipei Department of Transportation (provider)", "Smart Mobility Ltd (consumer)",
                "City Audit Office (auditor)"):
        assert who in out
    # Catalog: two assets published by connectors, then the catalog listed per role.
    assert "Taipei public parking lots" in out and "Building stock" in out and "Catalog by role" in out
    # Policies: one allow and one deny with its reason.
    assert "allow" in out and "deny" in out and "not among the permitted purposes" in out
    # Contracts: negotiated to FINALIZED, verified offline, data downloaded, then refused after revocation.
    assert "FINALIZED" in out and "offline check: VALID" in out
    assert "After revocation the next pull is refused: 410 agreement_revoked" in out
    # Privacy: one encrypted aggregate query (download refused: aggregation only) and one secure aggregation.
    assert "Encrypted queries on Public building energy use" in out and "2 of 10 spent" in out
    assert "aggregation-only agreement is refused: 403 policy_denied" in out
    assert "Secure aggregation agg_" in out and "across 2 providers" in out
    # Audit: the last step verifies the log and prints size, root and anchor.
    assert "Audit log verified" in out and "tree root" in out and "in block" in out
    assert "Demo completed" in out.rstrip().splitlines()[-1]
    assert "Demo failed" not in out
    # Every step left its trace in the audit log the last step verified.
    from sqlalchemy import create_engine, text

    db = create_engine(f"sqlite:///{tmp_path / 'demo' / 'twinspace.db'}")
    with db.connect() as conn:
        kinds = {row[0] for row in conn.execute(text("SELECT DISTINCT kind FROM audit_entry"))}
    db.dispose()
    assert {"org.registered", "auth.token_issued", "catalog.publish", "catalog.search", "policy.decision",
            "contract.requested", "contract.signed", "contract.countersigned", "contract.finalized",
            "transfer.pull", "transfer.served", "contract.revoked", "privacy.query",
            "privacy.budget_debited"} <= kinds, kinds


def test_a_failing_step_exits_1_with_a_clear_message(tmp_path, monkeypatch):
    def step_broken(ctx):
        """A step that breaks."""
        raise RuntimeError("the catalog is on fire")

    monkeypatch.setattr(demo_module, "STEPS", [demo_module.STEPS[0], step_broken])
    console = Console(record=True, width=200)
    assert demo_module.run_demo(data_dir=tmp_path / "demo", console=console) == 1
    out = console.export_text()
    assert "Demo failed: RuntimeError: the catalog is on fire" in out
    assert "Demo completed" not in out

    result = CliRunner().invoke(cli, ["demo", "--data-dir", str(tmp_path / "cli")])
    assert result.exit_code == 1
    assert "Demo failed" in result.output
