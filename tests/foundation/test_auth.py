"""Client-assertion authentication against SQLite and PostgreSQL (and Redis replay protection)."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from twinspace.crypto import generate_key, key_id, public_key_b64
from broker.identity.onboarding import create_org_with_key
from twinspace.tokens import ASSERTION_TYPE, make_assertion
from broker.runtime import Runtime
from broker.settings import Settings


@pytest.fixture
def broker(tmp_path, database_url):
    settings = Settings(data_dir=tmp_path / "b", database_url=database_url, redis_url=None)
    runtime = Runtime.start(settings)
    with TestClient(create_app(settings, runtime=runtime)) as http:
        yield settings, runtime, http
    runtime.engine.dispose()


def _token_request(http, assertion):
    return http.post("/auth/token", data={"grant_type": "client_credentials",
                                          "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})


def _provider(settings, runtime, name="Water Authority"):
    return create_org_with_key(runtime.engine, name=name, role="provider", key_dir=settings.data_dir / "keys")


def _claims(org_id, aud, lifetime=60, **over):
    now = int(time.time())
    claims = {"iss": org_id, "sub": org_id, "aud": aud, "iat": now, "exp": now + lifetime, "jti": uuid.uuid4().hex}
    claims.update(over)
    return claims


def test_assertion_yields_token_that_identifies_the_org(broker):
    settings, runtime, http = broker
    org = _provider(settings, runtime)
    response = _token_request(http, make_assertion(org.private_key, org_id=org.org_id, audience=settings.issuer))
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    me = http.get("/orgs/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["id"] == org.org_id and me["role"] == "provider"
    assert me["keys"][0]["kid"] == org.kid


def test_replayed_assertion_is_refused(broker):
    settings, runtime, http = broker
    org = _provider(settings, runtime)
    assertion = make_assertion(org.private_key, org_id=org.org_id, audience=settings.issuer)
    assert _token_request(http, assertion).status_code == 200
    again = _token_request(http, assertion)
    assert again.status_code == 401 and again.json()["code"] == "replayed_assertion"


@pytest.mark.parametrize("case,code", [
    ("expired", "expired_assertion"),
    ("too_long", "assertion_lifetime_too_long"),
    ("wrong_audience", "invalid_assertion"),
    ("iss_mismatch", "invalid_assertion"),
    ("short_jti", "invalid_assertion"),
])
def test_bad_assertions_are_refused(broker, case, code):
    settings, runtime, http = broker
    org = _provider(settings, runtime)
    other = _provider(settings, runtime, "Other Agency")
    claims = {
        "expired": _claims(org.org_id, settings.issuer, iat=int(time.time()) - 400, exp=int(time.time()) - 100),
        "too_long": _claims(org.org_id, settings.issuer, lifetime=3600),
        "wrong_audience": _claims(org.org_id, "some-other-broker"),
        "iss_mismatch": _claims(org.org_id, settings.issuer, iss=other.org_id, sub=other.org_id),
        "short_jti": _claims(org.org_id, settings.issuer, jti="x"),
    }[case]
    assertion = jwt.encode(claims, org.private_key, algorithm="EdDSA", headers={"kid": org.kid})
    response = _token_request(http, assertion)
    assert response.status_code == 401
    assert response.json()["code"] == code


def test_unknown_and_revoked_keys_are_refused(broker):
    settings, runtime, http = broker
    org = _provider(settings, runtime)
    stranger = generate_key()
    response = _token_request(http, make_assertion(stranger, org_id=org.org_id, audience=settings.issuer))
    assert response.status_code == 401 and response.json()["code"] == "unknown_key"

    token = _token_request(http, make_assertion(org.private_key, org_id=org.org_id,
                                                audience=settings.issuer)).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert http.post(f"/orgs/me/keys/{org.kid}/revoke", headers=auth).status_code == 200
    # The token bound to the revoked key stops working at once, and the key cannot mint new ones.
    assert http.get("/orgs/me", headers=auth).json()["code"] == "revoked_key"
    response = _token_request(http, make_assertion(org.private_key, org_id=org.org_id, audience=settings.issuer))
    assert response.status_code == 401 and response.json()["code"] == "revoked_key"


def test_key_rotation_keeps_the_org_working(broker):
    settings, runtime, http = broker
    org = _provider(settings, runtime)
    token = _token_request(http, make_assertion(org.private_key, org_id=org.org_id,
                                                audience=settings.issuer)).json()["access_token"]
    new_key = generate_key()
    added = http.post("/orgs/me/keys", json={"public_key": public_key_b64(new_key.public_key())},
                      headers={"Authorization": f"Bearer {token}"})
    assert added.status_code == 201 and added.json()["kid"] == key_id(new_key.public_key())
    http.post(f"/orgs/me/keys/{org.kid}/revoke", headers={"Authorization": f"Bearer {token}"})
    fresh = _token_request(http, make_assertion(new_key, org_id=org.org_id, audience=settings.issuer))
    assert fresh.status_code == 200


def test_suspended_org_cannot_authenticate(broker, make_org_for=None):
    settings, runtime, http = broker
    operator = create_org_with_key(runtime.engine, name="Op", role="operator", key_dir=settings.data_dir / "keys")
    org = _provider(settings, runtime)
    op_token = _token_request(http, make_assertion(operator.private_key, org_id=operator.org_id,
                                                   audience=settings.issuer)).json()["access_token"]
    r = http.patch(f"/orgs/{org.org_id}", json={"status": "suspended"}, headers={"Authorization": f"Bearer {op_token}"})
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    response = _token_request(http, make_assertion(org.private_key, org_id=org.org_id, audience=settings.issuer))
    assert response.status_code == 403 and response.json()["code"] == "org_suspended"


def test_redis_replay_store_is_shared_between_replicas(tmp_path, redis_url):
    """Two broker replicas on one database and one Redis: an assertion used on one fails on the other."""
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    key_file = tmp_path / "broker.pem"
    apps = []
    for n in range(2):
        settings = Settings(data_dir=tmp_path / f"r{n}", database_url=db, redis_url=redis_url,
                            broker_key_file=key_file)
        apps.append((settings, Runtime.start(settings)))
    settings, runtime = apps[0]
    org = _provider(settings, runtime, f"Agency {uuid.uuid4().hex[:6]}")
    assertion = make_assertion(org.private_key, org_id=org.org_id, audience=settings.issuer)
    with TestClient(create_app(apps[0][0], runtime=apps[0][1])) as a, \
            TestClient(create_app(apps[1][0], runtime=apps[1][1])) as b:
        assert _token_request(a, assertion).status_code == 200
        replay = _token_request(b, assertion)
        assert replay.status_code == 401 and replay.json()["code"] == "replayed_assertion"
        assert b.get("/readyz").json()["checks"]["redis"] == "ok"


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("case", ["alg_none", "hs256_with_public_key", "iat_in_future", "signed_by_other_key",
                                  "tampered_claims"])
def test_forged_assertions_are_refused_and_issue_nothing(broker, case):
    """Algorithm confusion (alg=none, HS256 keyed with the public key), a future iat, a signature by
    another org's key, edited claims: 401 invalid_assertion and no token issued."""
    import json

    from sqlmodel import Session, select

    from broker.audit.models import AuditEntry
    from twinspace.crypto import public_raw

    settings, runtime, http = broker
    org = _provider(settings, runtime)
    other = _provider(settings, runtime, "Other Agency")
    claims = _claims(org.org_id, settings.issuer)
    if case == "alg_none":
        header = _b64(json.dumps({"alg": "none", "kid": org.kid}).encode())
        assertion = f"{header}.{_b64(json.dumps(claims).encode())}."
    elif case == "hs256_with_public_key":
        header = _b64(json.dumps({"alg": "HS256", "kid": org.kid, "typ": "JWT"}).encode())
        import hashlib
        import hmac

        body = f"{header}.{_b64(json.dumps(claims).encode())}"
        mac = hmac.new(public_raw(org.private_key.public_key()), body.encode(), hashlib.sha256).digest()
        assertion = f"{body}.{_b64(mac)}"
    elif case == "iat_in_future":
        now = int(time.time())
        assertion = jwt.encode(_claims(org.org_id, settings.issuer, iat=now + 600, exp=now + 650),
                               org.private_key, algorithm="EdDSA", headers={"kid": org.kid})
    elif case == "signed_by_other_key":
        assertion = jwt.encode(claims, other.private_key, algorithm="EdDSA", headers={"kid": org.kid})
    else:
        genuine = jwt.encode(claims, org.private_key, algorithm="EdDSA", headers={"kid": org.kid})
        head, _, sig = genuine.split(".")
        forged_claims = {**claims, "sub": other.org_id, "iss": other.org_id}
        assertion = f"{head}.{_b64(json.dumps(forged_claims).encode())}.{sig}"
    with Session(runtime.engine) as s:
        issued_before = len(s.exec(select(AuditEntry).where(AuditEntry.kind == "auth.token_issued")).all())
    response = _token_request(http, assertion)
    assert response.status_code == 401, response.text
    assert response.json()["code"] in ("invalid_assertion",)
    assert "access_token" not in response.json()
    with Session(runtime.engine) as s:
        assert len(s.exec(select(AuditEntry).where(AuditEntry.kind == "auth.token_issued")).all()) == issued_before
