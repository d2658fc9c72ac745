"""Signatures: canonical form, wrong/revoked keys, tampering, and offline verification (incl. the CLI)."""

from __future__ import annotations

import copy
import json

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from twinspace.cli.main import app as cli
from twinspace.dsp.messages import CONTEXT
from twinspace.agreements import sign_document, verify_bundle
from twinspace.crypto import b64url, generate_key, key_id, public_key_b64, sign
from broker.identity.service import add_key, revoke_key
from twinspace.client.broker import BrokerError
from tests.contracts.helpers import offer_iri


def _to_agreed_state(world):
    c, p = world.consumer.client, world.provider.client
    pid = c.contract_request(offer_iri(world.asset), "research")["providerPid"]
    p.contract_offer(pid)
    c.contract_accept(pid)
    draft = p.post(f"/contracts/negotiations/{pid}/agreement-draft")
    return pid, draft["document"], c.get(f"/dsp/negotiations/{pid}")


def _send_agreement(world, pid, doc, signature, neg):
    return world.provider.client.post(f"/dsp/negotiations/{pid}/agreement", json={
        "@context": CONTEXT, "@type": "ContractAgreementMessage", "providerPid": pid,
        "consumerPid": neg["consumerPid"], "agreement": doc, "twin:signature": signature})


def test_signature_over_another_canonical_form_or_other_bytes_is_refused(world):
    pid, doc, neg = _to_agreed_state(world)
    key = world.provider.private_key
    loose = json.dumps(doc, indent=2).encode()  # same content, not RFC 8785
    bad = {"role": "provider", "org_id": world.provider.org_id, "kid": key_id(key.public_key()), "alg": "EdDSA",
           "signature": b64url(sign(key, loose))}
    with pytest.raises(BrokerError) as err:
        _send_agreement(world, pid, doc, bad, neg)
    assert (err.value.status, err.value.code) == (400, "invalid_signature")
    altered = copy.deepcopy(doc)
    altered["obligations"] = {}
    with pytest.raises(BrokerError) as err:  # the provider cannot slip in other terms
        _send_agreement(world, pid, altered, sign_document(key, altered, role="provider",
                                                           org_id=world.provider.org_id), neg)
    assert (err.value.status, err.value.code) == (409, "agreement_mismatch")
    # someone else's key, claimed as the provider's
    other = world.consumer2.private_key
    with pytest.raises(BrokerError) as err:
        _send_agreement(world, pid, doc, sign_document(other, doc, role="provider", org_id=world.provider.org_id), neg)
    assert (err.value.status, err.value.code) == (403, "wrong_signer")
    # an unregistered key
    with pytest.raises(BrokerError) as err:
        _send_agreement(world, pid, doc, sign_document(generate_key(), doc, role="provider",
                                                       org_id=world.provider.org_id), neg)
    assert (err.value.status, err.value.code) == (401, "unknown_key")
    assert _send_agreement(world, pid, doc, sign_document(key, doc, role="provider",
                                                          org_id=world.provider.org_id), neg)["state"] == "AGREED"


def test_revoked_signing_key_is_refused_at_signing_and_at_finalisation(world, engine):
    pid, doc, neg = _to_agreed_state(world)
    spare = generate_key()
    with Session(engine) as s:
        add_key(s, world.provider.org_id, public_key_b64(spare.public_key()), actor="test")
        s.commit()
    assert _send_agreement(world, pid, doc, sign_document(spare, doc, role="provider",
                                                          org_id=world.provider.org_id), neg)["state"] == "AGREED"
    world.consumer.client.contract_verify(pid)
    with Session(engine) as s:
        revoke_key(s, world.provider.org_id, key_id(spare.public_key()), actor="test")
        s.commit()
    with pytest.raises(BrokerError) as err:
        world.provider.client.contract_finalize(pid)
    assert (err.value.status, err.value.code) == (401, "revoked_key")
    assert world.consumer.client.get(f"/dsp/negotiations/{pid}")["state"] == "VERIFIED"
    # a fresh negotiation signed with the revoked key is refused outright
    pid2, doc2, neg2 = _to_agreed_state(world)
    with pytest.raises(BrokerError) as err:
        _send_agreement(world, pid2, doc2, sign_document(spare, doc2, role="provider",
                                                         org_id=world.provider.org_id), neg2)
    assert err.value.code == "revoked_key"


def test_offline_verification_detects_tampering(world, runtime, tmp_path):
    agreement = world.agreement()
    bundle = world.consumer.client.contract_export(agreement["id"])
    broker_pub = public_key_b64(runtime.broker_key.public_key())
    good = verify_bundle(bundle, trusted_broker_keys=[broker_pub])
    assert good["valid"] and good["warnings"] == [] and good["consumer_id"] == world.consumer.org_id
    unpinned = verify_bundle(bundle)
    assert unpinned["valid"] and any("pin it" in w for w in unpinned["warnings"])

    def broken(mutate):
        b = copy.deepcopy(bundle)
        mutate(b)
        return verify_bundle(b, trusted_broker_keys=[broker_pub])

    def more_rows(b):
        b["document"]["obligations"]["max_rows"] = 10**6

    def more_rows_rehashed(b):
        more_rows(b)
        from twinspace.agreements import document_sha256
        b["document_sha256"] = document_sha256(b["document"])

    def swap_key(b):  # attacker replaces the consumer key and signature with their own
        k = generate_key()
        sig = sign_document(k, b["document"], role="consumer", org_id=b["document"]["consumer_id"])
        b["signatures"] = [s if s["role"] != "consumer" else sig for s in b["signatures"]]
        b["registry"]["keys"].append({"kid": sig["kid"], "org_id": b["document"]["consumer_id"], "role": "consumer",
                                      "public_key": public_key_b64(k.public_key()), "status": "active"})

    def drop_counter(b):
        del b["countersignature"]

    for mutate, needle in ((more_rows, "altered"), (more_rows_rehashed, "does not verify"),
                           (swap_key, "differ from those the broker countersigned"),
                           (drop_counter, "countersignature is missing")):
        report = broken(mutate)
        assert not report["valid"] and any(needle in e for e in report["errors"]), (mutate.__name__, report)
    forged_broker = verify_bundle(bundle, trusted_broker_keys=[public_key_b64(generate_key().public_key())])
    assert not forged_broker["valid"]

    runner = CliRunner()
    path = tmp_path / "agreement.json"
    path.write_text(json.dumps(bundle))
    result = runner.invoke(cli, ["contract", "verify", str(path), "--broker-key", broker_pub])
    assert result.exit_code == 0, result.output
    assert "VALID" in result.output
    tampered = copy.deepcopy(bundle)
    more_rows_rehashed(tampered)
    path.write_text(json.dumps(tampered))
    result = runner.invoke(cli, ["contract", "verify", str(path), "--broker-key", broker_pub, "--json"])
    assert result.exit_code == 1 and json.loads(result.output)["valid"] is False
