"""Bad input gets a clear RFC 9457 problem, and nothing is written."""

from __future__ import annotations

from sqlmodel import Session, select

from twinspace.crypto import generate_key, public_key_b64
from broker.identity.models import Org
from broker.settings import Settings


def _org_count(engine) -> int:
    with Session(engine) as s:
        return len(s.exec(select(Org)).all())


def test_malformed_json_unknown_fields_and_bad_values(client, make_org, engine):
    operator = make_org("operator")
    before = _org_count(engine)
    r = client.post("/orgs", headers={**operator.headers(), "content-type": "application/json"}, content=b"{nope")
    assert r.status_code == 400 and r.json()["code"] == "malformed_json"
    key = public_key_b64(generate_key().public_key())
    r = client.post("/orgs", headers=operator.headers(),
                    json={"name": "Harbour Board", "role": "provider", "public_key": key, "is_admin": True})
    assert r.status_code == 422 and r.json()["code"] == "validation_failed"
    assert any(e["loc"][-1] == "is_admin" for e in r.json()["errors"])
    r = client.post("/orgs", headers=operator.headers(),
                    json={"name": "Harbour Board", "role": "superuser", "public_key": key})
    assert r.status_code == 422
    r = client.post("/orgs", headers=operator.headers(),
                    json={"name": "Harbour Board", "role": "provider", "public_key": "!" * 43})
    assert r.status_code == 400 and r.json()["code"] == "invalid_public_key"
    assert _org_count(engine) == before
    r = client.post("/orgs", headers=operator.headers(), json={"name": "Harbour Board", "role": "provider",
                                                              "public_key": key, "org_type": "port_authority"})
    assert r.status_code == 201
    r = client.post("/orgs", headers=operator.headers(), json={"name": "Harbour Board", "role": "provider",
                                                              "public_key": public_key_b64(generate_key().public_key())})
    assert r.status_code == 409 and r.json()["code"] == "org_exists"
    assert _org_count(engine) == before + 1


def test_oversize_body_is_refused_before_parsing(tmp_path, make_org):
    from fastapi.testclient import TestClient

    from broker.app import create_app
    from broker.runtime import Runtime

    settings = Settings(data_dir=tmp_path / "small", max_body_bytes=2048)
    runtime = Runtime.start(settings)
    with TestClient(create_app(settings, runtime=runtime)) as http:
        big = b'{"name": "' + b"x" * 5000 + b'"}'
        r = http.post("/orgs", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
        # Chunked upload without Content-Length is counted as it streams.
        r = http.post("/auth/token", content=iter([b"a" * 1500, b"b" * 1500]),
                      headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413


def test_token_endpoint_rejects_bad_requests(client):
    r = client.post("/auth/token", data={"grant_type": "password", "username": "x"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    r = client.post("/auth/token", content=b"<xml/>", headers={"content-type": "application/xml"})
    assert r.status_code == 400 and r.json()["code"] == "unsupported_media_type"
    r = client.post("/auth/token", json={"grant_type": "client_credentials",
                                         "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                                         "client_assertion": "x" * 40})
    assert r.status_code == 401 and r.json()["code"] == "invalid_assertion"


def test_unknown_route_is_a_problem(client):
    r = client.get("/no/such/route")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


def test_health_and_jwks(client, runtime):
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").json()["checks"]["database"] == "ok"
    jwk = client.get("/.well-known/jwks.json").json()["keys"][0]
    assert jwk["kid"] == runtime.broker_kid and jwk["crv"] == "Ed25519"


def test_refused_requests_are_audited_even_though_their_transaction_rolls_back(client, make_org, engine):
    from sqlmodel import Session, select

    from broker.audit.models import AuditEntry

    consumer = make_org("consumer")
    r = client.post("/orgs", headers=consumer.headers(), json={"name": "Rogue Org", "role": "operator",
                                                                "public_key": "A" * 43})
    assert r.status_code == 403
    with Session(engine) as s:
        refused = s.exec(select(AuditEntry).where(AuditEntry.kind == "request.refused")).all()
    assert refused and refused[-1].actor == consumer.org_id and refused[-1].outcome == "deny"
    assert '"code":"wrong_role"' in refused[-1].body and '"path":"/orgs"' in refused[-1].body


def test_openapi_document_and_docs_are_served(client):
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/auth/token", "/orgs", "/healthz", "/readyz"} <= set(paths)
    assert client.get("/docs").status_code == 200 and "swagger" in client.get("/docs").text.lower()


def test_readyz_is_a_503_problem_when_the_database_is_unreachable(client, runtime, monkeypatch):
    from broker.storage.db import make_engine

    dead = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    monkeypatch.setattr(runtime, "engine", dead)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["code"] == "database_unavailable"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert client.get("/healthz").status_code == 200  # alive, just not ready
    dead.dispose()
