"""The computation at the provider's connector (connectors/node/compute.py) and its route
(POST /compute/queries, connectors/node/compute_api.py): data-independent plan failures keep their own
codes; after reading data everything is an answer or a refusal; the noise is added here; the answer
decrypts with the consumer's secret key; the broker's message is checked (audience, body, single use)."""

from __future__ import annotations

import base64
import copy
import hashlib

import numpy as np
import pyarrow as pa
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from connectors.node import compute
from connectors.node.compute_api import router_for
from connectors.node.config import NodeConfig
from connectors.tables import table_to_ipc_bytes
from twinspace.client.query import ConsumerKeys
from twinspace.crypto import generate_key
from twinspace.dataplane import COMPUTE, RECEIPT, body_sha256, sign_message, verify_message
from twinspace.errors import TwinSpaceError
from twinspace.privacy import he
from twinspace.privacy.queries import LinearScoreQuery, PredicateQuery, wire_query

from tests.privacy.test_query_api import DISTRICTS, N, make_table  # noqa: E402,F401  (one synthetic table)

EPS = 10.0
XINYI = [{"column": "district", "op": "eq", "value": "Xinyi"}]


def tolerance(scale: float) -> float:
    return 20 * scale  # P(|Lap(b)| > 20b) = e^-20


def terms(**kw) -> compute.Terms:
    return compute.Terms(**{"epsilon": EPS, "k": 5, "columns": None, "predicate_columns": None, **kw})


def predicate(**kw) -> PredicateQuery:
    return PredicateQuery.model_validate({"type": "predicate", "kind": "count", "where": XINYI, **kw})


def _code(fn) -> str:
    with pytest.raises(TwinSpaceError) as err:
        fn()
    return err.value.code


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return make_table()


# --------------------------------------------------------------------------- compute.py, directly
@pytest.mark.parametrize("scheme", ["bfv", "ckks"])
def test_predicate_answers_decrypt_to_the_noised_true_value(scheme, keys, pcs, table):
    k, ctx = keys[scheme], pcs[scheme]
    district = np.array(table.column("district").to_pylist())
    area = table.column("floor_area").to_numpy()
    out = compute.run(ctx, predicate(kind="sum", column="floor_area", bound=500), table, terms())
    assert out.outcome == "answered" and out.rows == N and set(out.results) == {"sum"}
    got = k.decrypt_sum(out.results["sum"])
    assert abs(got - area[district == "Xinyi"].sum()) <= tolerance(2 * 500 / (0.75 * EPS))
    assert out.facts == {"scale": 0, "scaled": []}
    count = compute.run(ctx, predicate(), table, terms())
    got = k.decrypt_sum(count.results["count"])
    assert abs(round(got) - (district == "Xinyi").sum()) <= tolerance(1 / EPS)
    assert out.result_sha256["sum"] == hashlib.sha256(out.results["sum"]).hexdigest()


def test_the_noise_is_added_at_the_connector(keys, pcs, table):
    """Repeated counts at ε = 0.5 differ from each other (discrete Laplace of scale 2): the connector
    never returns the exact value."""
    k, ctx = keys["bfv"], pcs["bfv"]
    truth = sum(1 for d in table.column("district").to_pylist() if d == "Xinyi")
    got = [k.decrypt_sum(compute.run(ctx, predicate(), table, terms(epsilon=0.5)).results["count"])
           for _ in range(12)]
    assert len(set(got)) > 1 and any(g != truth for g in got)
    assert all(abs(g - truth) <= tolerance(2) for g in got)


