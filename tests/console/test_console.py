"""The console refuses exactly as the API does (TestClient, no browser).

Every route is enumerated from the console application itself, so a new route cannot escape these checks:
no session → 401 ``missing_session``; a role the route does not name → 403 ``wrong_role`` (and those roles
are the matching API route's, read off the API application); state-changing requests without, or with a
wrong, CSRF token → 403 ``csrf_failed``, from another origin → 403 ``csrf_origin``; logged-out, expired,
tampered and foreign-signed session cookies are refused; tenants cannot see each other's negotiations and
agreements (404, as the API answers); every response carries the strict security headers; nothing is
loaded from another origin.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from broker.api.deps import ALL_ROLES, RoleGuard, public_marker
from broker.api.routes import _dependency_calls, api_routes
from broker.console.auth import SAFE_METHODS, SESSION_COOKIE, ConsoleGuard
from tests.console.conftest import console_login, login_nonce

CONSOLE_DIR = Path(__file__).resolve().parents[2] / "broker" / "console"
PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "instance"}
GUARD_CODES = {"missing_session", "session_ended", "wrong_role", "csrf_failed", "csrf_origin", "invalid_token",
               "expired_token"}

# Console route → the API route it mirrors (same roles), or None with the reason there is none.
# Every console route must be listed here: test_every_console_route_is_mapped fails for a new one.
API_TWIN: dict[tuple[str, str], tuple[str, str] | str] = {
    ("GET", "/login"): "public: the login form",
    ("POST", "/login/lookup"): "public: which org a key thumbprint belongs to (as /auth/token reveals)",
    ("POST", "/login"): "public: the browser-signed client assertion, verified like POST /auth/token",
    ("POST", "/logout"): "console sessions only",
    ("GET", "/"): ("GET", "/orgs/me"),
    ("GET", "/catalog"): ("GET", "/catalog/assets"),
    ("GET", "/catalog/{asset_id}"): ("GET", "/catalog/assets/{asset_id}"),
    ("GET", "/assets"): "the provider's own-asset overview (the API searches with ?provider=)",
    ("POST", "/assets/{asset_id}/withdraw"): ("POST", "/catalog/assets/{asset_id}/withdraw"),
    ("POST", "/assets/{asset_id}/offers"): ("POST", "/catalog/assets/{asset_id}/versions"),
    ("POST", "/assets/{asset_id}/offers/form"): ("POST", "/catalog/assets/{asset_id}/versions"),
    ("POST", "/negotiations"): ("POST", "/contracts/negotiations"),
    ("GET", "/negotiations"): ("GET", "/contracts/negotiations"),
    ("GET", "/negotiations/{pid}"): ("GET", "/contracts/negotiations/{pid}"),
    ("POST", "/negotiations/{pid}/offer"): ("POST", "/contracts/negotiations/{pid}/offer"),
    ("POST", "/negotiations/{pid}/accept"): ("POST", "/contracts/negotiations/{pid}/accept"),
    ("POST", "/negotiations/{pid}/finalize"): ("POST", "/dsp/negotiations/{pid}/events"),
    ("POST", "/negotiations/{pid}/terminate"): ("POST", "/dsp/negotiations/{pid}/termination"),
    ("POST", "/negotiations/{pid}/draft"): ("POST", "/contracts/negotiations/{pid}/agreement-draft"),
    ("POST", "/negotiations/{pid}/agree"): ("POST", "/contracts/negotiations/{pid}/agree"),
    ("POST", "/negotiations/{pid}/verify"): ("POST", "/dsp/negotiations/{pid}/agreement/verification"),
    ("GET", "/agreements"): ("GET", "/contracts/agreements"),
    ("GET", "/agreements/{agreement_id}"): ("GET", "/contracts/agreements/{agreement_id}"),
    ("GET", "/agreements/{agreement_id}/export"): ("GET", "/contracts/agreements/{agreement_id}/export"),
    ("POST", "/agreements/{agreement_id}/revoke"): ("POST", "/contracts/agreements/{agreement_id}/revoke"),
    ("POST", "/agreements/{agreement_id}/transfer"): ("POST", "/dsp/transfers/request"),
    ("POST", "/transfers/{pid}/token"): ("POST", "/transfers/{pid}/token"),
    ("POST", "/transfers/{pid}/acknowledgements"): ("POST", "/transfers/{pid}/acknowledgements"),
    ("GET", "/access"): "the provider's view of events on its own assets (no API twin)",
    ("GET", "/audit"): ("GET", "/audit/entries"),
    ("GET", "/audit/entries/{seq}"): ("GET", "/audit/entries/{seq}"),
    ("GET", "/audit/monitor"): ("GET", "/audit/checkpoints/latest"),
    ("GET", "/audit/monitor/consistency"): ("GET", "/audit/proofs/consistency"),
    ("GET", "/audit/entries/{seq}/receipt"): ("GET", "/audit/entries/{seq}/receipt"),
    ("POST", "/audit/verify"): ("GET", "/audit/export"),  # it reads every entry, as the export does
    ("GET", "/queries"): "how to run encrypted queries with the CLI (no API twin)",
    ("GET", "/assets/{asset_id}/profile"): "the provider's view of its own entity profile (no API twin: others "
                                           "reach an asset's content through a contract)",
}
# The one deliberate narrowing: the DSP events endpoint takes ACCEPTED from the consumer and FINALIZED from
# the provider (the service enforces it); the console's finalize button is the FINALIZED half.
NARROWED = {("POST", "/negotiations/{pid}/finalize"): ("provider",)}


def _roles(route: APIRoute) -> tuple[str, ...] | None:
    guards = [c for c in _dependency_calls(route.dependant) if isinstance(c, RoleGuard)]
    return tuple(guards[0].roles) if guards else None


def _is_public(route: APIRoute) -> bool:
    return any(c is public_marker for c in _dependency_calls(route.dependant))


@pytest.fixture
def console_routes(runtime) -> list[tuple[str, str, tuple[str, ...] | None, APIRoute]]:
    from broker.console.app import create_console_app

    console = create_console_app(runtime)
    for route in console.routes:  # nothing but API routes (possibly in included routers) and the static files
        assert isinstance(route, APIRoute) or hasattr(route, "original_router") or \
            (isinstance(route, Mount) and route.path == "/static"), f"unexpected console route {route!r}"
    out = []
    for route in api_routes(console.router):
        for method in sorted(route.methods - {"HEAD"}):
            out.append((method, route.path, _roles(route), route))
    assert len(out) >= 25
    return out


def _guarded(console_routes):
    return [(m, p, roles) for m, p, roles, r in console_routes if not _is_public(r)]


@pytest.fixture
def ids(demo) -> dict[str, str]:
    agreement = demo.state["agreement"]
    return {"asset_id": demo.state["catalog_assets"]["buildings"], "pid": agreement["negotiation_id"],
            "agreement_id": agreement["id"], "seq": "1"}


def _client(app) -> TestClient:
    return TestClient(app, base_url="https://testserver")


@pytest.fixture
def sessions(app, demo, settings):
    """One logged-in console client per role (and a second provider / consumer), with its CSRF token."""
    demo.add_participant("consumer2", name="Other Analytics Co", role="consumer", org_type="enterprise",
                         attributes={"clearance": "internal", "purposes": ["research"]})
    out = {}
    for label in ("operator", "provider", "provider2", "consumer", "consumer2", "auditor"):
        org = demo.participants[label].org
        client = _client(app)
        csrf = console_login(client, org.org_id, org.private_key, audience=settings.issuer)
        out[label] = (client, csrf)
    return out


def _by_role(sessions):
    return {"operator": sessions["operator"], "provider": sessions["provider"],
            "consumer": sessions["consumer"], "auditor": sessions["auditor"]}


def _call(client: TestClient, method: str, url: str, *, json_accept: bool = True, headers=None, data=None):
    h = {"Accept": "application/json" if json_accept else "text/html"}
    h.update(headers or {})
    return client.request(method, url, headers=h, data=data, follow_redirects=False)


def _code(r) -> str | None:
    if r.headers.get("content-type", "").startswith("application/problem+json"):
        return r.json().get("code")
    m = re.search(r'id="problem-code">([^<]+)<', r.text)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- route inventory and roles
def test_every_console_route_is_mapped_and_guarded_or_public(console_routes):
    seen = {(m, p) for m, p, _, _ in console_routes}
    assert seen == set(API_TWIN), (f"unmapped console routes: {sorted(seen - set(API_TWIN))}; "
                                   f"stale entries: {sorted(set(API_TWIN) - seen)}")
    for method, path, roles, route in console_routes:
        if _is_public(route):
            assert isinstance(API_TWIN[(method, path)], str) and API_TWIN[(method, path)].startswith("public")
            assert path.startswith("/login"), f"only the login routes may be public, not {method} {path}"
        else:
            guards = [c for c in _dependency_calls(route.dependant) if isinstance(c, RoleGuard)]
            assert guards and all(isinstance(g, ConsoleGuard) for g in guards), \
                f"{method} {path} must be guarded by the session-cookie ConsoleGuard"


def test_console_routes_name_the_same_roles_as_their_api_twins(app, console_routes):
    api = {}
    for route in app.state.api_routes:
        for method in route.methods:
            api[(method, route.path)] = _roles(route)
    for method, path, roles, _ in console_routes:
        twin = API_TWIN[(method, path)]
        if isinstance(twin, str):
            continue
        assert twin in api, f"{method} {path} mirrors {twin}, which the API no longer has"
        expected = api[twin]
        if (method, path) in NARROWED:
            assert set(NARROWED[(method, path)]) < set(expected)
            expected = NARROWED[(method, path)]
        assert set(roles) == set(expected), f"console {method} {path} admits {roles}, API {twin} admits {expected}"


def test_finalize_by_the_consumer_is_refused_by_the_api_too(demo):
    """The console's narrowing of the DSP events route matches what the API enforces for FINALIZED."""
    agreement = demo.state["agreement"]
    consumer = demo.participants["consumer"]
    neg = demo.http.get(f"/contracts/negotiations/{agreement['negotiation_id']}",
                        headers=consumer.client.headers()).json()
    from twinspace.dsp.messages import CONTEXT

    r = demo.http.post(f"/dsp/negotiations/{neg['providerPid']}/events", headers=consumer.client.headers(),
                       json={"@context": CONTEXT, "@type": "ContractNegotiationEventMessage", "eventType": "FINALIZED",
                             "providerPid": neg["providerPid"], "consumerPid": neg["consumerPid"]})
    assert r.status_code == 403, r.text


