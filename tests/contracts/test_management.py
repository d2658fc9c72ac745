"""Management API end to end: request, offer, accept, fix the agreement, both parties sign over the RFC 8785
bytes, the broker countersigns, the consumer downloads exactly the permitted rows/columns; revocation,
ACCESS_DECIDER and attacks (another consumer, a forged token, wrong/revoked keys, an altered bundle)."""

from __future__ import annotations

import copy
import csv
import io
import json

from sqlmodel import Session, select
from typer.testing import CliRunner

from broker.audit.models import AuditEntry
from broker.contracts import access, service
from twinspace.cli.contract import contract_app
from twinspace.agreements import sign_document, signing_input, verify_agreement_bundle
from twinspace.crypto import b64url, generate_key, key_id, public_key_b64, sign
from broker.identity.service import add_key, revoke_key


def _post(client, org, path, body=None):
    return client.post(path, json=body, headers=org.headers())


def _ok(resp, status=200):
    assert resp.status_code == status, resp.text
    return resp.json()


def _sign(org, role, agreement, key=None):
    entry = sign_document(key or org.private_key, agreement["document"], role=role, org_id=org.org_id)
    return {"kid": entry["kid"], "signature": entry["signature"]}


def _agreed(client, world, **offer):
    """REQUESTED → OFFERED → ACCEPTED → AGREED through the management API; returns the unsigned agreement."""
    neg = _ok(_post(client, world.consumer, "/contracts/negotiations",
                    {"asset_id": world.asset["id"], "offer_id": "research", "purpose": "research",
                     "scenario": "flood"}), 201)
    pid = neg["providerPid"]
    assert neg["state"] == "REQUESTED"
    assert _ok(_post(client, world.provider, f"/contracts/negotiations/{pid}/offer", offer or None))["state"] == "OFFERED"
    assert _ok(_post(client, world.consumer, f"/contracts/negotiations/{pid}/accept"))["state"] == "ACCEPTED"
    agreement = _ok(_post(client, world.provider, f"/contracts/negotiations/{pid}/agree"), 201)
    assert agreement["status"] == "AGREED" and agreement["signatures"] == []
    assert agreement["signing_input"] == b64url(signing_input(agreement["document"]))
    return pid, agreement


def _finalized(client, world, **offer):
    pid, agreement = _agreed(client, world, **offer)
    aid = agreement["id"]
    assert _ok(_post(client, world.consumer, f"/contracts/agreements/{aid}/signatures",
                     _sign(world.consumer, "consumer", agreement)))["status"] == "AGREED"
    final = _ok(_post(client, world.provider, f"/contracts/agreements/{aid}/signatures",
                      _sign(world.provider, "provider", agreement)))
    assert final["status"] == "FINALIZED" and final["countersignature"]["payload"]["document_sha256"]
    return pid, final


def _rows(resp):
    return list(csv.DictReader(io.StringIO(resp.text)))


