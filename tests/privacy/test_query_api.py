"""Encrypted queries through the broker's API under real agreements: results against plaintext (within
the DP noise the policy sets), the budget ledger, refusals that cost nothing, secure aggregation."""

from __future__ import annotations

import base64
import json

import numpy as np
import pyarrow as pa
import pytest
from sqlmodel import select

from broker.audit.models import AuditEntry
from broker.storage.db import session_scope
from connectors.publish import prepare
from twinspace.client.query import ConsumerKeys, QueryClient, contribute_pending
from twinspace.client.broker import BrokerError, negotiate

N = 90
DISTRICTS = ["Daan", "Xinyi", "Zhongshan"]
EPS = 10.0  # large epsilon (small noise) so results can be checked against plaintext
OFFERS = [{"id": "agg", "policy_id": "aggregation-only",
           "params": {"epsilon_per_query": EPS, "privacy_budget": 45.0, "min_cohort": 5,
                      "encrypted_masks": True}}]


def make_table(n: int = N, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"building_id": [f"B{seed}-{i:04d}" for i in range(n)],
                     "district": [DISTRICTS[i % 3] for i in range(n)],
                     "floor_area": rng.integers(50, 400, n).astype(float),
                     "storeys": rng.integers(1, 30, n)})


def ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def publish(provider, table: pa.Table, offers=OFFERS) -> dict:
    data = ipc(table)
    meta = prepare(data, title="Buildings", classification="public", domain="planning", offers=offers,
                   twin_category="building_structure", entity_type="Building")
    return provider.client.catalog_publish(meta, data)


@pytest.fixture
def setup(make_org):
    provider = make_org("provider", org_type="government_agency")
    consumer = make_org("consumer", org_type="enterprise")
    table = make_table()
    asset = publish(provider, table)
    agreement = negotiate(consumer.client, provider.client, f"urn:twinspace:offer:{asset['id']}:v1:agg", "research")
    return {"provider": provider, "consumer": consumer, "table": table, "asset": asset, "agreement": agreement,
            "make_org": make_org}


@pytest.fixture(scope="module")
def bfv_keys() -> ConsumerKeys:
    return ConsumerKeys.create("bfv")


def laplace_tolerance(scale: float) -> float:
    return 20 * scale  # P(|Lap(b)| > 20b) = e^-20


def audit_events(engine, kind: str) -> list[dict]:
    with session_scope(engine) as s:
        rows = s.exec(select(AuditEntry).where(AuditEntry.kind == kind)).all()
        return [json.loads(r.body) for r in rows]


@pytest.mark.parametrize("scheme", ["bfv", "ckks"])
def test_masked_sum_count_and_mean_match_plaintext_within_the_noise(setup, scheme, engine):
    q = QueryClient(setup["consumer"].client, ConsumerKeys.create(scheme))
    table = setup["table"]
    mask = (np.array(table.column("district").to_pylist()) == "Xinyi").astype(int)
    values = table.column("floor_area").to_numpy()
    out = q.aggregate(setup["agreement"]["id"], "floor_area", mask, bound=500)
    want_sum, want_count = float((mask * values).sum()), int(mask.sum())
    assert abs(out["values"]["sum"] - want_sum) <= laplace_tolerance(500 / (EPS / 2))
    assert abs(out["values"]["count"] - want_count) <= laplace_tolerance(1 / (EPS / 2))
    assert out["values"]["mean"] == pytest.approx(want_sum / want_count, rel=0.5)
    assert out["epsilon"] == EPS and out["budget"]["epsilon_spent"] == pytest.approx(EPS)
    assert out["budget"]["epsilon_remaining"] == pytest.approx(45.0 - EPS)
    # the audit log records the query and the debit, never a ciphertext or a value
    queries = audit_events(engine, "privacy.query")
    assert len(queries) == 1 and "mask" not in json.dumps(queries[0])
    assert any(e.get("details", {}).get("epsilon") == EPS for e in audit_events(engine, "privacy.budget_debited"))


