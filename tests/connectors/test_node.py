"""The connector node as the policy enforcement point, against a fake broker (no real broker needed):
the fake signs decisions and agreement bundles with a broker key made here and records receipts."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import time
from datetime import datetime, timezone
from typing import Any

import httpx
import pyarrow as pa
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from connectors.node import NodeConfig, create_node_app
from twinspace.agreements import bundle, countersign, countersignature_payload, public_key_entry, sign_document
from twinspace.client.broker import BrokerClient
from twinspace.crypto import generate_key, key_id, public_key_b64
from twinspace.dataplane import DECISION, MANIFEST, OWNERSHIP, RECEIPT, sign_message, verify_message
from twinspace.testing.connector import ConnectorHarness
from twinspace.transfer_tokens import issue_transfer_token, make_pop

ISSUER = "test-broker"
ENDPOINT = "http://connector-a.test"
PROVIDER, CONSUMER = "org_provider", "org_consumer"


def arrow_bytes(n: int = 50) -> bytes:
    table = pa.table({"id": [f"B{i:03d}" for i in range(n)], "district": [["Daan", "Xinyi"][i % 2] for i in range(n)],
                      "area": [100.0 + i for i in range(n)], "owner": [f"p{i}" for i in range(n)]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


class FakeBroker:
    """Answers /auth/token, the JWKS, /dataplane/decisions and /dataplane/receipts like the broker."""

    def __init__(self) -> None:
        self.key = generate_key()
        self.provider_key = generate_key()
        self.consumer_key = generate_key()
        self.tokens: dict[str, dict[str, Any]] = {}
        self.receipts: list[str] = []
        self.allow = True
        self.reasons: list[str] = []
        self.obligations: dict[str, Any] = {"max_rows": 30, "columns": ["id", "district", "area"]}
        self.agreement_obligations: dict[str, Any] = {}
        self.wrong_nonce = False
        self.decision_error: tuple[int, str] | None = None
        self.receipts_down = False
        self.decision_calls = 0
        self.lease = 0  # seconds a decision may be reused (0: one decision per pull)
        self.lease_gen: int | None = None  # sign a lease for another generation than asked (an attack)
        self.app = self._app()

    def bundle_for(self, agr: str, content_hash: str) -> dict[str, Any]:
        doc = {"type": "twinspace-agreement/1", "id": agr, "provider_id": PROVIDER, "consumer_id": CONSUMER,
               "asset": {"id": "ast_1", "version": 1, "content_hash": content_hash, "offer_id": "open"},
               "obligations": self.agreement_obligations}
        sigs = [sign_document(self.provider_key, doc, role="provider", org_id=PROVIDER),
                sign_document(self.consumer_key, doc, role="consumer", org_id=CONSUMER)]
        keys = [public_key_entry(key_id(k.public_key()), org, role, public_key_b64(k.public_key()), "active")
                for k, org, role in ((self.provider_key, PROVIDER, "provider"), (self.consumer_key, CONSUMER, "consumer"))]
        now = datetime.now(timezone.utc)
        counter = countersign(self.key, countersignature_payload(doc, sigs, keys, finalized_at=now, issuer=ISSUER))
        return bundle(doc, sigs, counter, keys, issuer=ISSUER, broker_public_key=public_key_b64(self.key.public_key()),
                      snapshot_at=now, status={"revoked": False})

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/auth/token")
        def token():
            return {"access_token": "fake", "token_type": "Bearer", "expires_in": 600}

        @app.get("/.well-known/jwks.json")
        def jwks():
            pub = self.key.public_key()
            return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": public_key_b64(pub), "kid": key_id(pub)}],
                    "issuer": ISSUER}

        @app.post("/dataplane/decisions")
        async def decisions(request: Request):
            self.decision_calls += 1
            body = await request.json()
            if self.decision_error:
                status, code = self.decision_error
                return JSONResponse({"type": f"https://twinspace.dev/problems/{code}", "title": "Conflict",
                                     "status": status, "detail": "The agreement was revoked.", "code": code},
                                    status_code=status, media_type="application/problem+json")
            claims = self.tokens[body["token_jti"]]
            decision = sign_message(self.key, DECISION, issuer=ISSUER, audience=claims["aud"], claims={
                "decision_id": f"dec_{self.decision_calls}", "allow": self.allow, "reasons": self.reasons,
                "obligations": self.obligations, "agr": claims["agr"], "tpid": claims["tpid"], "sub": claims["sub"],
                "token_jti": body["token_jti"], "nonce": "not-your-nonce" if self.wrong_nonce else body["nonce"],
                "policy_version": "1", "input_hash": "x", "lease": self.lease > 0,
                "gen": self.lease_gen if self.lease_gen is not None else body["token_generation"],
                "format": body["format"]}, lifetime=self.lease or None)
            return {"decision": decision, "agreement": self.bundle_for(claims["agr"], claims["asset"]["content_hash"])}

        @app.post("/dataplane/receipts")
        async def receipts(request: Request):
            if self.receipts_down:
                return JSONResponse({"code": "unavailable", "status": 503}, status_code=503)
            body = await request.json()
            if "receipts" in body:  # a batch: one result per receipt
                self.receipts.extend(body["receipts"])
                return {"results": [{"receipt_id": "r", "recorded": True} for _ in body["receipts"]]}
            self.receipts.append(body["receipt"])
            return {"status": "recorded"}

        return app

    def client(self) -> BrokerClient:
        return BrokerClient(TestClient(self.app), PROVIDER, self.provider_key, ISSUER)

    def mint(self, content_hash: str, *, audience: str = ENDPOINT, pid: str = "tp_1", ttl: int = 120,
             consumer_key=None) -> str:
        ck = consumer_key or self.consumer_key
        asset = {"id": "ast_1", "version": 1, "content_hash": content_hash}
        token, _ = issue_transfer_token(self.key, issuer=ISSUER, audience=audience, consumer_id=CONSUMER,
                                        consumer_kid=key_id(ck.public_key()), consumer_key=public_key_b64(ck.public_key()),
                                        provider_id=PROVIDER, transfer_id=pid, agreement_id="agr_1", asset=asset,
                                        generation=1, ttl=ttl)
        import jwt

        claims = jwt.decode(token, options={"verify_signature": False})
        self.tokens[claims["jti"]] = claims
        return token


@pytest.fixture
def broker():
    return FakeBroker()


@pytest.fixture
def node(broker, tmp_path):
    config = NodeConfig(endpoint=ENDPOINT, data_dir=tmp_path / "node", private_key=broker.provider_key,
                        org_id=PROVIDER, broker=broker.client(), broker_issuer=ISSUER)
    sha = config.store.put(arrow_bytes())
    client = TestClient(create_node_app(config), base_url=ENDPOINT)
    client.sha, client.config = sha, config
    return client


def pull(client, token: str, *, pid: str = "tp_1", key=None, pop: str | None = None, fmt: str = "csv",
         columns: str | None = None):
    proof = pop or make_pop(key, method="GET", path=f"/dataplane/transfers/{pid}", token=token)
    params = {"format": fmt, **({"columns": columns} if columns else {})}
    return client.get(f"/dataplane/transfers/{pid}", params=params,
                      headers={"TwinSpace-Transfer-Token": token, "TwinSpace-PoP": proof})


def assert_problem(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert {"type", "title", "status", "detail", "code"} <= set(body)
    if code:
        assert body["code"] == code, body
    return body


def test_valid_pull_serves_permitted_rows_and_a_verifying_receipt(node, broker):
    token = broker.mint(node.sha)
    r = pull(node, token, key=broker.consumer_key)
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 30 and list(rows[0]) == ["id", "district", "area"]  # owner never served
    assert rows[0]["id"] == "B000"
    assert r.headers["x-twinspace-rows"] == "30" and r.headers["x-twinspace-content-hash"] == node.sha
    assert r.headers["cache-control"] == "no-store"
    assert len(broker.receipts) == 1
    claims = verify_message(broker.receipts[0], broker.provider_key.public_key(), RECEIPT, audience=ISSUER,
                            issuer=PROVIDER)
    import hashlib

    assert claims["receipt_id"] == claims["jti"] == r.headers["x-twinspace-receipt"]
    assert claims["rows"] == 30 and claims["bytes"] == len(r.content)
    assert claims["sha256"] == hashlib.sha256(r.content).hexdigest()
    assert (claims["kind"], claims["tpid"], claims["agr"], claims["sub"], claims["format"], claims["complete"]) == (
        "transfer", "tp_1", "agr_1", CONSUMER, "csv", True)
    assert claims["decision_id"] == "dec_1" and claims["asset"]["content_hash"] == node.sha


def test_columns_subset_json_and_agreement_obligations(node, broker):
    broker.agreement_obligations = {"max_rows": 5}
    r = pull(node, broker.mint(node.sha), key=broker.consumer_key, fmt="json", columns="area")
    assert r.status_code == 200, r.text
    assert r.json() == [{"area": 100.0 + i} for i in range(5)]
    # a column the agreement does not permit is named in the refusal, never silently dropped
    body = assert_problem(pull(node, broker.mint(node.sha), key=broker.consumer_key, fmt="json",
                               columns="area,owner"), 422, "column_not_permitted")
    assert "owner" in body["detail"] and "owner" not in body["available"]
    r = pull(node, broker.mint(node.sha), key=broker.consumer_key, fmt="parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(r.content))
    assert table.num_rows == 5 and table.column_names == ["id", "district", "area"]


def test_token_is_reused_with_a_fresh_proof_but_a_replayed_request_is_refused(node, broker):
    token = broker.mint(node.sha)
    proof = make_pop(broker.consumer_key, method="GET", path="/dataplane/transfers/tp_1", token=token)
    assert pull(node, token, pop=proof).status_code == 200
    assert pull(node, token, key=broker.consumer_key).status_code == 200  # the holder of the key, again
    assert_problem(pull(node, token, pop=proof), 401, "replayed_pop")  # a captured request, replayed
    assert_problem(pull(node, token, key=generate_key()), 401, "invalid_pop")  # the token without the key
    assert len(broker.receipts) == 2


def _delivered(broker, n: int, seconds: float = 5.0) -> list[str]:
    """Receipts of leased pulls reach the broker just after the body (from the outbox): wait for ``n``."""
    deadline = time.time() + seconds
    while len(broker.receipts) < n and time.time() < deadline:
        time.sleep(0.02)
    return broker.receipts


def _revoke(node, broker, tpids, *, key=None, audience=ENDPOINT):
    from twinspace.dataplane import REVOCATION, sign_message

    notice = sign_message(key or broker.key, REVOCATION, issuer=ISSUER, audience=audience,
                          claims={"tpids": tpids, "reasons": {t: "transfer_suspended" for t in tpids}})
    return node.post("/dataplane/revocations", json={"notice": notice})


def test_leased_decision_serves_later_pulls_until_revoked(node, broker):
    broker.lease = 30
    token = broker.mint(node.sha)
    for _ in range(3):
        assert pull(node, token, key=broker.consumer_key).status_code == 200
    assert broker.decision_calls == 1  # one decision, three pulls
    assert len(_delivered(broker, 3)) == 3
    # another format is another decision; a token of the same transfer and generation shares the lease
    assert pull(node, token, key=broker.consumer_key, fmt="json").status_code == 200
    assert pull(node, broker.mint(node.sha), key=broker.consumer_key).status_code == 200
    assert broker.decision_calls == 2
    # forged or misaddressed revocations change nothing
    assert_problem(_revoke(node, broker, ["tp_1"], key=generate_key()), 401)
    assert_problem(_revoke(node, broker, ["tp_1"], audience="http://connector-b.test"), 401, "wrong_audience")
    assert pull(node, token, key=broker.consumer_key).status_code == 200
    assert broker.decision_calls == 2
    # the broker revokes: the next pull asks again, and the broker's answer now counts
    r = _revoke(node, broker, ["tp_1"])
    assert r.status_code == 200 and r.json()["leases_dropped"] == 2
    broker.allow, broker.reasons = False, ["stale_transfer_token"]
    assert_problem(pull(node, token, key=broker.consumer_key), 403, "access_denied")
    assert broker.decision_calls == 3


def test_lease_expires_and_a_lease_for_another_generation_is_refused(node, broker):
    broker.lease = 11  # the connector's leeway is 10 s: this lease is usable for about one second
    token = broker.mint(node.sha)
    assert pull(node, token, key=broker.consumer_key).status_code == 200
    import time

    time.sleep(1.2)
    assert pull(node, token, key=broker.consumer_key).status_code == 200
    assert broker.decision_calls == 2
    assert _revoke(node, broker, ["tp_1"]).status_code == 200
    broker.lease, broker.lease_gen = 30, 7  # a lease that would cover other tokens than this one's
    assert_problem(pull(node, token, key=broker.consumer_key), 502, "invalid_decision")


def test_revocation_that_arrives_while_a_decision_is_asked_for_wins(node, broker):
    """The decision was made before the change committed at the broker but reaches the connector after
    the revocation: it must not be kept as a lease (the connector asks again)."""
    broker.lease = 30
    from connectors.node.pep import Enforcer

    enforcer = Enforcer(node.config)
    token = broker.mint(node.sha)
    claims = enforcer.check_token(token, "tp_1")
    original = enforcer._ask
    calls = []

    def ask_then_revoke(*args):
        answer = original(*args)
        calls.append(1)
        if len(calls) == 1:
            enforcer.leases.revoke(["tp_1"])  # arrives while the first answer is on its way
        return answer

    enforcer._ask = ask_then_revoke
    enforcer.decide(claims, "tp_1", "csv")
    assert len(calls) == 2  # asked again after the revocation
    assert enforcer.leases.get("tp_1", 1, "csv") is not None  # the second answer is kept


def test_token_for_another_connector_is_refused(node, broker):
    token = broker.mint(node.sha, audience="http://connector-b.test")
    assert_problem(pull(node, token, key=broker.consumer_key), 401, "wrong_audience")
    assert broker.decision_calls == 0


def test_expired_and_forged_tokens_are_refused(node, broker):
    token = broker.mint(node.sha, ttl=-60)
    assert_problem(pull(node, token, key=broker.consumer_key), 401, "expired_transfer_token")
    forged, _ = issue_transfer_token(generate_key(), issuer=ISSUER, audience=ENDPOINT, consumer_id=CONSUMER,
                                     consumer_kid="k", consumer_key="x", provider_id=PROVIDER, transfer_id="tp_1",
                                     agreement_id="agr_1", asset={"content_hash": node.sha}, generation=1, ttl=60)
    assert_problem(pull(node, forged, key=broker.consumer_key), 401, "invalid_transfer_token")
    assert_problem(node.get("/dataplane/transfers/tp_1"), 401, "missing_transfer_token")


def test_token_for_another_transfer_is_refused(node, broker):
    token = broker.mint(node.sha, pid="tp_2")
    assert_problem(pull(node, token, pid="tp_1", key=broker.consumer_key,
                        pop=make_pop(broker.consumer_key, method="GET", path="/dataplane/transfers/tp_1", token=token)),
                   401, "wrong_transfer")


def test_pop_by_another_key_or_reused_is_refused(node, broker):
    token = broker.mint(node.sha)
    assert_problem(pull(node, token, key=generate_key()), 401, "invalid_pop")
    token = broker.mint(node.sha)
    proof = make_pop(broker.consumer_key, method="GET", path="/dataplane/transfers/tp_1", token=token)
    assert pull(node, token, pop=proof).status_code == 200
    token2 = broker.mint(node.sha)
    assert_problem(pull(node, token2, pop=proof), 401, "invalid_pop")  # bound to the other token
    # the same PoP jti for a fresh token: signed anew by the right key, but its jti was seen
    import jwt

    old = jwt.decode(proof, options={"verify_signature": False})
    replay = jwt.encode({**old, "ath": __import__("twinspace.transfer_tokens").transfer_tokens.token_hash(token2)},
                        broker.consumer_key, algorithm="EdDSA",
                        headers={"typ": "twinspace-pop+jwt", "kid": key_id(broker.consumer_key.public_key())})
    assert_problem(pull(node, token2, pop=replay), 401, "replayed_pop")


def test_pop_for_another_path_is_refused(node, broker):
    token = broker.mint(node.sha)
    proof = make_pop(broker.consumer_key, method="GET", path="/dataplane/transfers/other", token=token)
    assert_problem(pull(node, token, pop=proof), 401, "invalid_pop")


def test_deny_decision_is_403_with_reasons(node, broker):
    broker.allow, broker.reasons = False, ["purpose not permitted"]
    body = assert_problem(pull(node, broker.mint(node.sha), key=broker.consumer_key), 403, "access_denied")
    assert body["reasons"] == ["purpose not permitted"]
    assert broker.receipts == []


def test_decision_with_wrong_nonce_is_refused(node, broker):
    broker.wrong_nonce = True
    assert_problem(pull(node, broker.mint(node.sha), key=broker.consumer_key), 502, "invalid_decision")


def test_broker_refusal_is_passed_on(node, broker):
    broker.decision_error = (409, "agreement_revoked")
    assert_problem(pull(node, broker.mint(node.sha), key=broker.consumer_key), 409, "agreement_revoked")


def test_missing_content_and_bad_format(node, broker):
    other = "ab" * 32
    r = pull(node, broker.mint(other), key=broker.consumer_key)
    assert_problem(r, 404, "data_not_found")
    assert_problem(pull(node, broker.mint(node.sha), key=broker.consumer_key, fmt="xml"), 400, "invalid_format")


def test_undelivered_receipt_waits_in_the_outbox(node, broker, tmp_path):
    broker.receipts_down = True
    r = pull(node, broker.mint(node.sha), key=broker.consumer_key)
    assert r.status_code == 200
    outbox = node.config.outbox
    assert len(outbox) == 1 and broker.receipts == []
    # nothing is lost across a restart: a new node on the same data dir sees it
    again = NodeConfig(endpoint=ENDPOINT, data_dir=node.config.data_dir, private_key=broker.provider_key,
                       org_id=PROVIDER, broker=broker.client(), broker_issuer=ISSUER)
    assert len(again.outbox) == 1
    broker.receipts_down = False
    assert again.outbox.flush(force=True) == 1
    assert len(again.outbox) == 0 and len(outbox) == 0
    claims = verify_message(broker.receipts[0], broker.provider_key.public_key(), RECEIPT, audience=ISSUER)
    assert claims["receipt_id"] == r.headers["x-twinspace-receipt"]


def test_background_thread_delivers_the_outbox(broker, tmp_path):
    with ConnectorHarness(PROVIDER, broker.provider_key, broker.client(), ISSUER, data_dir=tmp_path / "h",
                          outbox_interval=0.2) as conn:
        sha = conn.put(arrow_bytes())
        assert (conn.data_dir / f"{sha}.arrow").is_file()
        assert stat.S_IMODE(os.stat(conn.data_dir / f"{sha}.arrow").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(conn.data_dir / "node.db").st_mode) == 0o600
        broker.receipts_down = True
        token = broker.mint(sha, audience=conn.endpoint)
        path = "/dataplane/transfers/tp_1"
        r = httpx.get(conn.endpoint + path, params={"format": "csv"}, headers={
            "TwinSpace-Transfer-Token": token,
            "TwinSpace-PoP": make_pop(broker.consumer_key, method="GET", path=path, token=token)})
        assert r.status_code == 200, r.text
        assert len(r.text.splitlines()) == 31
        assert len(conn.config.outbox) == 1
        broker.receipts_down = False
        conn.config.outbox.conn.execute("UPDATE outbox SET next_at = 0")
        deadline = time.time() + 5
        while broker.receipts == [] and time.time() < deadline:
            time.sleep(0.05)
        assert len(broker.receipts) == 1 and len(conn.config.outbox) == 0


def test_ownership_proof_and_manifest_verify_with_the_provider_key(node, broker):
    pub = broker.provider_key.public_key()
    info = node.get("/.well-known/twinspace-connector").json()
    assert info == {"endpoint": ENDPOINT, "org_id": PROVIDER, "kid": key_id(pub), "public_key": public_key_b64(pub)}
    nonce = "n" * 32
    r = node.post("/ownership", json={"nonce": nonce, "audience": ISSUER})
    claims = verify_message(r.json()["proof"], pub, OWNERSHIP, audience=ISSUER, issuer=PROVIDER)
    assert (claims["endpoint"], claims["nonce"], claims["org"]) == (ENDPOINT, nonce, PROVIDER)
    assert_problem(node.post("/ownership", json={"nonce": "short", "audience": ISSUER}), 422, "invalid_request")
    assert_problem(node.post("/ownership", content=b"x" * 100_000, headers={"content-type": "application/json"}),
                   413, "payload_too_large")
    m = verify_message(node.get(f"/assets/{node.sha}/manifest").json()["manifest"], pub, MANIFEST, audience=ISSUER,
                       issuer=PROVIDER)
    assert (m["sha256"], m["rows"], m["endpoint"], m["org"]) == (node.sha, 50, ENDPOINT, PROVIDER)
    assert m["bytes"] == len(arrow_bytes()) and m["columns"][0] == {"name": "id", "type": "string"}
    assert_problem(node.get(f"/assets/{'0' * 64}/manifest"), 404, "data_not_found")
    assert_problem(node.get("/assets/nothex/manifest"), 400, "invalid_sha256")
    assert node.get("/healthz").json() == {"status": "ok"}


def test_tampered_data_file_is_not_served(node, broker):
    path = node.config.data_dir / f"{node.sha}.arrow"
    os.chmod(path, 0o600)
    path.write_bytes(path.read_bytes() + b"x")
    assert_problem(pull(node, broker.mint(node.sha), key=broker.consumer_key), 404, "data_not_found")


def test_broker_key_is_fetched_from_jwks_and_claims_are_single_use(broker, tmp_path):
    config = NodeConfig(endpoint="HTTP://Connector-A.test:80/", data_dir=tmp_path / "n", private_key=broker.provider_key,
                        org_id=PROVIDER, broker=broker.client(), broker_issuer=ISSUER)
    assert config.endpoint == ENDPOINT
    assert public_key_b64(config.broker_key()) == public_key_b64(broker.key.public_key())
    assert config.claims.claim("a", time.time() + 60) is True
    assert config.claims.claim("a", time.time() + 60) is False
    assert config.claims.claim("old", time.time() - 1) is True
    assert config.claims.claim("b", time.time() + 60) is True  # purges "old"
    assert config.claims.claim("old", time.time() + 60) is True


def test_push_sends_permitted_rows_to_an_allowed_endpoint_and_refuses_private_ones(broker, tmp_path):
    received: list[bytes] = []
    sink = FastAPI()

    @sink.post("/in")
    async def inbound(request: Request):
        assert request.headers["authorization"] == "Bearer consumer-secret"
        received.append(await request.body())
        return {"ok": True}

    from tests.serving import serve_app

    import jwt

    def push_token(audience: str, endpoint: str, sha: str) -> str:
        token = broker.mint(sha, audience=audience)
        claims = jwt.decode(token, options={"verify_signature": False})
        claims["push"] = {"endpoint": endpoint, "authorization": "Bearer consumer-secret"}
        token = jwt.encode(claims, broker.key, algorithm="EdDSA", headers={"kid": key_id(broker.key.public_key())})
        broker.tokens[claims["jti"]] = claims
        return token

    with serve_app(sink) as sink_url, ConnectorHarness(PROVIDER, broker.provider_key, broker.client(), ISSUER,
                                                        data_dir=tmp_path / "p") as conn:
        sha = conn.put(arrow_bytes())
        r = httpx.post(conn.endpoint + "/dataplane/push", json={"token": push_token(conn.endpoint, sink_url + "/in", sha)})
        assert_problem(r, 403, "push_destination_refused")  # loopback, not allowed
        conn.config.push_allow_networks = ["127.0.0.0/8"]
        r = httpx.post(conn.endpoint + "/dataplane/push", json={"token": push_token(conn.endpoint, sink_url + "/in", sha)})
        assert r.status_code == 200, r.text
        assert json.loads(received[0]) == [{"id": f"B{i:03d}", "district": ["Daan", "Xinyi"][i % 2], "area": 100.0 + i}
                                           for i in range(30)]
        claims = verify_message(broker.receipts[-1], broker.provider_key.public_key(), RECEIPT, audience=ISSUER)
        assert claims["complete"] is True and claims["bytes"] == len(received[0]) == r.json()["bytes"]


def test_limit_previews_the_first_permitted_rows_and_never_more(node, broker):
    """``limit`` narrows to the first rows (a preview); it can never widen what the obligations permit."""
    broker.agreement_obligations = {"max_rows": 5}
    token = broker.mint(node.sha)
    proof = make_pop(broker.consumer_key, method="GET", path="/dataplane/transfers/tp_1", token=token)
    headers = {"TwinSpace-Transfer-Token": token, "TwinSpace-PoP": proof}
    r = node.get("/dataplane/transfers/tp_1", params={"format": "json", "limit": 3}, headers=headers)
    assert r.status_code == 200 and [row["id"] for row in r.json()] == ["B000", "B001", "B002"]
    token = broker.mint(node.sha)
    proof = make_pop(broker.consumer_key, method="GET", path="/dataplane/transfers/tp_1", token=token)
    r = node.get("/dataplane/transfers/tp_1", params={"format": "json", "limit": 1000},
                 headers={"TwinSpace-Transfer-Token": token, "TwinSpace-PoP": proof})
    assert len(r.json()) == 5  # the agreement's max_rows still binds
    token = broker.mint(node.sha)
    proof = make_pop(broker.consumer_key, method="GET", path="/dataplane/transfers/tp_1", token=token)
    assert_problem(node.get("/dataplane/transfers/tp_1", params={"limit": -1},
                            headers={"TwinSpace-Transfer-Token": token, "TwinSpace-PoP": proof}), 400, "invalid_limit")