def test_fixed_point_facts_and_linear_score_per_named_group(keys, pcs, table):
    k, ctx = keys["bfv"], pcs["bfv"]
    district = np.array(table.column("district").to_pylist())
    area, storeys = table.column("floor_area").to_numpy(), table.column("storeys").to_numpy()
    query = LinearScoreQuery.model_validate({
        "type": "linear_score", "features": ["floor_area", "storeys"], "bound": 500, "group_by": "district",
        "groups": DISTRICTS + ["Beitou"], "weights": base64.b64encode(k.encrypt_weights(np.array([2, -1]))).decode()})
    out = compute.run(ctx, query, table, terms())
    assert out.outcome == "answered" and set(out.results) <= set(DISTRICTS)  # Beitou: noisy count below k
    for d, ct in out.results.items():
        want = (2 * area[district == d] - storeys[district == d]).sum()
        assert abs(k.decrypt_sum(ct) - want) <= tolerance(2 * 500 * 2 / (0.75 * EPS)) * 3
    scaled = compute.run(ctx, predicate(kind="sum", column="floor_area", bound=500, scale=2), table, terms())
    assert scaled.facts == {"scale": 2, "scaled": ["sum"]}


def test_plan_failures_have_their_own_codes_and_read_no_data(pcs, table, monkeypatch):
    """Every plan refusal happens before a row is read: with the data readers broken, the same codes."""
    def no_reading(*_a, **_k):
        raise AssertionError("the plan read data")
    monkeypatch.setattr(compute, "_where", no_reading)
    monkeypatch.setattr(compute, "_fixed", no_reading)
    monkeypatch.setattr(compute, "_codes", no_reading)
    ctx = pcs["bfv"]
    plan = lambda q, t=None: compute.plan(ctx, q, table, t or terms())  # noqa: E731
    assert _code(lambda: plan(predicate(where=[{"column": "nope", "op": "eq", "value": 1}]))) == "column_not_permitted"
    assert _code(lambda: plan(predicate(kind="sum", column="district"))) == "column_not_numeric"
    assert _code(lambda: plan(predicate(where=[{"column": "storeys", "op": "eq", "value": "x"}]))) == "invalid_predicate"
    assert _code(lambda: plan(predicate(kind="sum", column="floor_area", bound=1e9, scale=6))) == "sum_may_overflow"
    assert _code(lambda: plan(predicate(kind="sum", column="floor_area", bound=5),
                              terms(columns=["storeys"]))) == "column_not_permitted"     # value columns
    assert _code(lambda: plan(predicate(), terms(predicate_columns=["storeys"]))) == "column_not_permitted"
    bad_weights = LinearScoreQuery.model_validate({"type": "linear_score", "features": ["floor_area"], "bound": 5,
                                                   "weights": base64.b64encode(b"\x01" * 64).decode()})
    assert _code(lambda: plan(bad_weights)) == "ciphertext_malformed"
    from twinspace.privacy.queries import AggregateQuery
    mask = AggregateQuery.model_validate({"type": "aggregate", "column": "floor_area", "bound": 1,
                                          "mask": [base64.b64encode(b"\x01" * 64).decode()]})
    assert _code(lambda: plan(mask)) == "encrypted_mask_not_allowed"


def test_an_ungrouped_score_on_fewer_rows_than_k_is_a_plan_failure(keys, pcs):
    k, ctx = keys["bfv"], pcs["bfv"]
    query = LinearScoreQuery.model_validate({"type": "linear_score", "features": ["floor_area"], "bound": 500,
                                             "weights": base64.b64encode(k.encrypt_weights(np.array([1]))).decode()})
    assert _code(lambda: compute.plan(ctx, query, make_table(4), terms())) == "cohort_too_small"


def test_after_reading_data_every_failure_is_a_refusal(pcs, table, monkeypatch):
    ctx = pcs["bfv"]
    one = predicate(kind="sum", column="floor_area", bound=500,
                    where=[{"column": "building_id", "op": "eq", "value": "B0-0001"}])
    out = compute.run(ctx, one, table, terms())
    assert (out.outcome, out.reason, out.results) == ("refused", "noisy_cohort_below_k", {})
    run = compute.plan(ctx, predicate(), table, terms())  # the plan passed ...

    def broken(*_a, **_k):
        raise RuntimeError("boom")
    monkeypatch.setattr(compute, "_where", broken)       # ... then reading data fails
    out = run()
    assert (out.outcome, out.reason) == ("refused", "RuntimeError")


# --------------------------------------------------------------------------- the route
BROKER_ISSUER = "https://broker.test"
ENDPOINT = "http://connector-a.test:8443"