def test_histogram_linear_score_and_predicate(setup, bfv_keys):
    q = QueryClient(setup["consumer"].client, bfv_keys)
    table, agreement_id = setup["table"], setup["agreement"]["id"]
    district = np.array(table.column("district").to_pylist())
    area, storeys = table.column("floor_area").to_numpy(), table.column("storeys").to_numpy()
    mask = (storeys > 10).astype(int)

    hist = q.histogram(agreement_id, "district", ["Daan", "Xinyi"], mask)
    assert set(hist["values"]) == {"Daan", "Xinyi", "(other)"}
    for label, want in (("Daan", mask[district == "Daan"].sum()), ("Xinyi", mask[district == "Xinyi"].sum()),
                        ("(other)", mask[district == "Zhongshan"].sum())):
        assert abs(hist["values"][label] - want) <= laplace_tolerance(1 / EPS)

    weights = [2, -1]
    scores = q.linear_score(agreement_id, ["floor_area", "storeys"], weights, bound=500, group_by="district")
    assert set(scores["values"]) == set(DISTRICTS)
    for d in DISTRICTS:
        want = (2 * area[district == d] - storeys[district == d]).sum()
        # noise on each feature sum: Lap(bound·features/eps), then weighted by |w|
        assert abs(scores["values"][d] - want) <= laplace_tolerance(1000 / EPS) * sum(map(abs, weights))

    count = q.predicate(agreement_id, [{"column": "district", "op": "eq", "value": "Daan"},
                                       {"column": "storeys", "op": "ge", "value": 5}], kind="count")
    assert abs(count["values"]["count"] - int(((district == "Daan") & (storeys >= 5)).sum())) \
        <= laplace_tolerance(1 / EPS)
    total = q.predicate(agreement_id, [{"column": "district", "op": "in", "value": ["Daan", "Xinyi"]}],
                        kind="sum", column="floor_area", bound=500)
    assert abs(total["values"]["sum"] - area[district != "Zhongshan"].sum()) <= laplace_tolerance(500 / EPS)
    assert q.budget(agreement_id)["queries"] == 4


def _problem(call) -> BrokerError:
    with pytest.raises(BrokerError) as err:
        call()
    return err.value


def test_refusals_are_clear_and_cost_no_budget(setup, bfv_keys):
    q = QueryClient(setup["consumer"].client, bfv_keys)
    agreement_id = setup["agreement"]["id"]
    mask = np.ones(N, dtype=int)

    assert _problem(lambda: q.predicate(agreement_id, [{"column": "building_id", "op": "eq", "value": "B0-0001"}],
                                        kind="count")).code == "cohort_too_small"
    assert _problem(lambda: q.aggregate(agreement_id, "no_such_column", mask, bound=1)).code == "column_not_permitted"
    assert _problem(lambda: q.aggregate(agreement_id, "district", mask, bound=1)).code == "column_not_numeric"
    assert _problem(lambda: q.aggregate(agreement_id, "floor_area", mask, bound=1, epsilon=EPS * 2)).status == 422
    body = {"agreement_id": agreement_id, "context": base64.b64encode(bfv_keys.public_context_bytes()).decode(),
            "query": {"type": "aggregate", "column": "floor_area", "mask": ["!!not base64!!"], "bound": 1}}
    assert _problem(lambda: setup["consumer"].client.post("/queries", json=body)).code == "ciphertext_malformed"
    secret = bfv_keys.context.serialize(save_secret_key=True)
    body = {**body, "context": base64.b64encode(secret).decode()}
    assert _problem(lambda: setup["consumer"].client.post("/queries", json=body)).code == "context_has_secret_key"
    two_chunks = [base64.b64encode(c).decode() for c in bfv_keys.encrypt_mask(np.ones(bfv_keys.slots + 1))]
    body = {**body, "context": base64.b64encode(bfv_keys.public_context_bytes()).decode(),
            "query": {**body["query"], "mask": two_chunks}}
    assert _problem(lambda: setup["consumer"].client.post("/queries", json=body)).code == "mask_length_mismatch"
    assert q.budget(agreement_id)["epsilon_spent"] == 0 and q.budget(agreement_id)["queries"] == 0
    strict = publish(setup["provider"], make_table(), offers=[{"id": "agg", "policy_id": "aggregation-only",
                                                              "params": {"epsilon_per_query": 1.0}}])
    a2 = negotiate(setup["consumer"].client, setup["provider"].client,
                   f"urn:twinspace:offer:{strict['id']}:v1:agg", "research")
    daan = [{"column": "district", "op": "eq", "value": "Daan"}]
    err = _problem(lambda: q.predicate(a2["id"], daan, epsilon=2.0))
    assert (err.code, err.problem["max_epsilon"]) == ("epsilon_above_policy", 1.0)
    assert q.predicate(a2["id"], daan)["epsilon"] == 1.0  # the policy's default
    # without the provider's opt-in, encrypted masks (which could be weighted, not 0/1) are refused
    assert _problem(lambda: q.aggregate(a2["id"], "floor_area", mask, bound=1)).code == "encrypted_mask_not_allowed"
    assert _problem(lambda: q.histogram(a2["id"], "district", ["Daan"], mask)).code == "encrypted_mask_not_allowed"
    assert q.budget(a2["id"])["queries"] == 1
    broken = publish(setup["provider"], make_table(), offers=[{"id": "agg", "policy_id": "aggregation-only",
                                                              "params": {"privacy_budget": "lots"}}])
    a3 = negotiate(setup["consumer"].client, setup["provider"].client,
                   f"urn:twinspace:offer:{broken['id']}:v1:agg", "research")
    assert _problem(lambda: q.predicate(a3["id"], daan)).code == "invalid_privacy_terms"  # fail closed


