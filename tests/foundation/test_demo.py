"""``twinspace demo``: the whole data space end to end, offline, exit 0; a failing step exits 1 plainly;
and a canary planted in the providers' rows never reaches the broker's files, database or logs."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket

import pytest
from rich.console import Console
from typer.testing import CliRunner

from twinspace.demo import run as demo_module
from twinspace.cli.main import app as cli


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open an IP connection beyond loopback fails the demo (it needs no network and no
    services: its broker and connectors talk over 127.0.0.1)."""
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                loopback = ipaddress.ip_address(address[0]).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                attempts.append(address)
                raise OSError(f"network use in the demo: {address!r}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda sock, address: guarded(sock, address) or 0)
    for name in ("TWINSPACE_DATABASE_URL", "TWINSPACE_REDIS_URL", "TWINSPACE_OPA_URL", "TWINSPACE_CHAIN_RPC_URL"):
        monkeypatch.delenv(name, raising=False)
    return attempts


@pytest.fixture
def canary(monkeypatch):
    """A value planted in every row the demo's providers hold (the building stock and the energy tables)."""
    import pyarrow as pa

    from twinspace.demo import privacy as privacy_demo
    from twinspace.testing import synthetic

    value = "CANARY" + secrets.token_hex(8)
    stock, energy = synthetic.building_stock, privacy_demo._energy_table

    def planted(table: pa.Table, column: str) -> pa.Table:
        marked = pa.array([f"{value}-{v}" for v in table.column(column).to_pylist()])
        return table.set_column(table.column_names.index(column), column, marked)

    monkeypatch.setattr(synthetic, "building_stock", lambda *a, **k: planted(stock(*a, **k), "source_id"))
    monkeypatch.setattr(privacy_demo, "_energy_table", lambda *a, **k: planted(energy(*a, **k), "building_code"))
    return value


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.args!r}")


def _files_holding(root, needle: bytes) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_demo_runs_every_step_offline_and_exits_0(tmp_path, no_network, canary):
    console = Console(record=True, width=240)
    logs = _Records()
    root_logger = logging.getLogger()
    previous = root_logger.level
    root_logger.addHandler(logs)
    root_logger.setLevel(logging.DEBUG)  # everything the broker process logs, SQL included
    try:
        code = demo_module.run_demo(data_dir=tmp_path / "demo", console=console, audit_bundle=tmp_path / "bundle")
    finally:
        root_logger.removeHandler(logs)
        root_logger.setLevel(previous)
    out = console.export_text()
    assert code == 0, out
    assert no_network == []
    # The canary: in the providers' connectors (the planting worked), nowhere at the broker — not in its
    # directory (database, WAL, keys, anything), not in the audit bundle it exported, not in its logs.
    demo = tmp_path / "demo"
    needle = canary.encode()
    assert _files_holding(demo / "connectors", needle), "the canary was not planted in the providers' rows"
    assert _files_holding(demo / "broker", needle) == []
    assert _files_holding(tmp_path / "bundle", needle) == []
    assert [line for line in logs.lines if canary in line] == []
    assert not list((demo / "broker").rglob("*.arrow"))
    # Foundation: the cast is registered and each participant authenticated with its own key.
    for who in ("Taipei Department of Transportation (provider)", "Smart Mobility Ltd (consumer)",
                "City Audit Office (auditor)"):
        assert who in out
    # Catalog: two assets published by connectors, then the catalog listed per role.
    assert "Taipei public parking lots" in out and "Building stock" in out and "Catalog by role" in out
    # Policies: one allow and one deny with its reason.
    assert "allow" in out and "deny" in out and "not among the permitted purposes" in out
    # Contracts: negotiated to FINALIZED, verified offline, data pulled from the provider's connector, then
    # refused after revocation (by the broker for a new token, by the connector for a token issued before).
    assert "FINALIZED" in out and "offline check: VALID" in out
    assert "After revocation the next pull is refused: 410 agreement_revoked" in out
    assert "The connector refuses a token issued before the revocation: 403" in out
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

    db = create_engine(f"sqlite:///{tmp_path / 'demo' / 'broker' / 'twinspace.db'}")
    with db.connect() as conn:
        kinds = {row[0] for row in conn.execute(text("SELECT DISTINCT kind FROM audit_entry"))}
    db.dispose()
    assert {"org.registered", "auth.token_issued", "catalog.publish", "catalog.search", "policy.decision",
            "contract.requested", "contract.signed", "contract.countersigned", "contract.finalized",
            "connector.registered", "transfer.decision", "transfer.receipt", "contract.revoked", "privacy.query",
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
