"""A pull through the provider's connector: the DataAddress names the connector, the connector asks the
broker for a signed decision, serves the rows, posts a receipt; the consumer acknowledges it. The broker
serves no rows (its old data-plane routes are gone)."""

from __future__ import annotations

import hashlib
import io
import json
import time

import pyarrow.csv as pacsv
import pytest
from sqlmodel import Session, select

from broker.audit.models import AuditEntry
from broker.policy.service import get_usage
from twinspace.client.broker import BrokerError
from twinspace.dataplane import DECISION, RECEIPT, sign_message, verify_message


def _events(engine, kind: str) -> list[dict]:
    with Session(engine) as s:
        return [json.loads(e.body) for e in s.exec(select(AuditEntry).where(AuditEntry.kind == kind))]


def _wait(predicate, seconds: float = 5.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def test_pull_from_the_connector_with_receipt_and_acknowledgement(world, engine, client):
    agreement = world.agreement()
    consumer = world.consumer.client
    tp = consumer.transfer_request(agreement["id"])
    pid = tp["providerPid"]
    endpoint, _token = consumer.data_address(tp)
    conn = world.provider.connector()
    assert endpoint == f"{conn.endpoint}/dataplane/transfers/{pid}"
    data = consumer.transfer_pull(tp)
    rows = pacsv.read_csv(io.BytesIO(data)).num_rows
    assert rows == 40  # the offer's max_rows obligation, applied at the connector
    assert consumer.last_receipt
    again = consumer.transfer_pull(tp)  # the same token, a fresh proof, the same leased decision
    assert again == data
    receipts = _wait(lambda: len(_events(engine, "transfer.receipt")) >= 2 and _events(engine, "transfer.receipt"))
    assert len(receipts) == 2
    claims = receipts[-1]["details"]["claims"]
    assert claims["tpid"] == pid and claims["rows"] == 40 and claims["sha256"] == hashlib.sha256(data).hexdigest()
    assert get_usage(Session(engine), agreement["id"])["rows"] == 80
    decisions = _events(engine, "transfer.decision")
    # one decision served both pulls: an allow leased to the connector for the transfer's next pulls
    assert len(decisions) == 1 and decisions[0]["details"]["allow"]
    assert 0 < decisions[0]["details"]["lease_seconds"] <= 30
    assert {r["details"]["claims"]["decision_id"] for r in receipts} == {decisions[0]["details"]["decision_id"]}
    ack = consumer.transfer_acknowledge(pid, consumer.last_receipt, hashlib.sha256(data).hexdigest(), len(data))
    assert ack == {"receipt_id": consumer.last_receipt, "matches": True}
    bad = consumer.transfer_acknowledge(pid, consumer.last_receipt, "0" * 64, len(data))
    assert bad["matches"] is False
    assert [e["details"]["matches"] for e in _events(engine, "transfer.acknowledged")] == [True, False]
    # the broker's own data plane is gone
    assert client.get(f"/dataplane/transfers/{pid}", headers=world.consumer.headers()).status_code in (404, 405)
    assert client.get(f"/contracts/agreements/{agreement['id']}/data",
                      headers=world.consumer.headers()).status_code in (404, 405)


def test_decisions_are_signed_for_the_connector_and_deny_after_revocation(world, runtime, settings):
    agreement = world.agreement()
    tp = world.consumer.client.transfer_request(agreement["id"])
    pid = tp["providerPid"]
    conn = world.provider.connector()
    body = {"transfer_id": pid, "token_jti": "j" * 16, "token_generation": 0, "nonce": "n" * 24, "format": "csv"}
    answer = world.provider.client.post("/dataplane/decisions", json=body)
    decision = verify_message(answer["decision"], runtime.broker_key.public_key(), DECISION,
                              audience=conn.endpoint, issuer=settings.issuer)
    assert decision["allow"] is True and decision["nonce"] == body["nonce"] and decision["token_jti"] == "j" * 16
    assert decision["sub"] == world.consumer.org_id and decision["obligations"]["max_rows"] == 40
    assert answer["agreement"]["document"]["id"] == agreement["id"]
    assert decision["agreement_sha256"] == answer["agreement"]["document_sha256"] == agreement["document_sha256"]
    # A connector that verified this document before is not sent the bundle again; a wrong hash still is.
    held = world.provider.client.post("/dataplane/decisions", json={**body, "agreement_sha256": agreement["document_sha256"]})
    assert held["agreement"] is None
    other = world.provider.client.post("/dataplane/decisions", json={**body, "agreement_sha256": "0" * 64})
    assert other["agreement"]["document_sha256"] == agreement["document_sha256"]
    with pytest.raises(BrokerError) as info:  # another provider's transfer
        world.provider2.client.post("/dataplane/decisions", json=body)
    assert info.value.status == 404
    with pytest.raises(BrokerError) as info:  # consumers do not ask for decisions
        world.consumer.client.post("/dataplane/decisions", json=body)
    assert info.value.status == 403
    with pytest.raises(BrokerError) as info:
        world.provider.client.post("/dataplane/decisions", json={**body, "nonce": "short"})
    assert info.value.status == 422
    stale = world.provider.client.post("/dataplane/decisions", json={**body, "token_generation": 7})
    claims = verify_message(stale["decision"], runtime.broker_key.public_key(), DECISION, audience=conn.endpoint,
                            issuer=settings.issuer)
    assert claims["allow"] is False and "stale_transfer_token" in claims["reasons"]
    world.provider.client.contract_revoke(agreement["id"], "done")
    denied = world.provider.client.post("/dataplane/decisions", json=body)
    claims = verify_message(denied["decision"], runtime.broker_key.public_key(), DECISION, audience=conn.endpoint,
                            issuer=settings.issuer)
    assert claims["allow"] is False and claims["reasons"]


def test_receipts_must_be_the_providers_own_and_are_idempotent(world, engine, settings):
    agreement = world.agreement()
    tp = world.consumer.client.transfer_request(agreement["id"])
    pid = tp["providerPid"]
    world.provider.connector()
    answer = world.provider.client.post("/dataplane/decisions", json={
        "transfer_id": pid, "token_jti": "k" * 16, "token_generation": 0, "nonce": "m" * 24, "format": "csv"})
    from twinspace.dataplane import unverified_claims

    decision_id = unverified_claims(answer["decision"])["decision_id"]
    claims = {"jti": "r" * 20, "receipt_id": "r" * 20, "kind": "transfer", "decision_id": decision_id,
              "agr": agreement["id"], "tpid": pid, "sub": world.consumer.org_id, "asset": {}, "rows": 5,
              "bytes": 50, "sha256": "a" * 64, "format": "csv", "complete": True}
    receipt = sign_message(world.provider.private_key, RECEIPT, issuer=world.provider.org_id,
                           audience=settings.issuer, claims=claims)
    assert world.provider.client.post("/dataplane/receipts", json={"receipt": receipt})["recorded"] is True
    assert world.provider.client.post("/dataplane/receipts", json={"receipt": receipt})["recorded"] is False
    assert len(_events(engine, "transfer.receipt")) == 1
    assert get_usage(Session(engine), agreement["id"])["rows"] == 5
    # signed by provider2 for provider2: names a transfer that is not its own
    forged = sign_message(world.provider2.private_key, RECEIPT, issuer=world.provider2.org_id,
                          audience=settings.issuer, claims={**claims, "jti": "s" * 20, "receipt_id": "s" * 20})
    with pytest.raises(BrokerError) as info:
        world.provider2.client.post("/dataplane/receipts", json={"receipt": forged})
    assert info.value.status == 403
    # signed by provider2 but sent as provider: wrong key
    with pytest.raises(BrokerError) as info:
        world.provider.client.post("/dataplane/receipts", json={"receipt": forged})
    assert info.value.status == 401 and info.value.code == "invalid_receipt"
