"""The console's download, as console.js runs it, without a browser: the console hands out a fresh
DataAddress (the provider connector's URL and a single-use token), the browser signs a proof of possession
and pulls from the connector itself across origins (CORS allow-list, no credentials), then countersigns the
receipt through the console. The broker relays no row; its CSP admits the connector's origin."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from connectors.node.app import cors_allow_list, create_node_app
from tests.console.conftest import console_login
from twinspace.dataplane import ACK, sign_message
from twinspace.transfer_tokens import make_pop

CONSOLE = "https://testserver"


def _connector_client(demo, label: str, origins) -> TestClient:
    """The provider's connector app (its own stores and key) answering CORS for ``origins``."""
    config = demo.connector(label).config
    return TestClient(create_node_app(config, cors_origins=origins), base_url=config.endpoint)


def test_cors_allow_list_names_exact_origins():
    assert cors_allow_list("https://Console.Example:443, http://127.0.0.1:8000 ") == \
        ["https://console.example", "http://127.0.0.1:8000"]
    assert cors_allow_list(["http://[::1]:8000", "http://[::1]:8000"]) == ["http://[::1]:8000"]
    assert cors_allow_list(None) == [] and cors_allow_list("") == []
    for bad in ("*", "https://*.example", "console.example", "https://console.example/console",
                "https://user@console.example", "ftp://console.example", "https://console.example?x=1"):
        with pytest.raises(ValueError):
            cors_allow_list([bad])


def test_the_connector_answers_cors_only_for_allowed_origins(demo, monkeypatch):
    connector = _connector_client(demo, "provider2", [CONSOLE])
    path = "/dataplane/transfers/tp_x"
    pre = {"Access-Control-Request-Method": "GET",
           "Access-Control-Request-Headers": "twinspace-transfer-token,twinspace-pop"}
    ok = connector.options(path, headers={"Origin": CONSOLE, **pre})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == CONSOLE
    allowed = {h.strip().lower() for h in ok.headers["access-control-allow-headers"].split(",")}
    assert {"twinspace-transfer-token", "twinspace-pop"} <= allowed
    assert "GET" in ok.headers["access-control-allow-methods"] and "POST" not in ok.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in ok.headers
    evil = connector.options(path, headers={"Origin": "https://evil.example", **pre})
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
    post = connector.options(path, headers={"Origin": CONSOLE, "Access-Control-Request-Method": "POST"})
    assert post.status_code == 400
    # a refusal (no token) still carries CORS headers, so the browser can read the problem
    r = connector.get(path, headers={"Origin": CONSOLE})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == CONSOLE
    # without an allow-list (and no env) the connector answers no CORS at all; the env names one
    monkeypatch.delenv("TWINSPACE_CONNECTOR_CORS_ORIGINS", raising=False)
    bare = TestClient(create_node_app(demo.connector("provider2").config), base_url=connector.base_url)
    assert "access-control-allow-origin" not in bare.get(path, headers={"Origin": CONSOLE}).headers
    monkeypatch.setenv("TWINSPACE_CONNECTOR_CORS_ORIGINS", CONSOLE)
    env = TestClient(create_node_app(demo.connector("provider2").config), base_url=connector.base_url)
    assert env.get(path, headers={"Origin": CONSOLE}).headers["access-control-allow-origin"] == CONSOLE


def test_console_download_pulls_from_the_connector_and_countersigns(app, demo, settings):
    agreement = demo.state["agreement"]
    consumer = demo.participants["consumer"].org
    browser = TestClient(app, base_url=CONSOLE)
    csrf = console_login(browser, consumer.org_id, consumer.private_key, audience=settings.issuer)
    page = browser.get(f"/console/agreements/{agreement['id']}", headers={"Accept": "text/html"})
    assert 'class="downloader"' in page.text and f'data-audience="{settings.issuer}"' in page.text
    assert f"twinspace download {agreement['id']} -o data.csv" in page.text  # the CLI way, shown beside
    connector = demo.connector("provider2")
    csp = page.headers["content-security-policy"]
    connect = next(d.split()[1:] for d in csp.split(";") if d.split() and d.split()[0] == "connect-src")
    assert connector.endpoint in connect and "'self'" in connect
    headers = {"X-CSRF-Token": csrf, "Accept": "application/json", "X-Requested-With": "fetch"}

    address = browser.post(f"/console/agreements/{agreement['id']}/transfer", headers=headers)
    assert address.status_code == 200, address.text
    address = address.json()
    assert address["endpoint"].startswith(connector.endpoint + "/dataplane/transfers/")
    pid = address["transfer_id"]
    http = _connector_client(demo, "provider2", [CONSOLE])

    def pull(addr, proof=None):  # what console.js does: PoP over the path, token and PoP headers, no cookie
        path = addr["endpoint"][len(connector.endpoint):]
        proof = proof or make_pop(consumer.private_key, method="GET", path=path, token=addr["token"])
        return http.get(path, params={"format": "csv"}, headers={
            "Origin": CONSOLE, "TwinSpace-Transfer-Token": addr["token"], "TwinSpace-PoP": proof})

    first_proof = make_pop(consumer.private_key, method="GET", path=address["endpoint"][len(connector.endpoint):],
                           token=address["token"])
    r = pull(address, first_proof)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == CONSOLE
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"x-twinspace-receipt", "x-twinspace-rows", "x-twinspace-content-hash"} <= exposed
    assert int(r.headers["x-twinspace-rows"]) > 0 and r.content.count(b"\n") >= int(r.headers["x-twinspace-rows"])
    assert pull(address, first_proof).status_code == 401  # a captured request replayed: its proof is single-use
    # the browser countersigns the receipt through the console (the same ack the SDK signs)
    receipt = r.headers["x-twinspace-receipt"]
    for _ in range(50):
        ack = sign_message(consumer.private_key, ACK, issuer=consumer.org_id, audience=settings.issuer, claims={
            "receipt_id": receipt, "tpid": pid, "sha256": hashlib.sha256(r.content).hexdigest(),
            "bytes": len(r.content)})
        answer = browser.post(f"/console/transfers/{pid}/acknowledgements", headers=headers, json={"ack": ack})
        if answer.status_code != 404:
            break
        time.sleep(0.1)  # the connector's receipt is on its way to the broker
    assert answer.status_code == 200 and answer.json()["matches"] is True, answer.text
    # the next click: a fresh token for the same transfer, from the console
    fresh = browser.post(f"/console/transfers/{pid}/token", headers=headers)
    assert fresh.status_code == 200 and fresh.json()["token"] != address["token"]
    assert pull(fresh.json()).status_code == 200
    # no CSRF token, no DataAddress; a stranger's transfer id, none either
    assert browser.post(f"/console/transfers/{pid}/token").status_code == 403
    assert browser.post(f"/console/transfers/tp_{uuid.uuid4().hex[:24]}/token", headers=headers).status_code == 404