# --------------------------------------------------------------------------- no session / wrong role
def test_without_a_session_every_guarded_route_is_401_missing_session(app, demo, console_routes, ids):
    client = _client(app)
    api_problem = client.get("/orgs/me").json()  # the API's refusal, for the shape comparison
    failures = []
    for method, path, _, in _guarded(console_routes):
        url = "/console" + path.format(**ids)
        for json_accept in (True, False):
            r = _call(client, method, url, json_accept=json_accept)
            if r.status_code != 401 or _code(r) != "missing_session":
                failures.append(f"{method} {url} json={json_accept}: {r.status_code} {_code(r)}")
                continue
            if not r.headers.get("www-authenticate", "").startswith("Cookie"):
                failures.append(f"{method} {url}: no WWW-Authenticate")
            if json_accept:
                body = r.json()
                if set(body) != PROBLEM_KEYS or set(body) != set(api_problem) or body["status"] != 401:
                    failures.append(f"{method} {url}: problem shape {sorted(body)} vs API {sorted(api_problem)}")
            elif "text/html" not in r.headers["content-type"] or "/console/login" not in r.text:
                failures.append(f"{method} {url}: the HTML refusal does not offer the login page")
    assert not failures, "\n".join(failures)
    assert api_problem["code"] == "missing_token"


