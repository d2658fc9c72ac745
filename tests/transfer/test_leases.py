"""Leased decisions, end to end with a live broker and the provider's real connector: one broker decision
serves the pulls of a transfer while nothing changes, and every change that could turn an allow into a
deny — the transfer suspended, the agreement revoked, the consumer suspended or its key revoked, a policy
uploaded — is pushed to the connector in the request that made it, so the very next pull is refused.
Receipts arrive at the broker in batches; a batch is checked receipt by receipt."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session, select

from broker.audit.models import AuditEntry
from broker.transfer.models import DataplaneReceipt
from tests.transfer.test_attacks import _ok, _pop, _pull_raw, _refused


def _decisions(engine, agreement_id: str) -> list[dict]:
    with Session(engine) as s:
        return [json.loads(e.body)["details"] for e in s.exec(select(AuditEntry).where(
            AuditEntry.agreement_id == agreement_id, AuditEntry.kind == "transfer.decision"))]


@pytest.fixture
def leased(world, engine):
    """A started transfer whose first pull took a leased decision."""
    agreement = world.agreement()
    tp = world.consumer.client.transfer_request(agreement["id"])
    endpoint, token = world.consumer.client.data_address(tp)
    conn = world.provider.connector()
    _ok(_pull_raw(endpoint, token, _pop(world.consumer, endpoint, token)), 40)
    assert len(conn.leases) == 1
    return agreement, tp, endpoint, token, conn


def test_one_decision_serves_many_pulls(world, engine, leased):
    agreement, tp, endpoint, token, conn = leased
    for _ in range(4):
        _ok(_pull_raw(endpoint, token, _pop(world.consumer, endpoint, token)), 40)
    decisions = _decisions(engine, agreement["id"])
    assert len(decisions) == 1 and decisions[0]["allow"] and decisions[0]["lease_seconds"] == 30
    deadline = time.time() + 10  # receipts reach the broker just after the bodies, in batches
    while True:
        with Session(engine) as s:
            receipts = s.exec(select(DataplaneReceipt).where(DataplaneReceipt.agreement_id == agreement["id"])).all()
        if len(receipts) >= 5 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert len(receipts) == 5 and {r.decision_id for r in receipts} == {decisions[0]["decision_id"]}


@pytest.mark.parametrize("change", ["suspend_transfer", "revoke_agreement", "suspend_consumer", "revoke_key",
                                    "upload_policy"])
def test_every_change_is_pushed_and_the_next_pull_is_refused(world, engine, leased, change):
    agreement, tp, endpoint, token, conn = leased
    pid, me = tp["providerPid"], world.consumer
    if change == "suspend_transfer":
        me.client.transfer_message(pid, "suspension")
        expected = "transfer_not_started"
    elif change == "revoke_agreement":
        world.provider.client.contract_revoke(agreement["id"], "audit finding")
        expected = "agreement_revoked"
    elif change == "suspend_consumer":
        http, headers = world.operator.client.http, world.operator.headers()
        assert http.patch(f"/orgs/{me.org_id}", json={"status": "suspended"}, headers=headers).status_code == 200
        expected = "org_suspended"
    elif change == "revoke_key":
        world.operator.client.post(f"/orgs/{me.org_id}/keys/{me.kid}/revoke")
        expected = "no_consumer_key"
    else:
        rego = "package twinspace.policies.uploaded_probe\nimport rego.v1\ndecision := {\"allow\": false, " \
               "\"deny\": [\"no\"], \"obligations\": {}}\n"
        http, headers = world.operator.client.http, world.operator.headers()
        assert http.put("/policies/uploaded-probe", json={"rego": rego}, headers=headers).status_code == 201
        expected = None  # the agreement's own policy still allows: the pull is decided afresh, not refused
    assert len(conn.leases) == 0  # dropped by the push, before the broker's answer came back
    response = _pull_raw(endpoint, token, _pop(me, endpoint, token))
    if expected is None:
        _ok(response, 40)
        assert len(_decisions(engine, agreement["id"])) == 2
    else:
        _refused(response, 403, "access_denied", expected)


def test_a_connector_that_cannot_be_told_keeps_the_change_at_the_broker(world, engine, leased, caplog):
    """The revocation push fails (the connector is down): the broker's change still commits, the failure is
    logged, and the lease bounds how long the connector could go on (its decision's exp)."""
    agreement, tp, endpoint, token, conn = leased
    conn.stop()
    with caplog.at_level(logging.WARNING, logger="twinspace.broker.notices"):
        world.consumer.client.transfer_message(tp["providerPid"], "suspension")
    assert world.consumer.client.transfer_get(tp["providerPid"])["state"] == "SUSPENDED"
    assert any("not delivered" in r.getMessage() for r in caplog.records)


def test_lease_never_outlives_the_agreement_and_usage_counting_policies_are_not_leased(world, engine, settings):
    from broker.transfer.service import _lease_seconds

    class Agreement:
        policy_params: dict = {}
        not_after = datetime.now(timezone.utc) + timedelta(seconds=7)

    assert 0 < _lease_seconds(settings, Agreement()) <= 7
    Agreement.not_after = datetime.now(timezone.utc) + timedelta(days=30)
    assert _lease_seconds(settings, Agreement()) == settings.decision_lease_seconds
    Agreement.policy_params = {"not_after": datetime.now(timezone.utc).timestamp() + 5}
    assert 0 < _lease_seconds(settings, Agreement()) <= 5
    for counted in ({"max_total_rows": 100}, {"max_accesses": 3}, {"max_elapsed_seconds": 60},
                    {"not_after": "2030-01-01"}):
        Agreement.policy_params = counted
        assert _lease_seconds(settings, Agreement()) == 0, counted
    # end to end: a quota agreement is decided afresh at every pull (tests/transfer/test_attacks.py
    # test_usage_quota_across_pulls shows the quota holding across pulls)
    from tests.contracts.helpers import publish

    asset = publish(world.provider, offers=[{"id": "quota", "policy_id": "open-data",
                                             "params": {"max_total_rows": 500}}])
    agreement = world.agreement(offer=f"urn:twinspace:offer:{asset['id']}:v1:quota")
    tp = world.consumer.client.transfer_request(agreement["id"])
    for _ in range(3):
        world.consumer.client.transfer_pull(tp)
    decisions = _decisions(engine, agreement["id"])
    assert len(decisions) == 3 and all(d["lease_seconds"] == 0 for d in decisions)
    assert len(world.provider.connector().leases) == 0


def test_receipt_batches_are_checked_one_by_one(world, engine, leased, settings):
    agreement, tp, endpoint, token, conn = leased
    from twinspace.dataplane import RECEIPT, sign_message

    def receipt(rid: str, key=None, **extra):
        return sign_message(key or world.provider.private_key, RECEIPT, issuer=world.provider.org_id,
                            audience=settings.issuer, claims={
                                "receipt_id": rid, "kind": "transfer", "tpid": tp["providerPid"],
                                "agr": agreement["id"], "sub": world.consumer.org_id, "rows": 1, "bytes": 10,
                                "sha256": "0" * 64, "complete": True,
                                "decision_id": _decisions(engine, agreement["id"])[0]["decision_id"], **extra})

    from twinspace.crypto import generate_key

    good, forged = receipt("rcpt_batch_good_1"), receipt("rcpt_batch_forged", key=generate_key())
    answer = world.provider.client.post("/dataplane/receipts", json={"receipts": [good, forged, good]})
    results = answer["results"]
    assert results[0] == {"receipt_id": "rcpt_batch_good_1", "recorded": True}
    assert results[1]["error"]["code"] == "invalid_receipt" and results[1]["error"]["status"] == 401
    assert results[2] == {"receipt_id": "rcpt_batch_good_1", "recorded": False}  # counted once
    assert answer["recorded"] == 1
    # another provider cannot deliver this provider's receipts, in a batch or alone
    theirs = world.provider2.client.post("/dataplane/receipts", json={"receipts": [receipt("rcpt_batch_good_2")]})
    assert theirs["recorded"] == 0 and theirs["results"][0]["error"]["status"] in (401, 403)
    for bad in ({}, {"receipt": good, "receipts": [good]}, {"receipts": []}):
        with pytest.raises(Exception) as err:
            world.provider.client.post("/dataplane/receipts", json=bad)
        assert getattr(err.value, "status", None) in (400, 422), err.value