def test_negotiate_sign_countersign_download_revoke(world, client, runtime, tmp_path):
    pid, agreement = _finalized(client, world, max_rows=7, columns=["floor_area", "building_id"])
    aid = agreement["id"]
    doc = agreement["document"]
    assert doc["asset"] == {"id": world.asset["id"], "version": world.asset["version"],
                            "content_hash": world.asset["content_hash"], "offer_id": "research"}
    assert (doc["consumer_id"], doc["provider_id"]) == (world.consumer.org_id, world.provider.org_id)
    assert doc["policy"]["id"] == "purpose-restricted" and doc["policy"]["params"]["purposes"]
    assert doc["obligations"] == {"max_rows": 7, "columns": ["building_id", "floor_area"]}
    assert doc["scenario"] == "flood" and doc["validity"]["not_before"] < doc["validity"]["not_after"]
    assert _ok(client.get(f"/contracts/negotiations/{pid}", headers=world.consumer.headers()))["state"] == "FINALIZED"

    # offline bundle: valid with the pinned broker key, via the function and the CLI
    bundle = _ok(client.get(f"/contracts/agreements/{aid}/bundle", headers=world.consumer.headers()))
    broker_pub = public_key_b64(runtime.broker_key.public_key())
    assert verify_agreement_bundle(bundle, trusted_broker_keys=[broker_pub]) == []
    good = tmp_path / "agreement.json"
    good.write_text(json.dumps(bundle))
    assert CliRunner().invoke(contract_app, ["verify", str(good), "--broker-key", broker_pub]).exit_code == 0

    # exactly the permitted rows and columns, in both formats
    resp = client.get(f"/contracts/agreements/{aid}/data", params={"format": "csv"}, headers=world.consumer.headers())
    assert resp.status_code == 200, resp.text
    rows = _rows(resp)
    assert len(rows) == 7 and list(rows[0]) == ["building_id", "floor_area"]
    assert [r["building_id"] for r in rows] == [f"B{i:04d}" for i in range(7)]
    assert resp.headers["x-row-count"] == "7"
    as_json = _ok(client.get(f"/contracts/agreements/{aid}/data", params={"format": "json"},
                             headers=world.consumer.headers()))
    assert len(as_json) == 7 and set(as_json[0]) == {"building_id", "floor_area"}
    assert client.get(f"/contracts/agreements/{aid}/data", params={"format": "xml"},
                      headers=world.consumer.headers()).status_code == 422

    # the provider revokes: the next download is refused
    assert _ok(_post(client, world.provider, f"/contracts/agreements/{aid}/revoke", {"reason": "pilot over"}))[
        "status"] == "REVOKED"
    resp = client.get(f"/contracts/agreements/{aid}/data", headers=world.consumer.headers())
    assert (resp.status_code, resp.json()["code"]) == (410, "agreement_revoked")

    with Session(runtime.engine) as s:
        events = list(s.exec(select(AuditEntry).where(AuditEntry.agreement_id == aid)))
    kinds = [e.kind for e in events]
    for kind in ("contract.agreed", "contract.signed", "contract.verified", "contract.finalized",
                 "contract.countersigned", "contract.data_transfer", "contract.revoked", "contract.data_refused"):
        assert kind in kinds, kind
    assert kinds.count("contract.signed") == 2 and kinds.count("contract.data_transfer") == 2
    transfer = next(e for e in events if e.kind == "contract.data_transfer")
    body = json.loads(transfer.body)
    details = body.get("details", body)
    assert details["rows"] == 7 and details["bytes"] > 0 and details["content_hash"] == world.asset["content_hash"]
    assert "B0000" not in transfer.body  # no row data in the audit log


def test_signature_checks(world, client, engine):
    _, agreement = _agreed(client, world)
    aid, url = agreement["id"], f"/contracts/agreements/{agreement['id']}/signatures"
    # over other bytes (pretty JSON instead of RFC 8785)
    pretty = b64url(sign(world.consumer.private_key, json.dumps(agreement["document"], indent=2).encode()))
    resp = _post(client, world.consumer, url, {"kid": world.consumer.kid, "signature": pretty})
    assert (resp.status_code, resp.json()["code"]) == (400, "invalid_signature")
    # an unregistered key
    resp = _post(client, world.consumer, url, _sign(world.consumer, "consumer", agreement, key=generate_key()))
    assert (resp.status_code, resp.json()["code"]) == (401, "unknown_key")
    # another org's (registered) key
    resp = _post(client, world.consumer, url, _sign(world.consumer2, "consumer", agreement,
                                                    key=world.consumer2.private_key))
    assert (resp.status_code, resp.json()["code"]) == (403, "wrong_signer")
    # a revoked key of the signer
    spare = generate_key()
    with Session(engine) as s:
        add_key(s, world.consumer.org_id, public_key_b64(spare.public_key()), actor="test")
        revoke_key(s, world.consumer.org_id, key_id(spare.public_key()), actor="test")
        s.commit()
    resp = _post(client, world.consumer, url, _sign(world.consumer, "consumer", agreement, key=spare))
    assert (resp.status_code, resp.json()["code"]) == (401, "revoked_key")
    # a non-party cannot sign nor see it; the right signature still works once, not twice
    resp = _post(client, world.consumer2, url, _sign(world.consumer2, "consumer", agreement))
    assert resp.status_code == 404
    ok = _sign(world.consumer, "consumer", agreement)
    _ok(_post(client, world.consumer, url, ok))
    assert _post(client, world.consumer, url, ok).json()["code"] == "already_signed"
    # data is refused before finalisation
    resp = client.get(f"/contracts/agreements/{aid}/data", headers=world.consumer.headers())
    assert (resp.status_code, resp.json()["code"]) == (409, "agreement_not_finalized")


