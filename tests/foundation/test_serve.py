"""The broker over a real TCP socket, driven by the participant SDK from a key file."""

from __future__ import annotations

import pytest

from broker.identity.onboarding import create_org_with_key
from connectors.sdk import BrokerClient, BrokerError
from tests.serving import serve_app


def test_sdk_authenticates_over_http_with_a_key_file(app, runtime, settings):
    org = create_org_with_key(runtime.engine, name="Grid Operator", role="provider", key_dir=settings.data_dir / "keys")
    with serve_app(app) as base_url:
        sdk = BrokerClient.connect(base_url, org.org_id, org.key_file, audience=settings.issuer)
        assert sdk.whoami()["name"] == "Grid Operator"
        with pytest.raises(BrokerError) as err:
            sdk.post("/orgs", json={"name": "X", "role": "provider", "public_key": "A" * 43})
        assert err.value.status == 403 and err.value.code == "wrong_role"
