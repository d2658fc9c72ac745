"""Deny by default: no guarded route is reachable without a valid token, and roles are enforced."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from broker.api.deps import RoleGuard, public_marker
from broker.api.routes import _dependency_calls
from twinspace.crypto import generate_key


def _concrete(path: str) -> str:
    return path.replace("{", "").replace("}", "")


def _guarded_routes(app):
    for route in app.state.api_routes:
        calls = _dependency_calls(route.dependant)
        if not any(c is public_marker for c in calls):
            guard = next(c for c in calls if isinstance(c, RoleGuard))
            for method in route.methods:
                yield method, route.path, guard.roles


def test_route_collection_sees_every_included_route(app):
    paths = {r.path for r in app.state.api_routes}
    assert {"/healthz", "/auth/token", "/orgs", "/orgs/me"} <= paths
    with pytest.raises(RuntimeError, match="without a role guard"):
        from fastapi import APIRouter

        from broker.api.routes import api_routes, assert_routes_guarded

        naked = APIRouter()
        naked.get("/naked")(lambda: {})
        assert_routes_guarded(api_routes(naked))


def test_every_api_route_is_guarded_or_explicitly_public(app):
    public = []
    for route in app.state.api_routes:
        calls = _dependency_calls(route.dependant)
        assert any(isinstance(c, RoleGuard) or c is public_marker for c in calls), route.path
        if any(c is public_marker for c in calls):
            public.append(route.path)
    assert set(public) <= {"/healthz", "/readyz", "/.well-known/jwks.json", "/auth/token", "/dsp/catalog/request",
                           "/.well-known/dspace-version", "/console/login", "/console", "/console/"} | {
        p for p in public if p.startswith("/console/static")} | {
        p for p in public if p.startswith("/dsp/callback/{secret}/")}  # DSP callbacks: capability URLs


def test_no_guarded_route_answers_without_a_valid_token(app, client):
    forged_key = generate_key()
    now = int(time.time())
    forged = jwt.encode({"iss": "twinspace-broker", "aud": "twinspace-broker", "sub": "org_x", "role": "operator",
                         "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex, "token_use": "access",
                         "cnf": {"kid": "k"}}, forged_key, algorithm="EdDSA")
    hs256 = jwt.encode({"sub": "org_x", "role": "operator"}, "secret", algorithm="HS256")
    routes = list(_guarded_routes(app))
    assert len(routes) >= 8
    for method, path, _roles in routes:
        for headers in ({}, {"Authorization": f"Bearer {forged}"}, {"Authorization": f"Bearer {hs256}"},
                        {"Authorization": "Basic dXNlcjpwYXNz"}):
            response = client.request(method, _concrete(path), headers=headers, content=b"{bad json")
            assert response.status_code == 401, (method, path, headers, response.text)
            if path.startswith("/dsp/"):  # DSP routes answer with the protocol's error object
                assert response.json()["@type"] in ("CatalogError", "ContractNegotiationError", "TransferError")
            else:
                assert response.headers["content-type"].startswith("application/problem+json")


def test_roles_are_enforced_on_every_guarded_route(app, client, make_org):
    handles = {role: make_org(role) for role in ("provider", "consumer", "auditor", "operator")}
    for method, path, roles in _guarded_routes(app):
        for role, handle in handles.items():
            if role in roles:
                continue
            response = client.request(method, _concrete(path), headers=handle.headers(), json={})
            assert response.status_code == 403, (role, method, path, response.text)
            assert response.json()["code"] == "wrong_role"


def test_consumer_cannot_onboard_or_revoke(client, make_org):
    consumer = make_org("consumer")
    provider = make_org("provider")
    r = client.post("/orgs", headers=consumer.headers(),
                    json={"name": "Rogue", "role": "operator", "public_key": "A" * 43})
    assert r.status_code == 403
    r = client.post(f"/orgs/{provider.org_id}/keys/{provider.kid}/revoke", headers=consumer.headers())
    assert r.status_code == 403
    assert client.get("/orgs/me", headers=provider.headers()).status_code == 200
