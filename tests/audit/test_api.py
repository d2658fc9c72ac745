"""Audit routes through the real app: roles, filters, export, proofs, checkpoints, receipts, bad input."""

from __future__ import annotations

import base64

import pytest

from broker.audit import record_event
from twinspace.audit.merkle import verify_consistency, verify_inclusion
from twinspace.audit.note import open_checkpoint, parse_vkey
from broker.audit.service import verify_receipt
from twinspace.audit.verify import verify_log
from broker.storage.db import session_scope


def _b(s):
    return base64.b64decode(s)


@pytest.fixture
def auditor(make_org):
    return make_org("auditor", "City Audit Office")


@pytest.fixture
def populated(engine, make_org):
    provider = make_org("provider", "Provider A")
    with session_scope(engine) as s:
        record_event(s, "catalog.published", actor=provider.org_id, asset_id="asset-1", details={"title": "Parking"})
        record_event(s, "policy.decision", actor="org-consumer", outcome="deny", asset_id="asset-1",
                     agreement_id="agr-9", details={"reason": "purpose not allowed"})
        record_event(s, "transfer.completed", actor="org-consumer", asset_id="asset-1", agreement_id="agr-9",
                     details={"rows": 120, "bytes": 5000, "sha256": "ab" * 32})
    return provider


def test_entries_filters_and_roles(client, auditor, populated, make_org):
    r = client.get("/audit/entries", headers=auditor.headers(), params={"asset_id": "asset-1"})
    assert r.status_code == 200, r.text
    kinds = [e["entry"]["kind"] for e in r.json()["entries"]]
    assert kinds == ["catalog.published", "policy.decision", "transfer.completed"]
    r = client.get("/audit/entries", headers=auditor.headers(), params={"outcome": "deny"})
    [deny] = r.json()["entries"]
    assert deny["entry"]["details"] == {"reason": "purpose not allowed"} and deny["entry"]["agreement_id"] == "agr-9"
    r = client.get("/audit/entries", headers=auditor.headers(), params={"org": populated.org_id, "kind": "catalog.*"})
    assert [e["entry"]["kind"] for e in r.json()["entries"]] == ["catalog.published"]
    r = client.get("/audit/entries", headers=auditor.headers(), params={"kind": "auth.*", "limit": 1})
    assert r.json()["entries"][0]["entry"]["kind"].startswith("auth.") and r.json()["next_after_seq"] is not None
    r = client.get("/audit/entries", headers=auditor.headers(), params={"since": "2999-01-01T00:00:00Z"})
    assert r.json()["entries"] == []
    for role in ("provider", "consumer", "operator"):
        other = make_org(role)
        r = client.get("/audit/entries", headers=other.headers())
        assert r.status_code == 403 and r.json()["code"] == "wrong_role"
    assert client.get("/audit/entries").status_code == 401


def test_export_verifies_offline_with_checkpoints(client, auditor, populated, make_org):
    operator = make_org("operator")
    cp = client.post("/audit/checkpoints", headers=operator.headers())
    assert cp.status_code == 200, cp.text
    vkey = client.get("/audit/key", headers=auditor.headers()).json()["vkey"]
    r = client.get("/audit/export", headers=auditor.headers())
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/jsonl")
    lines = r.content.splitlines(keepends=True)
    checkpoint = open_checkpoint(cp.json()["note"], parse_vkey(vkey))
    assert checkpoint.tree_size == cp.json()["tree_size"] <= len(lines)
    report = verify_log(lines, [cp.json()["note"]], vkey)
    assert report.ok, report.problems
    assert report.entries == len(lines)
    # the export itself was audited (after the stream started)
    r = client.get("/audit/entries", headers=auditor.headers(), params={"kind": "audit.exported"})
    assert r.json()["entries"][0]["entry"]["actor"] == auditor.org_id