def test_a_role_the_route_does_not_name_is_403_wrong_role(sessions, console_routes, ids):
    by_role = _by_role(sessions)
    failures, checked = [], 0
    for method, path, roles in _guarded(console_routes):
        url = "/console" + path.format(**ids)
        for role in ALL_ROLES:
            if role in roles:
                continue
            client, csrf = by_role[role]
            # with and without the (valid) CSRF token: the role is refused either way
            for headers in ({}, {"X-CSRF-Token": csrf}):
                r = _call(client, method, url, headers=headers)
                checked += 1
                if r.status_code != 403 or _code(r) != "wrong_role":
                    failures.append(f"{role} {method} {url}: {r.status_code} {_code(r)}")
    assert not failures, "\n".join(failures)
    assert checked > 40


def test_html_refusals_keep_the_signed_in_header(sessions):
    client, csrf = sessions["consumer"]
    r = _call(client, "GET", "/console/audit", json_accept=False)
    assert r.status_code == 403 and _code(r) == "wrong_role"
    assert f'data-csrf="{csrf}"' in r.text and 'id="logout"' in r.text  # the logout form still works


# --------------------------------------------------------------------------- CSRF and Origin
def _state_changing(console_routes):
    return [(m, p, roles) for m, p, roles in _guarded(console_routes) if m not in SAFE_METHODS]


def test_state_changing_routes_need_the_sessions_csrf_token(sessions, console_routes):
    by_role = _by_role(sessions)
    missing = {"asset_id": "ast_missing0000000000", "pid": "neg_missing", "agreement_id": "agr_missing", "seq": "999999"}
    routes = _state_changing(console_routes)
    assert {p for _, p, _ in routes} >= {"/logout", "/negotiations", "/agreements/{agreement_id}/revoke",
                                           "/assets/{asset_id}/withdraw", "/audit/verify"}
    failures = []
    for method, path, roles in routes:
        url = "/console" + path.format(**missing)
        role = roles[0]
        client, csrf = by_role[role]
        other_label = {"provider": "provider2", "consumer": "consumer2"}.get(role)
        cases = [("no token", {}, None, "csrf_failed"),
                 ("wrong header token", {"X-CSRF-Token": "A" * 43}, None, "csrf_failed"),
                 ("wrong form token", {}, {"csrf": "A" * 43}, "csrf_failed"),
                 ("empty token", {"X-CSRF-Token": ""}, None, "csrf_failed"),
                 ("cross-origin", {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}, None, "csrf_origin"),
                 ("opaque origin", {"X-CSRF-Token": csrf, "Origin": "null"}, None, "csrf_origin"),
                 ("other scheme-host", {"X-CSRF-Token": csrf, "Origin": "https://testserver.evil.example"}, None,
                  "csrf_origin")]
        if other_label:  # a token from another live session does not work in this one
            cases.append(("another session's token", {"X-CSRF-Token": sessions[other_label][1]}, None, "csrf_failed"))
        for label, headers, data, code in cases:
            r = _call(client, method, url, headers=headers, data=data)
            if r.status_code != 403 or _code(r) != code:
                failures.append(f"{role} {method} {url} {label}: {r.status_code} {_code(r)} (want {code})")
        if path == "/logout":
            continue  # passing the guard would end this session; the logout test covers it
        # the right token (header or form field, same origin or no Origin) gets past the guard
        for headers, data in (({"X-CSRF-Token": csrf}, None), ({"Origin": "https://testserver"}, {"csrf": csrf})):
            r = _call(client, method, url, headers=headers, data=data)
            if r.status_code in (401, 403) and _code(r) in GUARD_CODES:
                failures.append(f"{role} {method} {url} with the right token: {r.status_code} {_code(r)}")
    assert not failures, "\n".join(failures)