class _Node:
    def __init__(self, tmp_path, table: pa.Table, endpoint: str = ENDPOINT):
        self.broker_key = generate_key()
        self.provider_key = generate_key()
        self.config = NodeConfig(endpoint=endpoint, data_dir=tmp_path / "node", private_key=self.provider_key,
                                 org_id="org_provider", broker=None, broker_issuer=BROKER_ISSUER,  # type: ignore[arg-type]
                                 broker_public_key=self.broker_key.public_key())
        self.content_hash = self.config.store.put(table_to_ipc_bytes(table))
        app = FastAPI()
        app.include_router(router_for(self.config))
        self.http = TestClient(app)

    def request(self, keys: ConsumerKeys, query: dict, **terms_kw) -> dict:
        return {"query_id": "q_1", "agreement_id": "agr_1", "consumer_id": "org_consumer",
                "asset": {"id": "ast_1", "version": 1, "content_hash": self.content_hash},
                "context": base64.b64encode(keys.public_context_bytes()).decode(),
                "query": query, "terms": {"epsilon": EPS, "k": 5, "columns": None, "predicate_columns": None,
                                          "measure": "pure", **terms_kw}}

    def token(self, request: dict, *, audience: str | None = None, key=None, **claims) -> str:
        return sign_message(key or self.broker_key, COMPUTE, issuer=claims.pop("issuer", BROKER_ISSUER),
                            audience=audience or self.config.endpoint,
                            claims={"query_id": request["query_id"], "agr": request["agreement_id"],
                                    "sub": request["consumer_id"], "asset": request["asset"],
                                    "body_sha256": body_sha256(request), **claims})

    def post(self, token: str, request: dict):
        return self.http.post("/compute/queries", json={"token": token, "request": request})

    def receipt(self, message: str) -> dict:
        return verify_message(message, self.provider_key.public_key(), RECEIPT, audience=BROKER_ISSUER,
                              issuer="org_provider")


@pytest.fixture
def node(tmp_path, table) -> _Node:
    return _Node(tmp_path, table)


def _count_query() -> dict:
    return wire_query(predicate())


def test_the_route_answers_with_ciphertexts_and_a_signed_receipt(node, keys, table):
    req = node.request(keys["bfv"], wire_query(predicate(kind="sum", column="floor_area", bound=500)))
    r = node.post(node.token(req), req)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outcome"] == "answered" and body["rows"] == N and set(body["results"]) == {"sum"}
    ct = base64.b64decode(body["results"]["sum"])
    receipt = node.receipt(body["receipt"])
    assert {k: receipt[k] for k in ("kind", "query_id", "agr", "sub", "rows", "outcome")} == {
        "kind": "query", "query_id": "q_1", "agr": "agr_1", "sub": "org_consumer", "rows": N, "outcome": "answered"}
    assert receipt["asset"] == req["asset"]
    assert receipt["result_sha256"] == {"sum": hashlib.sha256(ct).hexdigest()}
    district = np.array(table.column("district").to_pylist())
    want = table.column("floor_area").to_numpy()[district == "Xinyi"].sum()
    assert abs(keys["bfv"].decrypt_sum(ct) - want) <= tolerance(2 * 500 / (0.75 * EPS))


def test_a_refusal_is_200_and_its_reason_is_in_the_receipt_only(node, keys):
    req = node.request(keys["bfv"], wire_query(predicate(where=[{"column": "building_id", "op": "eq",
                                                                 "value": "B0-0001"}])))
    r = node.post(node.token(req), req)
    assert r.status_code == 200 and r.json()["outcome"] == "refused"
    assert "results" not in r.json() and "noisy_cohort_below_k" not in r.text.replace(r.json()["receipt"], "")
    receipt = node.receipt(r.json()["receipt"])
    assert (receipt["outcome"], receipt["reason"], receipt["result_sha256"]) == ("refused", "noisy_cohort_below_k",
                                                                                  None)


