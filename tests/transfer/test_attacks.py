"""Attacks on a pull, aimed at the provider's connector (the DataAddress endpoint; raw ``httpx`` requests):
every attempt is refused with a problem response and serves zero rows.

The final assertion of each test checks the audit log: the only ``transfer.receipt``s (what a connector
served) are those of the legitimate pulls the test made itself."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import jwt
import pytest
from sqlmodel import Session, select

from broker.audit.models import AuditEntry
from broker.policy.service import get_usage
from tests.contracts.helpers import publish, table_bytes
from twinspace.client.broker import BrokerError
from twinspace.crypto import generate_key, key_id, public_key_b64
from twinspace.transfer_tokens import POP_TYP, issue_transfer_token, make_pop, token_hash


def _path(endpoint: str) -> str:
    return httpx.URL(endpoint).path


def _pull_raw(endpoint: str, token: str | None, pop: str | None, fmt: str = "csv", **extra_headers: str):
    """A GET at a connector, with no broker credentials (the connector never sees them)."""
    headers = dict(extra_headers)
    if token is not None:
        headers["TwinSpace-Transfer-Token"] = token
    if pop is not None:
        headers["TwinSpace-PoP"] = pop
    with httpx.Client(timeout=30, follow_redirects=False) as http:
        return http.get(endpoint, params={"format": fmt}, headers=headers)


def _pop(org, endpoint: str, token: str) -> str:
    return make_pop(org.private_key, method="GET", path=_path(endpoint), token=token)


def _refused(response, status: int, code: str, reason: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code, problem
    if reason is not None:
        assert reason in problem.get("reasons", []), problem
    # no row data in a problem, and no receipt for it
    for value in ("building_id", "B0000", "owner_pseudonym", "Daan"):
        assert value not in response.text
    assert "X-TwinSpace-Receipt" not in response.headers
    return problem


def _fresh(org, pid: str) -> tuple[str, str]:
    """A fresh (endpoint, token) from the broker (``POST /transfers/{pid}/token``)."""
    return org.client.data_address(org.client.transfer_token(pid))


def _receipts(engine, agreement_id: str, seconds: float = 5.0, expect: int | None = None) -> list[dict]:
    """The ``transfer.receipt`` claims of an agreement (receipts arrive just after the body: wait for ``expect``)."""
    deadline = time.time() + seconds
    while True:
        with Session(engine) as s:
            found = [json.loads(e.body)["details"]["claims"]
                     for e in s.exec(select(AuditEntry).where(AuditEntry.agreement_id == agreement_id,
                                                              AuditEntry.kind == "transfer.receipt"))]
        if expect is None or len(found) >= expect or time.time() > deadline:
            return found
        time.sleep(0.05)


def _only_receipts_of(engine, agreement_id: str, consumer, pid: str, served: list[str]) -> None:
    """The audit log holds exactly the receipts of the legitimate pulls (their receipt ids), no others."""
    time.sleep(0.2)  # let a stray receipt (there must be none) arrive before counting
    receipts = _receipts(engine, agreement_id, expect=len(served))
    assert sorted(r["receipt_id"] for r in receipts) == sorted(served)
    assert all(r["sub"] == consumer.org_id and r["tpid"] == pid for r in receipts)


@pytest.fixture
def started(world):
    agreement = world.agreement()
    tp = world.consumer.client.transfer_request(agreement["id"])
    endpoint, token = world.consumer.client.data_address(tp)
    assert endpoint == f"{world.provider.connector().endpoint}/dataplane/transfers/{tp['providerPid']}"
    return agreement, tp, endpoint, token


def _ok(response, rows: int) -> str:
    assert response.status_code == 200, response.text
    assert response.headers["X-TwinSpace-Rows"] == str(rows)
    return response.headers["X-TwinSpace-Receipt"]


def test_stolen_token_other_consumer_and_provider_are_refused(world, started, engine):
    agreement, tp, endpoint, token = started
    thief, prov = world.consumer2, world.provider
    pid = tp["providerPid"]
    # the stolen token with the thief's own proof of possession: the token is bound to the consumer's key
    _refused(_pull_raw(endpoint, token, _pop(thief, endpoint, token)), 401, "invalid_pop")
    # the asset's own provider cannot pull through the consumer's transfer either
    _refused(_pull_raw(endpoint, token, _pop(prov, endpoint, token)), 401, "invalid_pop")
    # nor obtain a token for it, nor start a transfer under the agreement
    for org in (thief, prov):
        with pytest.raises(BrokerError) as err:
            org.client.transfer_token(pid)
        assert err.value.status in (403, 404)
    with pytest.raises(BrokerError) as err:
        thief.client.transfer_request(agreement["id"])
    assert (err.value.status, err.value.code) == (403, "not_agreement_consumer")
    # the thief cannot see the negotiation, the agreement or the transfer
    for path in (f"/dsp/negotiations/{agreement['negotiation_id']}", f"/contracts/agreements/{agreement['id']}",
                 f"/dsp/transfers/{pid}", f"/contracts/agreements/{agreement['id']}/export"):
        assert thief.client.http.get(path, headers=thief.headers()).status_code == 404, path
    # the refused attempts burnt nothing: the rightful consumer still pulls with that very token
    served = [_ok(_pull_raw(endpoint, token, _pop(world.consumer, endpoint, token)), 40)]
    _only_receipts_of(engine, agreement["id"], world.consumer, pid, served)
    assert get_usage(Session(engine), agreement["id"])["rows"] == 40


def test_forged_tokens_missing_headers_and_bad_proofs_are_refused(world, started, engine):
    agreement, tp, endpoint, token = started
    me = world.consumer
    claims = jwt.decode(token, options={"verify_signature": False})
    attacker = generate_key()
    forged = jwt.encode(claims, attacker, algorithm="EdDSA", headers={"kid": key_id(attacker.public_key())})
    _refused(_pull_raw(endpoint, forged, _pop(me, endpoint, forged)), 401, "invalid_transfer_token")
    unsigned = jwt.encode(claims, None, algorithm="none")
    _refused(_pull_raw(endpoint, unsigned, _pop(me, endpoint, unsigned)), 401, "invalid_transfer_token")
    # the broker's ordinary access token (signed by the broker, for the broker) is not a transfer token
    access = me.headers()["Authorization"].split()[1]
    _refused(_pull_raw(endpoint, access, _pop(me, endpoint, access)), 401, "wrong_audience")
    # ... not even sent as a bearer token beside a missing transfer token
    _refused(_pull_raw(endpoint, None, None, Authorization=f"Bearer {access}"), 401, "missing_transfer_token")
    # missing headers
    _refused(_pull_raw(endpoint, None, _pop(me, endpoint, token)), 401, "missing_transfer_token")
    _refused(_pull_raw(endpoint, token, None), 401, "missing_pop")
    # a proof signed by a key that is not the token's (its kid claims to be ours)
    fake = jwt.encode({"htm": "GET", "htu": _path(endpoint), "iat": int(time.time()), "jti": uuid.uuid4().hex,
                       "ath": token_hash(token)}, attacker, algorithm="EdDSA", headers={"typ": POP_TYP, "kid": me.kid})
    _refused(_pull_raw(endpoint, token, fake), 401, "invalid_pop")
    # a proof for another path, another token, or stale
    _refused(_pull_raw(endpoint, token, make_pop(me.private_key, method="GET", path="/elsewhere", token=token)),
             401, "invalid_pop")
    _refused(_pull_raw(endpoint, token, _pop(me, endpoint, forged)), 401, "invalid_pop")
    stale = jwt.encode({"htm": "GET", "htu": _path(endpoint), "iat": int(time.time()) - 3600,
                        "jti": uuid.uuid4().hex, "ath": token_hash(token)}, me.private_key, algorithm="EdDSA",
                       headers={"typ": POP_TYP, "kid": me.kid})
    _refused(_pull_raw(endpoint, token, stale), 401, "stale_pop")
    _only_receipts_of(engine, agreement["id"], me, tp["providerPid"], [])


def test_replays_relays_other_transfers_and_expired_tokens_are_refused(world, started, engine, runtime, settings):
    agreement, tp, endpoint, token = started
    me = world.consumer
    pid = tp["providerPid"]
    pop = _pop(me, endpoint, token)
    served = [_ok(_pull_raw(endpoint, token, pop), 40)]
    _refused(_pull_raw(endpoint, token, pop), 401, "replayed_pop")  # the captured request, replayed
    # the token's holder may pull again with a fresh proof (tokens are reusable until they expire, as an
    # RFC 9449 access token is); without the key, the same token is useless
    served.append(_ok(_pull_raw(endpoint, token, _pop(me, endpoint, token)), 40))
    _refused(_pull_raw(endpoint, token, _pop(world.provider2, endpoint, token)), 401, "invalid_pop")
    # a fresh token relayed to another provider's connector: its audience is this connector only
    endpoint_b, token_b = _fresh(me, pid)
    other = world.provider2.connector()
    relayed = f"{other.endpoint}{_path(endpoint_b)}"
    _refused(_pull_raw(relayed, token_b, _pop(me, relayed, token_b)), 401, "wrong_audience")
    # a second transfer of the same consumer (another agreement): tokens are not interchangeable
    agreement2 = world.agreement(offer=f"urn:twinspace:offer:{world.asset['id']}:v1:open")
    tp2 = me.client.transfer_request(agreement2["id"])
    endpoint2, token2 = me.client.data_address(tp2)
    _refused(_pull_raw(endpoint2, token_b, _pop(me, endpoint2, token_b)), 401, "wrong_transfer")
    _refused(_pull_raw(endpoint, token2, _pop(me, endpoint, token2)), 401, "wrong_transfer")
    # an expired token (genuinely signed by the broker, for this connector and transfer)
    with Session(engine) as s:
        from broker.identity.models import OrgKey

        consumer_key = s.get(OrgKey, me.kid).public_key
    expired, _ = issue_transfer_token(
        runtime.broker_key, issuer=settings.issuer, audience=world.provider.connector().endpoint,
        consumer_id=me.org_id, consumer_kid=me.kid, consumer_key=consumer_key, provider_id=world.provider.org_id,
        transfer_id=pid, agreement_id=agreement["id"], asset=jwt.decode(token, options={"verify_signature": False})["asset"],
        generation=0, ttl=-100)
    assert consumer_key == public_key_b64(me.private_key.public_key())
    _refused(_pull_raw(endpoint, expired, _pop(me, endpoint, expired)), 401, "expired_transfer_token")
    # the unused fresh token still works at the right connector (the relay burnt nothing there)
    served.append(_ok(_pull_raw(endpoint_b, token_b, _pop(me, endpoint_b, token_b)), 40))
    _only_receipts_of(engine, agreement["id"], me, pid, served)
    assert _receipts(engine, agreement2["id"]) == []


def test_suspension_kills_every_earlier_token_even_after_resume(world, started, engine):
    agreement, tp, endpoint, token = started
    me = world.consumer
    pid = tp["providerPid"]
    spare = _fresh(me, pid)[1]  # issued before the suspension, never used
    me.client.transfer_message(pid, "suspension")
    _refused(_pull_raw(endpoint, token, _pop(me, endpoint, token)), 403, "access_denied", "transfer_not_started")
    with pytest.raises(BrokerError) as err:  # no new token while suspended
        me.client.transfer_token(pid)
    assert (err.value.status, err.value.code) == (409, "transfer_not_started")
    resumed = me.client.transfer_message(pid, "start")
    # the unused token from before the suspension is dead: the broker denies its generation
    _refused(_pull_raw(endpoint, spare, _pop(me, endpoint, spare)), 403, "access_denied", "stale_transfer_token")
    # the token of the resumed start message works, once
    endpoint_r, token_r = me.client.data_address(resumed)
    assert endpoint_r == endpoint
    served = [_ok(_pull_raw(endpoint, token_r, _pop(me, endpoint, token_r)), 40)]
    assert len(json.loads(me.client.transfer_pull(tp, "json"))) == 40
    served.append(me.client.last_receipt)
    with Session(engine) as s:
        denied = [json.loads(e.body)["details"] for e in s.exec(select(AuditEntry).where(
            AuditEntry.agreement_id == agreement["id"], AuditEntry.kind == "transfer.decision"))]
    assert [d["reasons"] for d in denied if not d["allow"]] == [["transfer_not_started"], ["stale_transfer_token"]]
    _only_receipts_of(engine, agreement["id"], me, pid, served)


def test_changed_asset_version_is_refused(world, started, engine):
    agreement, tp, endpoint, token = started
    me = world.consumer
    # a new version of the asset: the agreement pinned v1's content hash
    publish(world.provider, table_bytes(30, offset=500), asset_id=world.asset["id"])
    _refused(_pull_raw(endpoint, token, _pop(me, endpoint, token)), 403, "access_denied", "asset_version_changed")
    with pytest.raises(BrokerError) as err:
        me.client.transfer_pull(tp)  # a fresh token is refused by the broker
    assert (err.value.status, err.value.code) == (409, "asset_version_changed")
    with pytest.raises(BrokerError) as err:
        me.client.transfer_request(agreement["id"])
    assert err.value.code == "asset_version_changed"
    _only_receipts_of(engine, agreement["id"], me, tp["providerPid"], [])


def test_expired_agreement_is_refused(world, started, engine, monkeypatch):
    from datetime import timedelta

    from broker.contracts import lookups

    agreement, tp, endpoint, token = started
    me = world.consumer
    served = [_ok(_pull_raw(endpoint, token, _pop(me, endpoint, token)), 40)]
    spare = _fresh(me, tp["providerPid"])[1]
    real_now = lookups.now
    monkeypatch.setattr(lookups, "now", lambda: real_now() + timedelta(days=31))
    # A lease never outlives the agreement (its exp is at most not_after: test_lease_ends_with_the_agreement);
    # here the broker's clock jumps, not time, so the connector's lease is dropped by hand.
    world.provider.connector().leases.revoke(None)
    # the token is still within its own lifetime; the broker's decision refuses the expired agreement
    _refused(_pull_raw(endpoint, spare, _pop(me, endpoint, spare)), 403, "access_denied", "agreement_expired")
    with pytest.raises(BrokerError) as err:
        me.client.transfer_pull(tp, "csv")
    assert (err.value.status, err.value.code) == (410, "agreement_expired")
    _only_receipts_of(engine, agreement["id"], me, tp["providerPid"], served)


def test_revocation_kills_a_token_issued_before_it(world, started, engine):
    agreement, tp, endpoint, token = started
    me = world.consumer
    world.operator.client.contract_revoke(agreement["id"], "court order")
    # the token was issued before the revocation and is otherwise perfect: the connector refuses it
    _refused(_pull_raw(endpoint, token, _pop(me, endpoint, token)), 403, "access_denied", "agreement_revoked")
    with pytest.raises(BrokerError) as err:
        me.client.transfer_pull(tp)
    assert (err.value.status, err.value.code) == (410, "agreement_revoked")
    # another provider cannot revoke; the consumer cannot either
    with pytest.raises(BrokerError) as err:
        world.provider2.client.contract_revoke(agreement["id"])
    assert err.value.status == 404
    with pytest.raises(BrokerError) as err:
        me.client.contract_revoke(agreement["id"])
    assert err.value.status == 403
    _only_receipts_of(engine, agreement["id"], me, tp["providerPid"], [])


def test_usage_quota_across_pulls(world, engine):
    asset = publish(world.provider, offers=[{"id": "quota", "policy_id": "open-data",
                                             "params": {"max_total_rows": 70, "max_rows": 50}}])
    agreement = world.agreement(offer=f"urn:twinspace:offer:{asset['id']}:v1:quota")
    me = world.consumer
    tp = me.client.transfer_request(agreement["id"])
    pid = tp["providerPid"]
    served = []
    assert len(json.loads(me.client.transfer_pull(tp, "json"))) == 50
    served.append(me.client.last_receipt)
    _receipts(engine, agreement["id"], expect=1)  # the usage counter moves when the receipt arrives
    assert len(json.loads(me.client.transfer_pull(tp, "json"))) == 20  # the rest of the quota
    served.append(me.client.last_receipt)
    _receipts(engine, agreement["id"], expect=2)
    assert get_usage(Session(engine), agreement["id"])["rows"] == 70
    endpoint, token = _fresh(me, pid)
    problem = _refused(_pull_raw(endpoint, token, _pop(me, endpoint, token), "json"), 403, "access_denied")
    assert any("quota" in str(r) for r in problem["reasons"]), problem
    _only_receipts_of(engine, agreement["id"], me, pid, served)
    assert get_usage(Session(engine), agreement["id"])["rows"] == 70