def test_the_csrf_token_is_bound_to_the_session(app, demo, settings):
    org = demo.participants["consumer"].org
    a, b = _client(app), _client(app)
    token_a = console_login(a, org.org_id, org.private_key, audience=settings.issuer)
    token_b = console_login(b, org.org_id, org.private_key, audience=settings.issuer)
    assert token_a != token_b  # two sessions of the same org get different tokens
    r = _call(a, "POST", "/console/logout", headers={"X-CSRF-Token": token_b})
    assert r.status_code == 403 and _code(r) == "csrf_failed"


def test_login_refuses_cross_origin_and_a_missing_or_foreign_nonce(app, demo, settings):
    from twinspace.crypto import key_id
    from twinspace.tokens import make_assertion

    org = demo.participants["consumer"].org
    client = _client(app)
    nonce = login_nonce(client)
    cookie = client.cookies.get("ts_console_login")
    assert cookie == nonce
    kid = key_id(org.private_key.public_key())

    def post_login(nonce_value, headers=None):
        return client.post("/console/login", headers={"Accept": "application/json", **(headers or {})},
                           data={"client_assertion": make_assertion(org.private_key, org_id=org.org_id,
                                                                    audience=settings.issuer),
                                 "nonce": nonce_value, "next": "/"}, follow_redirects=False)

    r = post_login(nonce, {"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["code"] == "csrf_origin"
    r = client.post("/console/login/lookup", json={"kid": kid, "nonce": nonce}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["code"] == "csrf_origin"
    r = post_login("x" * 32)
    assert r.status_code == 403 and r.json()["code"] == "csrf_failed"
    r = client.post("/console/login/lookup", json={"kid": kid, "nonce": "x" * 32})
    assert r.status_code == 403 and r.json()["code"] == "csrf_failed"
    stranger = _client(app)  # a nonce that was issued to another browser
    r = stranger.post("/console/login", data={"client_assertion": "x" * 40, "nonce": nonce},
                      headers={"Accept": "application/json"}, follow_redirects=False)
    assert r.status_code == 403 and r.json()["code"] == "csrf_failed"
    assert SESSION_COOKIE not in client.cookies and SESSION_COOKIE not in stranger.cookies
    # an assertion for another audience is refused like at /auth/token
    r = client.post("/console/login", headers={"Accept": "application/json"}, follow_redirects=False,
                    data={"client_assertion": make_assertion(org.private_key, org_id=org.org_id, audience="elsewhere"),
                          "nonce": nonce})
    assert r.status_code == 401 and r.json()["code"] == "invalid_assertion"
    # the honest login works and sets the cookie with every flag
    r = post_login(nonce, {"Origin": "https://testserver"})
    assert r.status_code == 303
    set_cookie = [v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(SESSION_COOKIE + "=")]
    assert set_cookie, r.headers
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in set_cookie[0].split(";")[1:]}
    assert {"secure", "httponly", "samesite", "path", "max-age"} <= set(flags)
    assert flags["samesite"].lower() == "samesite=strict" and flags["path"] == "Path=/console"
    assert 0 < int(flags["max-age"].split("=")[1]) <= settings.access_token_ttl_seconds


def test_login_nonce_cookie_flags(app):
    r = _client(app).get("/console/login")
    set_cookie = r.headers["set-cookie"]
    assert set_cookie.startswith("ts_console_login=")
    lowered = set_cookie.lower()
    assert "secure" in lowered and "httponly" in lowered and "samesite=strict" in lowered and "path=/console" in lowered


# --------------------------------------------------------------------------- session lifecycle
def test_a_logged_out_session_is_refused_even_if_the_cookie_is_replayed(app, demo, settings):
    org = demo.participants["provider"].org
    client = _client(app)
    csrf = console_login(client, org.org_id, org.private_key, audience=settings.issuer)
    stolen = client.cookies.get(SESSION_COOKIE)
    r = _call(client, "POST", "/console/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    assert SESSION_COOKIE not in client.cookies  # the browser drops it
    r = _call(client, "GET", "/console/")
    assert r.status_code == 401 and _code(r) == "missing_session"
    replay = _client(app)
    jar = {"Cookie": f"{SESSION_COOKIE}={stolen}"}
    for method, url in (("GET", "/console/"), ("GET", "/console/assets"), ("POST", "/console/logout")):
        r = _call(replay, method, url, headers={"X-CSRF-Token": csrf, **jar})
        assert r.status_code == 401 and _code(r) == "session_ended", (method, url, r.text)
    r = _call(replay, "GET", "/console/assets", json_accept=False, headers=jar)
    assert r.status_code == 401 and _code(r) == "session_ended"


def _forged(settings, runtime, org, *, ttl=600, key=None, **extra) -> str:
    from twinspace.crypto import key_id
    from twinspace.tokens import issue_access_token

    token, _ = issue_access_token(key or runtime.broker_key, issuer=settings.issuer, org_id=org.org_id,
                                  role=org.role, org_key_kid=key_id(org.private_key.public_key()), ttl=ttl,
                                  extra=extra)
    return token


def test_expired_tampered_and_foreign_cookies_are_refused(app, demo, settings, runtime):
    from twinspace.crypto import generate_key

    org = demo.participants["consumer"].org
    good = _forged(settings, runtime, org)
    head, body, sig = good.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    import base64
    import json

    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["role"] = "auditor"  # escalate the role, keep the signature
    escalated_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    cases = {
        "expired": (_forged(settings, runtime, org, ttl=-(settings.clock_skew_seconds + 60)), "expired_token"),
        "tampered signature": (f"{head}.{body}.{flipped}", "invalid_token"),
        "tampered claims": (f"{head}.{escalated_body}.{sig}", "invalid_token"),
        "signed by another key": (_forged(settings, runtime, org, key=generate_key()), "invalid_token"),
        "not an access token": (_forged(settings, runtime, org, token_use="transfer"), "invalid_token"),
        "garbage": ("not-a-jwt", "invalid_token"),
    }
    # control: the well-formed, broker-signed token opens the console (so the refusals below are meaningful)
    control = _client(app)
    r = _call(control, "GET", "/console/", json_accept=False, headers={"Cookie": f"{SESSION_COOKIE}={good}"})
    assert r.status_code == 200 and org.name in r.text
    for label, (cookie, code) in cases.items():
        c = _client(app)
        for method, url in (("GET", "/console/"), ("GET", "/console/audit"), ("POST", "/console/negotiations")):
            r = _call(c, method, url, headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
            assert r.status_code == 401 and _code(r) == code, (label, method, url, r.status_code, r.text)


def test_a_revoked_key_ends_its_console_sessions(app, demo, settings, make_org, client):
    org = make_org("consumer", org_type="enterprise")
    console = _client(app)
    console_login(console, org.org_id, org.private_key, audience=settings.issuer)
    r = client.post(f"/orgs/me/keys/{org.kid}/revoke", headers=org.headers())
    assert r.status_code in (200, 204), r.text
    r = _call(console, "GET", "/console/")
    api = client.get("/orgs/me", headers={"Authorization": "Bearer " + console.cookies.get(SESSION_COOKIE)})
    assert r.status_code == api.status_code == 401 and _code(r) == api.json()["code"] == "revoked_key", r.text


def test_a_suspended_org_loses_its_console_session(app, demo, settings, client):
    consumer = demo.participants["consumer"]
    console = _client(app)
    console_login(console, consumer.org.org_id, consumer.org.private_key, audience=settings.issuer)
    operator = demo.participants["operator"].client
    r = client.patch(f"/orgs/{consumer.org.org_id}", headers=operator.headers(), json={"status": "suspended"})
    assert r.status_code == 200, r.text
    r = _call(console, "GET", "/console/catalog")
    assert r.status_code in (401, 403) and _code(r) not in (None, "missing_session"), r.text
    api = client.get("/orgs/me", headers={"Authorization": "Bearer " + console.cookies.get(SESSION_COOKIE)})
    assert (r.status_code, _code(r)) == (api.status_code, api.json()["code"])  # refused exactly as the API does


# --------------------------------------------------------------------------- tenant isolation
def test_one_tenant_cannot_see_anothers_negotiation_or_agreement(sessions, demo, ids, client):
    """The demo's agreement is between the consumer and provider2; provider and consumer2 are strangers."""
    pid, agreement_id = ids["pid"], ids["agreement_id"]
    for party in ("consumer", "provider2"):
        c, _ = sessions[party]
        assert _call(c, "GET", f"/console/negotiations/{pid}", json_accept=False).status_code == 200
        assert _call(c, "GET", f"/console/agreements/{agreement_id}", json_accept=False).status_code == 200
    for stranger in ("provider", "consumer2"):
        c, csrf = sessions[stranger]
        api_headers = demo.participants[stranger].client.headers()
        pages = [("GET", f"/console/negotiations/{pid}", f"/contracts/negotiations/{pid}"),
                 ("GET", f"/console/agreements/{agreement_id}", f"/contracts/agreements/{agreement_id}"),
                 ("GET", f"/console/agreements/{agreement_id}/export", f"/contracts/agreements/{agreement_id}/export")]
        for method, url, api_url in pages:
            r = _call(c, method, url)
            api = client.get(api_url, headers=api_headers)
            assert r.status_code == 404 and api.status_code == 404, (stranger, url, r.status_code, api.status_code)
            assert _code(r) == api.json()["code"]
            for secret in (demo.state["agreement"]["document_sha256"], demo.participants["consumer"].org.org_id):
                assert secret not in r.text, (stranger, url)  # nothing about the agreement leaks
        listing = _call(c, "GET", "/console/negotiations", json_accept=False)
        assert listing.status_code == 200 and pid not in listing.text
        listing = _call(c, "GET", "/console/agreements", json_accept=False)
        assert listing.status_code == 200 and agreement_id not in listing.text
        # state-changing requests on the other tenant's objects are refused too (not just hidden)
        role = demo.participants[stranger].org.role
        posts = {"provider": [f"/console/negotiations/{pid}/offer", f"/console/negotiations/{pid}/finalize",
                              f"/console/agreements/{agreement_id}/revoke"],
                 "consumer": [f"/console/negotiations/{pid}/accept", f"/console/agreements/{agreement_id}/transfer",
                              f"/console/negotiations/{pid}/terminate"]}[role]
        for url in posts:
            r = _call(c, "POST", url, headers={"X-CSRF-Token": csrf})
            assert r.status_code in (403, 404) and _code(r) not in GUARD_CODES, (stranger, url, r.status_code, r.text)
    # the agreement is still intact for its parties
    r = _call(sessions["consumer"][0], "GET", f"/console/agreements/{agreement_id}", json_accept=False)
    assert 'id="agreement-status">FINALIZED</span>' in r.text


def test_provider_cannot_withdraw_another_providers_asset(sessions, ids, demo, client):
    c, csrf = sessions["provider"]  # the buildings asset belongs to provider2
    r = _call(c, "POST", f"/console/assets/{ids['asset_id']}/withdraw", headers={"X-CSRF-Token": csrf})
    api = client.post(f"/catalog/assets/{ids['asset_id']}/withdraw", headers=demo.participants["provider"].client.headers())
    assert r.status_code == api.status_code == 403 and _code(r) == api.json()["code"] == "not_asset_owner"


def test_receipts_follow_the_api_rule(sessions, demo, client):
    from sqlmodel import Session, select

    from broker.audit.models import AuditEntry

    consumer_id = demo.participants["consumer"].org.org_id
    with Session(demo.runtime.engine) as s:
        own = s.exec(select(AuditEntry.seq).where(AuditEntry.actor == consumer_id)).first()
        other = s.exec(select(AuditEntry.seq).where(AuditEntry.actor != consumer_id)).first()
    c, _ = sessions["consumer"]
    headers = demo.participants["consumer"].client.headers()
    for seq, status in ((own, 200), (other, 403)):
        r = _call(c, "GET", f"/console/audit/entries/{seq}/receipt")
        api = client.get(f"/audit/entries/{seq}/receipt", headers=headers)
        assert r.status_code == api.status_code == status, (seq, r.text, api.text)
        if status == 403:
            assert _code(r) == api.json()["code"] == "not_your_entry"
        else:
            assert r.json()["seq"] == api.json()["seq"] == seq and r.json()["body"] == api.json()["body"]


# --------------------------------------------------------------------------- security headers
def _csp(r) -> dict[str, list[str]]:
    header = r.headers.get("content-security-policy")
    assert header, f"no CSP on {r.url}"
    out = {}
    for directive in header.split(";"):
        parts = directive.split()
        if parts:
            out[parts[0]] = parts[1:]
    return out


def _connector_origins(demo) -> list[str]:
    """The origins of the verified connectors the broker knows: the only other origins the console may fetch."""
    from sqlmodel import Session, select

    from broker.catalog.models import ConnectorEndpoint

    with Session(demo.runtime.engine) as s:
        endpoints = s.exec(select(ConnectorEndpoint.endpoint).where(ConnectorEndpoint.status == "verified")).all()
    return sorted({"{0.scheme}://{0.netloc}".format(urlsplit(e)) for e in endpoints})


def test_every_response_carries_strict_security_headers(app, demo, sessions, console_routes, ids):
    connectors = _connector_origins(demo)
    assert connectors, "the demo's providers have registered connectors"
    anonymous = _client(app)
    responses = [anonymous.get("/console/login"), anonymous.get("/console/catalog"),
                 anonymous.get("/console/catalog", headers={"Accept": "text/html"}),
                 anonymous.get("/console/no-such-page"), anonymous.get("/console/static/console.js"),
                 anonymous.get("/console/static/console.css")]
    for label, (c, _) in _by_role(sessions).items():
        for method, path, roles in _guarded(console_routes):
            if method == "GET" and "{" not in path:
                responses.append(c.get("/console" + path, headers={"Accept": "text/html"}))
    responses.append(sessions["consumer"][0].get(f"/console/agreements/{ids['agreement_id']}/export"))
    assert any(r.status_code == 200 for r in responses) and any(r.status_code == 403 for r in responses)
    for r in responses:
        csp = _csp(r)
        flat = " ".join(" ".join(v) for k, v in csp.items())
        assert "'unsafe-inline'" not in flat and "'unsafe-eval'" not in flat and "*" not in flat, r.url
        # connect-src: this origin and, where the browser pulls data, exactly the registered connectors' origins
        if "/static/" not in str(r.url):
            assert csp["connect-src"] == ["'self'", *connectors], (r.url, csp["connect-src"])
        else:
            assert csp["connect-src"] == ["'self'"], r.url
        others = " ".join(" ".join(v) for k, v in csp.items() if k != "connect-src")
        assert "http:" not in others and "https:" not in others and "data:" not in " ".join(csp.get("script-src", []))
        assert all(o in ("'self'", *connectors) for o in csp["connect-src"])
        assert csp["default-src"] == ["'self'"] and csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
        assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
        assert csp["base-uri"] == ["'none'"] and csp["form-action"] == ["'self'"]
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
        if "/static/" not in str(r.url):
            assert r.headers.get("cache-control") == "no-store", (r.url, r.headers.get("cache-control"))


# --------------------------------------------------------------------------- nothing from a CDN
class _Refs(HTMLParser):
    ATTRS = {"src", "href", "action", "srcset", "poster", "data", "formaction", "xlink:href", "background"}

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.inline: list[str] = []
        self._script: dict[str, str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name, value in attrs:
            if name in self.ATTRS and value is not None:
                self.refs.append((f"{tag}[{name}]", value))
            if name.startswith("on"):
                self.inline.append(f"<{tag} {name}=...> inline handler")
            if name == "style":
                self.inline.append(f"<{tag} style=...> inline style")
        if tag == "script":
            self._script = a
            if "src" not in a and a.get("type") != "application/json":
                self.inline.append("<script> without src (inline code)")
        if tag == "style":
            self.inline.append("<style> element")
        if tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            self.inline.append("meta refresh")


def _local(url: str) -> bool:
    if url.startswith("#") or url == "":
        return True
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and not url.startswith("//") and url.startswith(("/console", "?"))


def test_rendered_pages_reference_only_this_origin(app, demo, sessions, console_routes, ids):
    pages = [_client(app).get("/console/login")]
    for label, (c, _) in sessions.items():
        role = demo.participants[label].org.role
        for method, path, roles, route in console_routes:
            if method == "GET" and not _is_public(route) and role in (roles or ()):
                url = "/console" + path.format(**ids)
                r = c.get(url, headers={"Accept": "text/html"})
                if "text/html" in r.headers.get("content-type", ""):
                    pages.append(r)
    assert len(pages) > 15
    bad = []
    for r in pages:
        parser = _Refs()
        parser.feed(r.text)
        assert parser.refs, r.url
        bad += [f"{r.url}: {where}={url}" for where, url in parser.refs if not _local(url)]
        bad += [f"{r.url}: {what}" for what in parser.inline]
        bad += [f"{r.url}: CSS url() {u}" for u in re.findall(r"url\(([^)]*)\)", r.text)]
    assert not bad, "\n".join(bad)


def test_templates_and_static_files_fetch_nothing_from_elsewhere():
    """Source check beside the rendered one: no absolute URLs a browser would fetch (the only http(s) strings
    allowed are the SVG namespace, which is an identifier, not a fetch)."""
    allowed = {"http://www.w3.org/2000/svg"}
    files = [*sorted((CONSOLE_DIR / "templates").glob("*.html")), *sorted((CONSOLE_DIR / "static").iterdir()),
             CONSOLE_DIR / "charts.py"]
    assert any(f.suffix == ".js" for f in files) and any(f.suffix == ".css" for f in files)
    bad = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        for m in re.finditer(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'<>)]*", text):
            if m.group(0) not in allowed:
                bad.append(f"{f.name}: {m.group(0)}")
        if f.suffix == ".css":
            bad += [f"{f.name}: @import" for _ in re.findall(r"@import", text)]
            bad += [f"{f.name}: url({u})" for u in re.findall(r"url\(([^)]*)\)", text) if not u.strip("'\"").startswith("data:")]
        if f.suffix == ".js":
            bad += [f"{f.name}: eval-like {m}" for m in re.findall(r"\b(eval|new Function|importScripts)\s*\(", text)]
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------- provider: offers and withdrawal
def test_provider_edits_offers_by_publishing_a_new_version(sessions, demo, client):
    import json

    from sqlmodel import Session

    from broker.catalog import service

    asset_id = demo.state["catalog_assets"]["parking"]  # the provider's open-data asset
    c, csrf = sessions["provider"]
    page = _call(c, "GET", "/console/assets", json_accept=False)
    assert page.status_code == 200 and f'action="/console/assets/{asset_id}/offers"' in page.text
    new_offers = [{"id": "open", "policy_id": "open-data", "params": {}},
                  {"id": "research", "policy_id": "purpose-restricted",
                   "params": {"purposes": ["research"], "audience": {"org_types": ["enterprise"]}}}]

    def post(offers, who=sessions["provider"]):
        client_, token = who
        return _call(client_, "POST", f"/console/assets/{asset_id}/offers", headers={"X-CSRF-Token": token},
                     data={"offers": offers if isinstance(offers, str) else json.dumps(offers)})

    for bad, status, code in (("not json", 400, "bad_offers"), ('{"id": "x"}', 400, "bad_offers"),
                              ([], 400, "bad_offers"), ([{"id": "a b", "policy_id": "open-data"}], 400, "bad_offers"),
                              ([{"id": "a", "policy_id": "open-data"}, {"id": "a", "policy_id": "open-data"}], 400,
                               "bad_offers"),
                              ([{"id": "x", "policy_id": "no-such-policy"}], 422, "unknown_policy")):
        r = post(bad)
        assert (r.status_code, _code(r)) == (status, code), (bad, r.text)
    r = post(new_offers, who=sessions["provider2"])
    assert r.status_code == 403 and _code(r) == "not_asset_owner"
    r = post([{"id": "open", "policy_id": "open-data"}])  # unchanged (params default to {})
    assert r.status_code == 303 and "unchanged" in r.headers["location"]
    r = post(new_offers)
    assert r.status_code == 303 and "version%202" in r.headers["location"], r.text
    api = client.get(f"/catalog/assets/{asset_id}", headers=demo.participants["consumer"].client.headers()).json()
    assert api["version"] == 2 and [o["id"] for o in api["offers"]] == ["open", "research"]
    with Session(demo.runtime.engine) as s:
        v1, v2 = service.versions(s, asset_id)
        assert (v1.status, v2.status) == ("superseded", "active")
        assert v1.content_hash == v2.content_hash  # the same rows, still at the same connector
        assert v1.data_endpoint == v2.data_endpoint == demo.connector("provider").endpoint
    audit = _call(sessions["auditor"][0], "GET", "/console/audit?kind=catalog.new_version", json_accept=False)
    assert asset_id in audit.text
    # withdrawal: the asset disappears from the consumer's catalog, further offer edits are refused
    r = _call(c, "POST", f"/console/assets/{asset_id}/withdraw", headers={"X-CSRF-Token": csrf},
              data={"reason": "replaced"})
    assert r.status_code == 303
    catalog = _call(sessions["consumer"][0], "GET", "/console/catalog", json_accept=False)
    assert asset_id not in catalog.text
    r = post(new_offers)
    assert r.status_code == 410 and _code(r) == "asset_withdrawn"


def test_offers_of_a_connector_hosted_asset_are_changed_without_copying_its_data(sessions, demo):
    """The table stays in the provider's connector: a new version (new offers) is checked against a fresh
    signed manifest from that connector, and is refused once the connector no longer serves those bytes."""
    import json

    from sqlmodel import Session

    from broker.catalog.models import Asset
    from connectors.publish import prepare
    from tests.contracts.helpers import OFFERS, table_bytes

    data = table_bytes()
    meta = prepare(data, title="Buildings (connector-hosted)", classification="public", domain="planning",
                   offers=OFFERS, twin_category="building_structure", entity_type="Building")
    asset = demo.publish("provider", meta, data)
    connector = demo.connector("provider")
    c, csrf = sessions["provider"]
    offers = [{"id": "open", "policy_id": "open-data", "params": {}}]
    r = _call(c, "POST", f"/console/assets/{asset['id']}/offers", headers={"X-CSRF-Token": csrf},
              data={"offers": json.dumps(offers)})
    assert r.status_code == 303 and "version%202" in r.headers["location"], r.text
    path = connector.config.store.path_for(asset["content_hash"])
    assert path is not None and path.exists()
    path.unlink()  # the connector no longer serves the published bytes
    r = _call(c, "POST", f"/console/assets/{asset['id']}/offers", headers={"X-CSRF-Token": csrf},
              data={"offers": json.dumps(OFFERS)})
    assert r.status_code >= 400 and _code(r) not in GUARD_CODES, r.text  # refused: not the published table
    with Session(demo.runtime.engine) as s:
        v2 = s.get(Asset, (asset["id"], 2))
        assert v2 is not None and v2.data_endpoint == connector.endpoint and v2.offers == offers and v2.is_latest
        assert v2.content_hash == asset["content_hash"]
        assert s.get(Asset, (asset["id"], 3)) is None


def test_provider_offer_form_publishes_the_offer_and_catalog_facets_count(sessions, demo, client):
    asset_id = demo.state["catalog_assets"]["parking"]
    c, csrf = sessions["provider"]
    page = _call(c, "GET", "/console/assets", json_accept=False)
    assert f'action="/console/assets/{asset_id}/offers/form"' in page.text
    form = {"offer_id": "planning", "purposes": "traffic_planning, research", "not_after": "2030-12-31",
            "max_accesses": "5", "classification": "public"}
    bad = _call(c, "POST", f"/console/assets/{asset_id}/offers/form", headers={"X-CSRF-Token": csrf},
                data={**form, "max_accesses": "lots"})
    assert bad.status_code == 400 and _code(bad) == "bad_offers"
    r = _call(c, "POST", f"/console/assets/{asset_id}/offers/form", headers={"X-CSRF-Token": csrf}, data=form)
    assert r.status_code == 303 and "version%202" in r.headers["location"], r.text
    api = client.get(f"/catalog/assets/{asset_id}", headers=demo.participants["consumer"].client.headers()).json()
    offer = next(o for o in api["offers"] if o["id"] == "planning")
    assert offer["policy_id"] == "purpose-restricted"
    assert offer["params"]["purposes"] == ["traffic_planning", "research"] and offer["params"]["max_accesses"] == 5
    cc, _ = sessions["consumer"]
    cat = _call(cc, "GET", "/console/catalog", json_accept=False).text
    assert 'id="facets"' in cat and 'data-facet="classification"' in cat and "{'" not in cat
    narrowed = _call(cc, "GET", "/console/catalog?classification=public", json_accept=False).text
    assert "facet-value selected" in narrowed