def test_a_plan_failure_is_a_4xx_problem_without_a_receipt(node, keys):
    req = node.request(keys["bfv"], wire_query(predicate(kind="sum", column="district")))
    r = node.post(node.token(req), req)
    assert (r.status_code, r.json()["code"]) == (422, "column_not_numeric") and "receipt" not in r.json()
    req = node.request(keys["bfv"], _count_query(), predicate_columns=["storeys"])  # the signed terms hold
    r = node.post(node.token(req), req)
    assert (r.status_code, r.json()["code"]) == (422, "column_not_permitted")
    secret = node.request(keys["bfv"], _count_query())
    secret["context"] = base64.b64encode(keys["bfv"].context.serialize(save_secret_key=True)).decode()
    r = node.post(node.token(secret), secret)
    assert (r.status_code, r.json()["code"]) == (400, "context_has_secret_key")


def test_a_replayed_message_is_refused(node, keys):
    req = node.request(keys["bfv"], _count_query())
    token = node.token(req)
    assert node.post(token, req).status_code == 200
    r = node.post(token, req)
    assert (r.status_code, r.json()["code"]) == (401, "replayed_compute_token")


def test_a_tampered_body_is_refused(node, keys):
    req = node.request(keys["bfv"], _count_query())
    token = node.token(req)
    for change in (lambda b: b["terms"].update(k=1),                      # a smaller cohort
                   lambda b: b["terms"].update(columns=None, predicate_columns=["building_id"]),
                   lambda b: b["query"]["where"][0].update(value="Daan"),
                   lambda b: b["asset"].update(content_hash="0" * 64)):
        tampered = copy.deepcopy(req)
        change(tampered)
        r = node.post(token, tampered)
        assert (r.status_code, r.json()["code"]) == (401, "body_mismatch")
    # a body whose hash matches but whose ids differ from the message's
    other = {**req, "query_id": "q_2"}
    r = node.post(node.token(req, body_sha256=body_sha256(other)), other)
    assert (r.status_code, r.json()["code"]) == (401, "body_mismatch")
    assert node.post(token, req).status_code == 200  # the untampered body still works (not yet claimed)


def test_another_connectors_audience_another_key_or_issuer_is_refused(node, keys, tmp_path, table):
    req = node.request(keys["bfv"], _count_query())
    r = node.post(node.token(req, audience="http://connector-b.test:8443"), req)
    assert (r.status_code, r.json()["code"]) == (401, "wrong_audience")
    r = node.post(node.token(req, key=generate_key()), req)
    assert (r.status_code, r.json()["code"]) == (401, "invalid_message")
    r = node.post(node.token(req, issuer="https://evil.test"), req)
    assert (r.status_code, r.json()["code"]) == (401, "invalid_message")
    receipt_kind = sign_message(node.broker_key, RECEIPT, issuer=BROKER_ISSUER, audience=node.config.endpoint,
                                claims={"body_sha256": body_sha256(req)})
    r = node.post(receipt_kind, req)
    assert (r.status_code, r.json()["code"]) == (401, "wrong_message_kind")
    r = node.http.post("/compute/queries", json={"request": req})
    assert (r.status_code, r.json()["code"]) == (401, "missing_compute_token")


def test_content_the_connector_does_not_serve_is_404(node, keys):
    req = node.request(keys["bfv"], _count_query())
    req["asset"]["content_hash"] = "ab" * 32
    r = node.post(node.token(req), req)
    assert (r.status_code, r.json()["code"]) == (404, "asset_not_served")


def test_an_oversized_or_malformed_body_is_refused(node, keys):
    node.config.max_compute_body_bytes = 1024
    app = FastAPI()
    app.include_router(router_for(node.config))
    r = TestClient(app).post("/compute/queries", content=b"{" + b" " * 2000 + b"}",
                             headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (413, "payload_too_large")
    r = node.http.post("/compute/queries", content=b"not json", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_compute_request")
    req = node.request(keys["bfv"], _count_query())
    req["terms"]["epsilon"] = 0.001  # below the minimum, even if the broker signed it
    r = node.post(node.token(req), req)
    assert (r.status_code, r.json()["code"]) == (400, "invalid_compute_request")
