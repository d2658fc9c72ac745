"""Security-relevant events reach the audit log: authentication (granted and denied), key changes,
organisation changes, policy uploads and approvals — each with the actor and without secrets."""

from __future__ import annotations

import json

from sqlmodel import Session, select

from broker.audit.models import AuditEntry
from twinspace.crypto import generate_key, public_key_b64
from twinspace.tokens import ASSERTION_TYPE, make_assertion

NIGHT = """package twinspace.policies.night_only
import rego.v1
import data.twinspace.lib
deny_for(inp) := {"only at night" | inp.request.hour < 20} | lib.binding_denied(inp)
decide(inp) := lib.decide(inp, deny_for(inp), {"log_level": "full"})
decision := decide(input)
"""


def _entries(engine, kind: str) -> list[dict]:
    with Session(engine) as s:
        return [json.loads(e.body) for e in s.exec(select(AuditEntry).where(AuditEntry.kind == kind))]


def test_auth_key_org_and_policy_changes_are_audited(client, make_org, engine, settings):
    operator, provider = make_org("operator"), make_org("provider")
    assert client.get("/orgs/me", headers=provider.headers()).status_code == 200  # authenticates
    granted = [e for e in _entries(engine, "auth.token_issued") if e["actor"] == provider.org_id]
    assert granted and granted[-1]["details"]["kid"] == provider.kid

    # a refused assertion: auth.denied with the code, and nothing of the assertion itself
    stranger = generate_key()
    bad = make_assertion(stranger, org_id=provider.org_id, audience=settings.issuer)
    r = client.post("/auth/token", data={"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                                         "client_assertion": bad})
    assert r.status_code == 401
    denied = _entries(engine, "auth.denied")
    assert denied and denied[-1]["outcome"] == "deny" and denied[-1]["details"]["code"] == "unknown_key"
    assert bad not in json.dumps(denied) and bad.split(".")[2] not in json.dumps(denied)

    # key rotation: the new key is added, the old one revoked — both by the org itself
    new_key = generate_key()
    r = client.post("/orgs/me/keys", json={"public_key": public_key_b64(new_key.public_key())},
                    headers=provider.headers())
    assert r.status_code == 201
    new_kid = r.json()["kid"]
    added = [e for e in _entries(engine, "org.key_added") if e["details"].get("kid") == new_kid]
    assert len(added) == 1 and added[0]["actor"] == provider.org_id
    assert client.post(f"/orgs/{provider.org_id}/keys/{provider.kid}/revoke",
                       headers=operator.headers()).status_code == 200
    revoked = [e for e in _entries(engine, "org.key_revoked") if e["details"].get("kid") == provider.kid]
    assert len(revoked) == 1 and revoked[0]["actor"] == operator.org_id

    # suspension by the operator
    assert client.patch(f"/orgs/{provider.org_id}", json={"status": "suspended"},
                        headers=operator.headers()).status_code == 200
    changed = _entries(engine, "org.status_changed")
    assert changed[-1]["details"] == {"org_id": provider.org_id, "status": "suspended"}

    # a policy upload, with its version, and the Rego not copied into the log
    r = client.put("/policies/night-only", json={"rego": NIGHT}, headers=operator.headers())
    assert r.status_code == 201
    uploads = _entries(engine, "policy.uploaded")
    assert uploads and uploads[-1]["actor"] == operator.org_id
    assert uploads[-1]["details"]["policy_id"] == "night-only" and uploads[-1]["details"]["version"] == "v1"
    assert "only at night" not in json.dumps(uploads)
