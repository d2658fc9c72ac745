"""Cross-tenant attack suite: every attempt is refused with a problem response and serves zero rows.

The final assertion of each test checks the usage counter and the audit log: only the legitimate
pulls the test made itself were ever served."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from sqlmodel import Session, select

from broker.audit.models import AuditEntry
from twinspace.crypto import generate_key, key_id
from broker.policy.service import get_usage
from twinspace.transfer_tokens import POP_TYP, make_pop, token_hash
from twinspace.client.broker import BrokerError
from tests.contracts.helpers import publish


def _pull_raw(org, tp_id: str, token: str | None, pop: str | None, fmt: str = "csv"):
    headers = {**org.headers()}
    if token is not None:
        headers["TwinSpace-Transfer-Token"] = token
    if pop is not None:
        headers["TwinSpace-PoP"] = pop
    return org.client.http.get(f"/dataplane/transfers/{tp_id}", params={"format": fmt}, headers=headers)


def _refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert "building_id" not in response.text  # no row data leaks into problems


def _served_pulls(engine, agreement_id: str) -> list[AuditEntry]:
    with Session(engine) as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.agreement_id == agreement_id,
                                                    AuditEntry.kind == "transfer.pull")))


@pytest.fixture
def started(world):
    agreement = world.agreement()
    tp = world.consumer.client.transfer_request(agreement["id"])
    endpoint, token = world.consumer.client.data_address(tp)
    return agreement, tp, endpoint, token


def test_other_consumer_cannot_use_a_stolen_token_or_the_agreement(world, started, engine):
    agreement, tp, endpoint, token = started
    thief = world.consumer2
    pid = tp["providerPid"]
    # stolen token, thief's own proof of possession
    _refused(_pull_raw(thief, pid, token, make_pop(thief.private_key, method="GET", path=endpoint, token=token)),
             403, "token_not_yours")
    # thief starts a transfer under someone else's agreement
    with pytest.raises(BrokerError) as err:
        thief.client.transfer_request(agreement["id"])
    assert (err.value.status, err.value.code) == (403, "not_agreement_consumer")
    # thief cannot see the negotiation, the agreement or the transfer
    for path in (f"/dsp/negotiations/{agreement['negotiation_id']}", f"/contracts/agreements/{agreement['id']}",
                 f"/dsp/transfers/{pid}", f"/contracts/agreements/{agreement['id']}/export"):
        assert thief.client.http.get(path, headers=thief.headers()).status_code == 404, path
    # a provider (even the asset's own) cannot pull through the consumer's transfer
    prov = world.provider
    _refused(_pull_raw(prov, pid, token, make_pop(prov.private_key, method="GET", path=endpoint, token=token)),
             403, "wrong_role")
    assert get_usage(Session(engine), agreement["id"]) == {"accesses": 0, "rows": 0}
    assert _served_pulls(engine, agreement["id"]) == []


def test_forged_tokens_and_bad_proofs_are_refused(world, started, engine, settings):
    agreement, tp, endpoint, token = started
    me = world.consumer
    pid = tp["providerPid"]
    claims = jwt.decode(token, options={"verify_signature": False})
    attacker = generate_key()
    forged = jwt.encode(claims, attacker, algorithm="EdDSA", headers={"kid": key_id(attacker.public_key())})
    _refused(_pull_raw(me, pid, forged, make_pop(me.private_key, method="GET", path=endpoint, token=forged)),
             401, "invalid_transfer_token")
    unsigned = jwt.encode(claims, None, algorithm="none")
    _refused(_pull_raw(me, pid, unsigned, make_pop(me.private_key, method="GET", path=endpoint, token=unsigned)),
             401, "invalid_transfer_token")
    # the broker's ordinary access token is not a transfer token
    access = me.headers()["Authorization"].split()[1]
    _refused(_pull_raw(me, pid, access, make_pop(me.private_key, method="GET", path=endpoint, token=access)),
             401, "invalid_transfer_token")
    _refused(_pull_raw(me, pid, token, None), 401, "missing_transfer_token")
    # proof signed by a key that is not the one the token is bound to (kid claims to be ours)
    fake = jwt.encode({"htm": "GET", "htu": endpoint, "iat": int(time.time()), "jti": uuid.uuid4().hex,
                       "ath": token_hash(token)}, attacker, algorithm="EdDSA",
                      headers={"typ": POP_TYP, "kid": me.kid})
    _refused(_pull_raw(me, pid, token, fake), 401, "invalid_pop")
    # proof for another path, another token, or stale
    _refused(_pull_raw(me, pid, token, make_pop(me.private_key, method="GET", path="/elsewhere", token=token)),
             401, "invalid_pop")
    _refused(_pull_raw(me, pid, token, make_pop(me.private_key, method="GET", path=endpoint, token=forged)),
             401, "invalid_pop")
    stale = jwt.encode({"htm": "GET", "htu": endpoint, "iat": int(time.time()) - 3600, "jti": uuid.uuid4().hex,
                        "ath": token_hash(token)}, me.private_key, algorithm="EdDSA",
                       headers={"typ": POP_TYP, "kid": me.kid})
    _refused(_pull_raw(me, pid, token, stale), 401, "stale_pop")
    assert _served_pulls(engine, agreement["id"]) == []


def test_replayed_request_and_token_for_another_transfer(world, started, engine):
    agreement, tp, endpoint, token = started
    me = world.consumer
    pid = tp["providerPid"]
    pop = make_pop(me.private_key, method="GET", path=endpoint, token=token)
    ok = _pull_raw(me, pid, token, pop)
    assert ok.status_code == 200 and ok.headers["X-TwinSpace-Rows"] == "40"
    _refused(_pull_raw(me, pid, token, pop), 401, "replayed_pop")  # the captured request, replayed
    # a second agreement/transfer of the same consumer: tokens are not interchangeable
    other = world.agreement(offer=f"urn:twinspace:offer:{world.asset['id']}:v1:open")
    tp2 = me.client.transfer_request(other["id"])
    endpoint2, token2 = me.client.data_address(tp2)
    _refused(_pull_raw(me, tp2["providerPid"], token, make_pop(me.private_key, method="GET", path=endpoint2,
                                                                token=token)), 403, "token_wrong_transfer")
    _refused(_pull_raw(me, pid, token2, make_pop(me.private_key, method="GET", path=endpoint, token=token2)),
             403, "token_wrong_transfer")
    # suspension invalidates the token; resuming issues a new one, the old stays dead
    me.client.transfer_message(pid, "suspension")
    _refused(_pull_raw(me, pid, token, make_pop(me.private_key, method="GET", path=endpoint, token=token)),
             409, "transfer_not_started")
    resumed = me.client.transfer_message(pid, "start")
    _refused(_pull_raw(me, pid, token, make_pop(me.private_key, method="GET", path=endpoint, token=token)),
             401, "invalid_transfer_token")
    assert len(me.client.transfer_pull(resumed, "json")) > 2
    pulls = _served_pulls(engine, agreement["id"])
    assert len(pulls) == 2 and all(p.actor == me.org_id for p in pulls)
    assert get_usage(Session(engine), agreement["id"]) == {"accesses": 2, "rows": 80}


def test_changed_asset_version_expiry_and_withdrawal_refuse(world, started, engine, monkeypatch):
    agreement, tp, endpoint, token = started
    me = world.consumer
    # asset version changes: the agreement pinned v1's content hash
    from tests.contracts.helpers import table_bytes

    publish(world.provider, table_bytes(30, offset=500), asset_id=world.asset["id"])
    with pytest.raises(BrokerError) as err:
        me.client.transfer_pull(tp)
    assert (err.value.status, err.value.code) == (409, "asset_version_changed")
    with pytest.raises(BrokerError) as err:
        me.client.transfer_request(agreement["id"])
    assert err.value.code == "asset_version_changed"
    assert _served_pulls(engine, agreement["id"]) == []


def test_expired_agreement_is_refused(world, started, engine, monkeypatch):
    from datetime import timedelta

    from broker.contracts import lookups

    agreement, tp, endpoint, token = started
    assert len(world.consumer.client.transfer_pull(tp, "csv")) > 0
    real_now = lookups.now
    monkeypatch.setattr(lookups, "now", lambda: real_now() + timedelta(days=31))
    with pytest.raises(BrokerError) as err:
        world.consumer.client.transfer_pull(tp, "csv")
    assert (err.value.status, err.value.code) == (410, "agreement_expired")
    assert len(_served_pulls(engine, agreement["id"])) == 1


def test_operator_revocation_takes_effect_on_next_access(world, started, engine):
    agreement, tp, endpoint, token = started
    world.operator.client.contract_revoke(agreement["id"], "court order")
    with pytest.raises(BrokerError) as err:
        world.consumer.client.transfer_pull(tp)
    assert (err.value.status, err.value.code) == (410, "agreement_revoked")
    # another provider cannot revoke; the consumer cannot either
    with pytest.raises(BrokerError) as err:
        world.provider2.client.contract_revoke(agreement["id"])
    assert err.value.status == 404
    assert _served_pulls(engine, agreement["id"]) == []


def test_usage_quota_and_policy_decided_per_request(world, engine):
    asset = publish(world.provider, offers=[{"id": "quota", "policy_id": "open-data",
                                             "params": {"max_total_rows": 70, "max_rows": 50}}])
    agreement = world.agreement(offer=f"urn:twinspace:offer:{asset['id']}:v1:quota")
    tp = world.consumer.client.transfer_request(agreement["id"])
    import json as _json

    assert len(_json.loads(world.consumer.client.transfer_pull(tp, "json"))) == 50
    assert len(_json.loads(world.consumer.client.transfer_pull(tp, "json"))) == 20  # the rest of the quota
    with pytest.raises(BrokerError) as err:
        world.consumer.client.transfer_pull(tp, "json")
    assert (err.value.status, err.value.code) == (403, "policy_denied")
    assert "row quota exhausted" in err.value.problem["detail"]
