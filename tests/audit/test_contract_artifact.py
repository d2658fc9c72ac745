"""The committed AuditAnchor.json is what contracts/build.py compiles from AuditAnchor.vy."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"


def test_committed_artifact_matches_the_source():
    vyper = pytest.importorskip("vyper", reason="vyper (test extra) is needed to compile the contract")
    committed = json.loads((CONTRACTS / "AuditAnchor.json").read_text())
    if committed["compiler"] != f"vyper {vyper.__version__}":
        pytest.skip(f"artifact built with {committed['compiler']}, installed vyper {vyper.__version__}")
    spec = importlib.util.spec_from_file_location("build_contracts", CONTRACTS / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    fresh = build.build()
    assert fresh["abi"] == committed["abi"]
    assert fresh["bytecode"] == committed["bytecode"]
    assert fresh["deployedBytecode"] == committed["deployedBytecode"]
    names = {item.get("name") for item in committed["abi"]}
    assert {"anchor", "latest_size", "latest_root", "root_at", "owner", "Anchored"} <= names


def test_the_light_verifiers_event_abi_is_the_contracts():
    """twinspace.audit.chain reads anchors without the artifact; its copy of the event must be exact."""
    import json
    from pathlib import Path

    from twinspace.audit.chain import ANCHORED_EVENT_ABI

    artifact = json.loads((Path(__file__).resolve().parents[2] / "contracts" / "AuditAnchor.json").read_text())
    events = [x for x in artifact["abi"] if x.get("type") == "event" and x["name"] == "Anchored"]
    assert events == [ANCHORED_EVENT_ABI]