def test_the_budget_is_enforced_and_plain_reads_are_refused(setup, bfv_keys, engine):
    q = QueryClient(setup["consumer"].client, bfv_keys)
    agreement_id = setup["agreement"]["id"]
    mask = np.ones(N, dtype=int)
    for _ in range(4):  # 4 × 10 of 45
        q.aggregate(agreement_id, "floor_area", mask, bound=500)
    err = _problem(lambda: q.aggregate(agreement_id, "floor_area", mask, bound=500))
    assert (err.status, err.code) == (429, "privacy_budget_exhausted")
    q.aggregate(agreement_id, "floor_area", mask, bound=500, epsilon=5.0)  # what is left still works
    assert q.budget(agreement_id)["epsilon_remaining"] == pytest.approx(0.0)
    assert _problem(lambda: q.aggregate(agreement_id, "floor_area", mask, bound=500, epsilon=0.1)).status == 429
    # aggregation-only: no rows ever leave
    err = _problem(lambda: setup["consumer"].client.transfer_request(agreement_id))
    assert err.code == "policy_denied"
    # the deny decision survives the refused request's rollback, with its reasons and input hash
    denies = [e for e in audit_events(engine, "policy.decision")
              if e["outcome"] == "deny" and e["details"]["action"] == "read"]
    assert len(denies) == 1
    assert any("aggregate" in r for r in denies[0]["details"]["reasons"]) and denies[0]["details"]["input_hash"]


def test_another_consumer_cannot_use_the_agreement_and_revocation_stops_queries(setup, bfv_keys):
    other = setup["make_org"]("consumer", org_type="enterprise")
    agreement_id = setup["agreement"]["id"]
    mask = np.ones(N, dtype=int)
    err = _problem(lambda: QueryClient(other.client, bfv_keys).aggregate(agreement_id, "floor_area", mask, bound=5))
    assert err.code == "not_agreement_consumer"
    assert _problem(lambda: QueryClient(setup["provider"].client, bfv_keys).aggregate(
        agreement_id, "floor_area", mask, bound=5)).code == "wrong_role"
    setup["provider"].client.contract_revoke(agreement_id, reason="test")
    err = _problem(lambda: QueryClient(setup["consumer"].client, bfv_keys).aggregate(
        agreement_id, "floor_area", mask, bound=5))
    assert err.code == "agreement_revoked"


