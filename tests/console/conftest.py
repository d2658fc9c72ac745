"""Console fixtures: an HTTPS TestClient (the session cookie is Secure), a console login through the real
client-assertion flow, and the demo's cast and data (participants, published assets, one agreement)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from twinspace.tokens import make_assertion


@pytest.fixture
def https_client(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver") as c:
        yield c


def login_nonce(client: TestClient) -> str:
    page = client.get("/console/login")
    assert page.status_code == 200
    return re.search(r'name="nonce" id="nonce" value="([^"]+)"', page.text).group(1)


def console_login(client: TestClient, org_id: str, private_key, audience: str = "twinspace-broker") -> str:
    """Log ``client`` in as the org (what console.js does in the browser); returns the page's CSRF token."""
    nonce = login_nonce(client)
    from twinspace.crypto import key_id

    found = client.post("/console/login/lookup", json={"kid": key_id(private_key.public_key()), "nonce": nonce})
    assert found.status_code == 200, found.text
    assert found.json()["org_id"] == org_id
    assertion = make_assertion(private_key, org_id=org_id, audience=audience)
    r = client.post("/console/login", data={"client_assertion": assertion, "nonce": nonce, "next": "/"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return csrf_of(client)


def csrf_of(client: TestClient) -> str:
    home = client.get("/console/")
    assert home.status_code == 200, home.text
    return re.search(r'data-csrf="([^"]+)"', home.text).group(1)


@pytest.fixture
def demo(settings, runtime, app, client):
    """The demo's participants, the two published assets and the negotiated building-stock agreement."""
    from twinspace.demo.catalog import step_catalog_publish
    from twinspace.demo.run import DemoContext, step_participants
    from twinspace.demo.contracts import step_contract_negotiate

    ctx = DemoContext(Console(file=io.StringIO(), width=200), settings, runtime, app, client)
    for step in (step_participants, step_catalog_publish, step_contract_negotiate):
        step(ctx)
    return ctx
