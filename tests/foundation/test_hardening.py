"""Inputs and conditions an attack suite found answered with 500s, 400s or silently accepted."""

from __future__ import annotations

import os
import stat
import time
import uuid

import jwt
import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.identity.onboarding import create_org_with_key
from broker.runtime import Runtime
from broker.settings import Settings
from tests.faults.harness import free_port
from twinspace.crypto import key_id
from twinspace.tokens import ASSERTION_TYPE

BAD_JSON = {
    "overflowing number": b'{"input": {"x": 1e400}}',
    "NaN": b'{"input": {"x": NaN}}',
    "Infinity": b'{"input": {"x": -Infinity}}',
    "lone surrogate": b'{"input": {"x": "\\ud800"}}',
    "huge integer": b'{"input": {"x": ' + b"9" * 40 + b"}}",
    "integer beyond 2^53": b'{"input": {"x": 9007199254740993}}',
    "invalid UTF-8": b'{"input": {"x": "\xff\xfe"}}',
    "deep nesting": b'{"input": ' + b'{"a": ' * 200 + b"1" + b"}" * 200 + b"}",
}


@pytest.mark.parametrize("name", sorted(BAD_JSON))
def test_policy_evaluate_refuses_unrepresentable_json_with_a_problem(name, make_org, client):
    auditor = make_org("auditor")
    response = client.post("/policies/open-data/evaluate", content=BAD_JSON[name],
                           headers={**auditor.headers(), "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "malformed_json"


@pytest.mark.parametrize("name", ["NaN", "lone surrogate", "huge integer"])
def test_every_json_route_refuses_the_same_input(name, make_org, client):
    operator = make_org("operator")
    body = BAD_JSON[name].replace(b'"input"', b'"attributes"')
    response = client.post("/orgs", content=body, headers={**operator.headers(), "Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["code"] == "malformed_json"


def test_ordinary_json_still_works(make_org, client):
    auditor = make_org("auditor")
    response = client.post("/policies/open-data/evaluate", headers=auditor.headers(),
                           json={"input": {"x": 9007199254740991, "y": -0.5, "s": "\U0001F600 ok"}})
    assert response.status_code == 200, response.text


def test_a_chunked_body_over_the_limit_is_413(client, make_org):
    auditor = make_org("auditor")

    def chunks():
        for _ in range(40):
            yield b"x" * 65_536  # 2.6 MB, no Content-Length

    for path, ctype in (("/policies/open-data/evaluate", "application/json"),
                        ("/auth/token", "application/x-www-form-urlencoded")):
        response = client.post(path, content=chunks(), headers={**auditor.headers(), "Content-Type": ctype})
        assert response.status_code == 413, (path, response.text)
        assert response.json()["code"] == "payload_too_large"


def _assertion(org, audience, **over) -> str:
    now = int(time.time())
    claims = {"iss": org.org_id, "sub": org.org_id, "aud": audience, "iat": now, "exp": now + 60,
              "jti": uuid.uuid4().hex, **over}
    return jwt.encode(claims, org.private_key, algorithm="EdDSA", headers={"kid": org.kid})


def _token(client, assertion):
    return client.post("/auth/token", data={"grant_type": "client_credentials",
                                            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})


def test_an_assertion_whose_audience_is_a_list_is_refused(make_org, client, settings):
    org = make_org("consumer")
    assert _token(client, _assertion(org, settings.issuer)).status_code == 200
    response = _token(client, _assertion(org, [settings.issuer, "https://elsewhere.example"]))
    assert response.status_code == 401 and response.json()["code"] == "invalid_assertion"


def test_an_access_token_whose_audience_is_a_list_is_refused(make_org, client, runtime, settings):
    org = make_org("consumer")
    now = int(time.time())
    claims = {"iss": settings.issuer, "aud": [settings.issuer, "other"], "sub": org.org_id, "role": "consumer",
              "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex, "token_use": "access", "cnf": {"kid": org.kid}}
    forged = jwt.encode(claims, runtime.broker_key, algorithm="EdDSA",
                        headers={"kid": key_id(runtime.broker_key.public_key())})
    assert client.get("/orgs/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert client.get("/orgs/me", headers=org.headers()).status_code == 200


def test_redis_down_answers_503_with_retry_after_on_the_token_endpoint(tmp_path):
    settings = Settings(data_dir=tmp_path / "b", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    runtime = Runtime.start(settings)
    org = create_org_with_key(runtime.engine, name="Consumer", role="consumer", key_dir=tmp_path / "keys")
    with TestClient(create_app(settings, runtime=runtime)) as http:
        response = _token(http, _assertion(org, settings.issuer))
    runtime.engine.dispose()
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "replay_store_unavailable"
    assert int(response.headers["Retry-After"]) >= 1


def test_state_files_are_private(runtime, settings):
    db = settings.data_dir / "twinspace.db"
    for path in (db, settings.effective_broker_key_file):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(settings.data_dir).st_mode) == 0o700
    wal = db.with_name(db.name + "-wal")
    if wal.exists():
        assert stat.S_IMODE(os.stat(wal).st_mode) & 0o077 == 0


def test_token_requests_are_rate_limited_per_ip_with_retry_after(tmp_path):
    settings = Settings(data_dir=tmp_path / "b", rate_limit_auth_ip="3/minute")
    runtime = Runtime.start(settings)
    org = create_org_with_key(runtime.engine, name="Consumer", role="consumer", key_dir=tmp_path / "keys")
    with TestClient(create_app(settings, runtime=runtime)) as http:
        codes = [_token(http, _assertion(org, settings.issuer)) for _ in range(4)]
    runtime.engine.dispose()
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    assert codes[-1].json()["code"] == "rate_limited" and 1 <= int(codes[-1].headers["Retry-After"]) <= 60


def test_tokens_are_rate_limited_per_organisation(tmp_path):
    settings = Settings(data_dir=tmp_path / "b", rate_limit_auth_org="2/minute")
    runtime = Runtime.start(settings)
    a = create_org_with_key(runtime.engine, name="Consumer A", role="consumer", key_dir=tmp_path / "keys")
    b = create_org_with_key(runtime.engine, name="Consumer B", role="consumer", key_dir=tmp_path / "keys")
    with TestClient(create_app(settings, runtime=runtime)) as http:
        codes_a = [_token(http, _assertion(a, settings.issuer)).status_code for _ in range(3)]
        codes_b = [_token(http, _assertion(b, settings.issuer)).status_code for _ in range(2)]
    runtime.engine.dispose()
    assert codes_a == [200, 200, 429] and codes_b == [200, 200]