@pytest.mark.parametrize("scheme", ["bfv", "ckks"])
def test_secure_aggregation_across_providers(setup, scheme):
    make_org, consumer = setup["make_org"], setup["consumer"]
    providers, tables, agreements = [setup["provider"]], [setup["table"]], [setup["agreement"]]
    for seed in (1, 2):
        p = make_org("provider", org_type="government_agency")
        t = make_table(60 + seed * 10, seed=seed)
        a = publish(p, t)
        providers.append(p)
        tables.append(t)
        agreements.append(negotiate(consumer.client, p.client, f"urn:twinspace:offer:{a['id']}:v1:agg", "research"))
    assets = {a["asset_id"]: t for a, t in zip(agreements, tables)}
    q = QueryClient(consumer.client, ConsumerKeys.create(scheme))
    rnd = q.open_round([a["id"] for a in agreements], "floor_area", bound=500)
    assert rnd["status"] == "open" and rnd["min_providers"] == 3

    # the first provider contributes; the sum of one provider is never released
    assert len(contribute_pending(providers[0].client, assets)) == 1
    assert contribute_pending(providers[0].client, assets) == []  # nothing left for it
    assert _problem(lambda: q.round_result(rnd["round_id"])).code == "round_incomplete"
    for p in providers[1:]:
        contribute_pending(p.client, assets)
    out = q.round_result(rnd["round_id"])
    want = sum(float(t.column("floor_area").to_numpy().sum()) for t in tables)
    assert abs(out["values"]["sum"] - want) <= 3 * laplace_tolerance(500 / (EPS / 2))
    assert abs(out["values"]["count"] - sum(t.num_rows for t in tables)) <= 3 * laplace_tolerance(1 / (EPS / 2))
    assert q.round_result(rnd["round_id"])["result"] == out["result"]  # frozen once released

    # after release nothing more is added; strangers see nothing; each agreement was debited once
    ct = base64.b64encode(b"x" * 10).decode()
    err = _problem(lambda: providers[0].client.post(f"/queries/aggregations/{rnd['round_id']}/contributions",
                                                    json={"agreement_id": agreements[0]["id"], "ciphertext": ct}))
    assert err.code == "round_closed"
    stranger = make_org("consumer")
    assert _problem(lambda: stranger.client.post(f"/queries/aggregations/{rnd['round_id']}/result")).status == 404
    assert all(q.budget(a["id"])["epsilon_spent"] == pytest.approx(EPS) for a in agreements)


def test_a_round_needs_distinct_providers_and_valid_contributions(setup, bfv_keys):
    consumer, provider, make_org = setup["consumer"], setup["provider"], setup["make_org"]
    second = publish(provider, make_table(40, seed=5))
    a2 = negotiate(consumer.client, provider.client, f"urn:twinspace:offer:{second['id']}:v1:agg", "research")
    q = QueryClient(consumer.client, bfv_keys)
    err = _problem(lambda: q.open_round([setup["agreement"]["id"], a2["id"]], "floor_area", bound=500))
    assert err.code == "too_few_providers"
    assert q.budget(a2["id"])["epsilon_spent"] == 0  # all or nothing

    other = make_org("provider", org_type="government_agency")
    third = publish(other, make_table(40, seed=6))
    a3 = negotiate(consumer.client, other.client, f"urn:twinspace:offer:{third['id']}:v1:agg", "research")
    rnd = q.open_round([setup["agreement"]["id"], a3["id"]], "floor_area", bound=500)
    url = f"/queries/aggregations/{rnd['round_id']}/contributions"
    garbage = base64.b64encode(b"\x5e\xa1" * 64).decode()
    assert _problem(lambda: provider.client.post(url, json={"agreement_id": setup["agreement"]["id"],
                                                            "ciphertext": garbage})).code == "ciphertext_malformed"
    # a provider cannot contribute for another provider's agreement
    assert _problem(lambda: provider.client.post(url, json={"agreement_id": a3["id"],
                                                            "ciphertext": garbage})).code == "wrong_party"
    # the consumer cannot read the pending list of providers
    assert _problem(lambda: consumer.client.get("/queries/aggregations/pending")).code == "wrong_role"


def test_query_bodies_have_their_own_size_limit(tmp_path):
    from fastapi.testclient import TestClient

    from broker.app import create_app
    from broker.settings import Settings

    settings = Settings(data_dir=tmp_path / "b", database_url=None, redis_url=None, max_query_body_bytes=8192,
                        max_body_bytes=4096)
    with TestClient(create_app(settings)) as c:
        r = c.post("/queries", content=b'{"x": "' + b"a" * 9000 + b'"}', headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["code"]) == (413, "payload_too_large")
        # between the two limits: the query route admits it (and refuses it for another reason)
        r = c.post("/queries", content=b'{"x": "' + b"a" * 6000 + b'"}', headers={"content-type": "application/json"})
        assert r.status_code == 401
