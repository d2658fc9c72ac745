"""Pure signing checks (no database): ``verify_agreement_bundle`` over hand-built bundles."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

from twinspace import agreements
from twinspace.crypto import b64url, generate_key, key_id, public_key_b64, sign

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _parties():
    return {"provider": generate_key(), "consumer": generate_key(), "broker": generate_key()}


def _document() -> dict:
    return agreements.agreement_document(
        agreement_id="agr_1", negotiation_id="neg_1", asset_id="ast_1", asset_version=2, content_hash="ab" * 32,
        dataset="urn:twinspace:dataset:ast_1:v2", offer_id="research", provider_id="org_p", consumer_id="org_c",
        purpose="research", scenario="flood", policy_id="purpose-restricted", policy_version="builtin",
        policy_params={"purposes": ["research"], "max_rows": 10}, obligations={"max_rows": 10, "columns": ["a"]},
        not_before=T0, not_after=T0 + timedelta(days=30), issued_at=T0, issuer="twinspace-broker")


def _bundle(keys, doc=None, sigs=None) -> dict:
    doc = doc or _document()
    orgs = {"provider": "org_p", "consumer": "org_c"}
    sigs = sigs or [agreements.sign_document(keys[r], doc, role=r, org_id=orgs[r]) for r in agreements.PARTY_ROLES]
    reg = [agreements.public_key_entry(key_id(keys[r].public_key()), orgs[r], r, public_key_b64(keys[r].public_key()),
                                    "active") for r in agreements.PARTY_ROLES]
    payload = agreements.countersignature_payload(doc, sigs, reg, finalized_at=T0, issuer="twinspace-broker")
    counter = agreements.countersign(keys["broker"], payload)
    return agreements.bundle(doc, sigs, counter, reg, issuer="twinspace-broker",
                          broker_public_key=public_key_b64(keys["broker"].public_key()), snapshot_at=T0,
                          status={"status": "FINALIZED", "revoked": False, "revoked_at": None})


def test_valid_bundle_has_no_problems_and_signatures_cover_rfc8785_bytes():
    keys = _parties()
    b = _bundle(keys)
    assert agreements.verify_agreement_bundle(b) == []
    broker = public_key_b64(keys["broker"].public_key())
    assert agreements.verify_agreement_bundle(b, trusted_broker_keys=[broker]) == []
    # key order / whitespace do not change the signed bytes
    reordered = json.loads(json.dumps(b["document"], sort_keys=False, indent=3))
    assert agreements.signing_input(reordered) == agreements.signing_input(dict(reversed(list(b["document"].items()))))


def test_tampered_document_is_reported():
    b = _bundle(_parties())
    bad = copy.deepcopy(b)
    bad["document"]["obligations"]["max_rows"] = 10_000
    problems = agreements.verify_agreement_bundle(bad)
    assert any("altered" in p for p in problems)
    assert any("provider signature does not verify" in p for p in problems)
    assert any("countersigned a different document" in p for p in problems)
    bad2 = copy.deepcopy(b)
    bad2["document"]["validity"]["not_after"] = "2099-01-01T00:00:00Z"
    bad2["document_sha256"] = agreements.document_sha256(bad2["document"])  # even with a recomputed hash
    assert agreements.verify_agreement_bundle(bad2)


def test_signature_over_a_different_canonical_form_is_refused():
    keys = _parties()
    doc = _document()
    pretty = json.dumps(doc, indent=2).encode()  # not RFC 8785
    sigs = [agreements.sign_document(keys["provider"], doc, role="provider", org_id="org_p"),
            {"role": "consumer", "org_id": "org_c", "kid": key_id(keys["consumer"].public_key()), "alg": "EdDSA",
             "signature": b64url(sign(keys["consumer"], pretty))}]
    problems = agreements.verify_agreement_bundle(_bundle(keys, doc, sigs))
    assert problems == ["the consumer signature does not verify over the canonical document"]


def test_wrong_key_and_forged_countersignature_are_refused():
    keys = _parties()
    b = _bundle(keys)
    # a signature by another key, claimed under the registered kid
    forged = copy.deepcopy(b)
    forged["signatures"][1]["signature"] = agreements.sign_document(generate_key(), b["document"], role="consumer",
                                                                 org_id="org_c")["signature"]
    assert any("consumer signature" in p for p in agreements.verify_agreement_bundle(forged))
    # swapping the consumer key in the registry snapshot breaks the broker attestation
    swapped = copy.deepcopy(b)
    evil = generate_key()
    swapped["registry"]["keys"][1].update(kid=key_id(evil.public_key()), public_key=public_key_b64(evil.public_key()))
    swapped["signatures"][1] = agreements.sign_document(evil, b["document"], role="consumer", org_id="org_c")
    assert agreements.verify_agreement_bundle(swapped)
    # a bundle re-countersigned by someone else fails against the pinned broker key
    other = _bundle({**keys, "broker": generate_key()})
    assert agreements.verify_agreement_bundle(other) == []
    pinned = agreements.verify_agreement_bundle(other, trusted_broker_keys=[public_key_b64(keys["broker"].public_key())])
    assert any("countersignature does not verify" in p for p in pinned)
    assert agreements.verify_agreement_bundle({"format": "nope"}) == ["not a twinspace-agreement-bundle/1 file"]