def test_attacks_other_consumer_forged_token_altered_bundle(world, client, runtime, tmp_path):
    _, agreement = _finalized(client, world)
    aid = agreement["id"]
    resp = client.get(f"/contracts/agreements/{aid}/data", headers=world.consumer2.headers())
    assert (resp.status_code, resp.json()["code"]) == (403, "not_agreement_consumer")
    assert client.get(f"/contracts/agreements/{aid}/bundle", headers=world.consumer2.headers()).status_code == 404
    # the provider cannot pull through the consumer's route
    assert client.get(f"/contracts/agreements/{aid}/data", headers=world.provider.headers()).status_code == 403
    # a forged token (signed by the consumer's own key, not the broker)
    header = b64url(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": world.consumer.org_id, "role": "consumer", "iss": "twinspace-broker",
                                "cnf": {"kid": world.consumer.kid}, "jti": "x", "exp": 9999999999}).encode())
    forged = f"{header}.{claims}." + b64url(sign(world.consumer.private_key, f"{header}.{claims}".encode()))
    resp = client.get(f"/contracts/agreements/{aid}/data", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status_code == 401
    assert client.get(f"/contracts/agreements/{aid}/data").status_code == 401
    # an altered bundle: offline verification and the CLI refuse it
    bundle = _ok(client.get(f"/contracts/agreements/{aid}/bundle", headers=world.consumer.headers()))
    altered = copy.deepcopy(bundle)
    altered["document"]["obligations"]["max_rows"] = 1_000_000
    assert verify_agreement_bundle(altered)
    path = tmp_path / "altered.json"
    path.write_text(json.dumps(altered))
    result = CliRunner().invoke(contract_app, ["verify", str(path)])
    assert result.exit_code == 1 and "altered" in result.output


def test_access_decider_hook_and_obligations(world, client, monkeypatch):
    _, agreement = _finalized(client, world)
    aid = agreement["id"]
    calls = []

    def deny(session, agr, principal, action, usage):
        calls.append((agr.id, principal.org_id, action, usage["purpose"]))
        return False, ["purpose not allowed today"], {}

    monkeypatch.setattr(access, "ACCESS_DECIDER", deny)
    resp = client.get(f"/contracts/agreements/{aid}/data", headers=world.consumer.headers())
    assert (resp.status_code, resp.json()["code"]) == (403, "access_denied")
    assert calls == [(aid, world.consumer.org_id, "read", "research")]

    monkeypatch.setattr(access, "ACCESS_DECIDER",
                        lambda *a: (True, ["ok"], {"max_rows": 3, "columns": ["district", "building_id"]}))
    rows = _rows(client.get(f"/contracts/agreements/{aid}/data", headers=world.consumer.headers()))
    assert len(rows) == 3 and list(rows[0]) == ["building_id", "district"]
    # without a decider obligation, the offer's own max_rows (40) applies
    monkeypatch.setattr(access, "ACCESS_DECIDER", service.default_access_decider)
    assert len(_rows(client.get(f"/contracts/agreements/{aid}/data", headers=world.consumer.headers()))) == 40


def test_out_of_order_and_asset_change(world, client):
    neg = _ok(_post(client, world.consumer, "/contracts/negotiations",
                    {"asset_id": world.asset["id"], "offer_id": "research", "purpose": "research"}), 201)
    pid = neg["providerPid"]
    resp = _post(client, world.consumer, f"/contracts/negotiations/{pid}/accept")
    assert (resp.status_code, resp.json()["code"]) == (409, "invalid_transition")
    assert _post(client, world.consumer, f"/contracts/negotiations/{pid}/agree").status_code == 403
    assert _post(client, world.provider2, f"/contracts/negotiations/{pid}/agree").status_code == 404
    resp = _post(client, world.consumer, "/contracts/negotiations",
                 {"asset_id": world.asset["id"], "offer_id": "nope", "purpose": "research"})
    assert (resp.status_code, resp.json()["code"]) == (404, "offer_not_found")
