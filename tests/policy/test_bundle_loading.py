"""The broker decides with a signed policy bundle when one is configured: verified before the first
request (a tampered bundle or the wrong key stops the start-up), its revision shown and logged."""

from __future__ import annotations

import io
import shutil
import tarfile

import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.identity.onboarding import create_org_with_key
from broker.policy.bundle import build_bundle
from broker.policy.engine import PolicyError
from broker.policy.library import DEFAULT_DIR
from broker.runtime import Runtime
from broker.settings import Settings
from tests.policy.cases import BASE
from twinspace.client.broker import BrokerClient
from twinspace.crypto import generate_key, key_id, public_key_b64


def _bundle(tmp_path, *, deny_open_data: bool, revision: str = "2026-12-06.1"):
    """A bundle of the library; optionally with open-data rewritten to deny everyone (so the decisions
    show which rules were loaded)."""
    source = tmp_path / "src"
    shutil.copytree(DEFAULT_DIR, source)
    if deny_open_data:
        rego = source / "twinspace" / "policies" / "open_data.rego"
        rego.write_text(rego.read_text().replace(
            "deny_for(inp) := ", 'deny_for(inp) := {"closed by the signed bundle"} | '))
    key = generate_key()
    data = build_bundle(source, key, revision=revision, kid=key_id(key.public_key()))
    path = tmp_path / "bundle.tar.gz"
    path.write_bytes(data)
    return path, public_key_b64(key.public_key())


def _broker(tmp_path, bundle, key):
    settings = Settings(data_dir=tmp_path / "broker", database_url=None, redis_url=None, policy_bundle=bundle,
                        policy_bundle_key=key)
    return settings, Runtime.start(settings)


def test_the_signed_bundle_decides_and_its_revision_is_shown(tmp_path):
    bundle, key = _bundle(tmp_path, deny_open_data=True)
    settings, runtime = _broker(tmp_path, bundle, key)
    with TestClient(create_app(settings, runtime=runtime)) as client:
        auditor = create_org_with_key(runtime.engine, name="Auditor", role="auditor", key_dir=tmp_path / "keys")
        sdk = BrokerClient(client, auditor.org_id, auditor.private_key, audience=settings.issuer)
        decision = sdk.post("/policies/open-data/evaluate", json={"input": BASE})
        assert decision["allow"] is False and "closed by the signed bundle" in str(decision["reasons"])
        listed = {p["policy_id"]: p for p in sdk.get("/policies")}
        assert listed["open-data"]["bundle_revision"] == "2026-12-06.1"
        loaded = sdk.get("/audit/entries", params={"kind": "policy.bundle_loaded"})["entries"]
        assert loaded[0]["entry"]["details"]["revision"] == "2026-12-06.1"
    runtime.engine.dispose()


def _tampered(path):
    """The same bundle with one Rego file changed after signing."""
    out = io.BytesIO()
    with tarfile.open(path, "r:gz") as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        for member in src.getmembers():
            body = src.extractfile(member).read() if member.isfile() else b""
            if member.name.endswith("open_data.rego"):
                body += b"\n# changed after signing\n"
                member.size = len(body)
            dst.addfile(member, io.BytesIO(body))
    path.write_bytes(out.getvalue())


@pytest.mark.parametrize("attack", ["tampered", "wrong_key", "no_key"])
def test_a_bundle_that_does_not_verify_stops_the_start_up(tmp_path, attack):
    bundle, key = _bundle(tmp_path, deny_open_data=False)
    if attack == "tampered":
        _tampered(bundle)
    elif attack == "wrong_key":
        key = public_key_b64(generate_key().public_key())
    else:
        key = None
    settings, runtime = _broker(tmp_path, bundle, key)
    with pytest.raises(PolicyError):
        create_app(settings, runtime=runtime)
    runtime.engine.dispose()