def test_inclusion_and_consistency_proofs(client, auditor, populated, engine):
    first = client.get("/audit/checkpoints/latest", headers=auditor.headers()).json()
    with session_scope(engine) as s:
        record_event(s, "key.rotated", actor="op", details={"kid": "k2"})
    second = client.post("/audit/checkpoints", headers=auditor.headers()).json()
    assert second["tree_size"] == first["tree_size"] + 1
    vkey = parse_vkey(client.get("/audit/key", headers=auditor.headers()).json()["vkey"])
    cp1, cp2 = open_checkpoint(first["note"], vkey), open_checkpoint(second["note"], vkey)
    entry = client.get(f"/audit/entries/{cp1.tree_size}", headers=auditor.headers()).json()
    p = client.get("/audit/proofs/inclusion", headers=auditor.headers(), params={"seq": cp1.tree_size}).json()
    assert p["tree_size"] == cp2.tree_size and p["checkpoint"] == second["note"]
    assert _b(p["leaf_hash"]) == _b(entry["leaf_hash"])
    verify_inclusion(p["leaf_index"], p["tree_size"], _b(p["leaf_hash"]), [_b(x) for x in p["proof"]], cp2.root_hash)
    c = client.get("/audit/proofs/consistency", headers=auditor.headers(),
                   params={"first": cp1.tree_size, "second": cp2.tree_size}).json()
    verify_consistency(cp1.tree_size, cp2.tree_size, cp1.root_hash, cp2.root_hash, [_b(x) for x in c["proof"]])
    listed = client.get("/audit/checkpoints", headers=auditor.headers()).json()["checkpoints"]
    assert [x["tree_size"] for x in listed][-2:] == [cp1.tree_size, cp2.tree_size]


@pytest.mark.parametrize("path,params,status,code", [
    ("/audit/proofs/inclusion", {"seq": 0}, 400, "index_out_of_range"),
    ("/audit/proofs/inclusion", {"seq": 10_000}, 400, "index_out_of_range"),
    ("/audit/proofs/inclusion", {"seq": 1, "tree_size": 10_000}, 400, "tree_size_out_of_range"),
    ("/audit/proofs/consistency", {"first": 0}, 400, "tree_size_out_of_range"),
    ("/audit/proofs/consistency", {"first": 5, "second": 3}, 400, "tree_size_out_of_range"),
    ("/audit/checkpoints/999999", {}, 404, "unknown_checkpoint"),
    ("/audit/entries/999999", {}, 404, "unknown_entry"),
    ("/audit/proofs/inclusion", {"seq": "x"}, 422, "validation_failed"),
])
def test_bad_requests_are_clear_problems(client, auditor, populated, path, params, status, code):
    r = client.get(path, headers=auditor.headers(), params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code


def test_receipts_for_own_entries_verify_offline(client, auditor, populated, make_org):
    r = client.get("/audit/entries", headers=auditor.headers(), params={"org": populated.org_id,
                                                                         "kind": "catalog.published"})
    seq = r.json()["entries"][0]["seq"]
    rec = client.get(f"/audit/entries/{seq}/receipt", headers=populated.headers())
    assert rec.status_code == 200, rec.text
    receipt = rec.json()
    entry = verify_receipt(receipt, receipt["log_key"])
    assert entry["kind"] == "catalog.published" and entry["_seq"] == seq
    forged = dict(receipt, body=receipt["body"].replace("Parking", "Parkinq"))
    with pytest.raises(ValueError):
        verify_receipt(forged, receipt["log_key"])
    stranger = make_org("consumer")
    r = client.get(f"/audit/entries/{seq}/receipt", headers=stranger.headers())
    assert r.status_code == 403 and r.json()["code"] == "not_your_entry"


def test_status_reports_anchoring_off(client, auditor, populated):
    r = client.get("/audit/status", headers=auditor.headers())
    assert r.status_code == 200
    body = r.json()
    assert body["log_size"] >= 3 and body["anchoring"]["mode"] == "off"
    r = client.post("/audit/anchors", headers=auditor.headers())
    assert r.status_code == 503 and r.json()["code"] == "anchoring_off"
