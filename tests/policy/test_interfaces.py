"""The interfaces other features call: build_policy_input, get_pdp, startup loading, pinned versions."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import pytest

from broker.api.deps import Principal
from twinspace.canonical import canonical_sha256
from broker.policy import service
from broker.policy.engine import PolicyDecisionPoint, engine_for, get_pdp
from broker.policy.input import build_policy_input
from broker.policy.library import DEFAULT_DIR
from broker.settings import Settings
from broker.storage.db import session_scope
from tests.policy.test_service import GOOD

PRINCIPAL = Principal(org_id="c1", role="consumer", org_name="C", token_id="t", cnf_kid="k",
                      attributes={"clearance": "public"}, org_type="research_institute")
ASSET = {"id": "a1", "provider_id": "p1", "classification": "internal", "domain": "transport",
         "twin_category": "traffic", "entity_type": "ParkingSpot", "bbox": [121.4, 24.9, 121.7, 25.2],
         "offers": [{"id": "o1", "policy_id": "purpose-restricted", "params": {"purposes": ["research"]}}],
         "status": "active"}
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
AGREEMENT = {"id": "ag1", "consumer_id": "c1", "provider_id": "p1", "purpose": "research", "scenario": None,
             "policy_id": "purpose-restricted", "policy_params": {"purposes": ["research"]},
             "not_before": NOW - timedelta(days=1), "not_after": (NOW + timedelta(days=1)).isoformat(),
             "status": "FINALIZED"}


def test_build_policy_input_shape_and_org_attributes():
    doc = build_policy_input(principal=PRINCIPAL, org_attributes={"clearance": "internal"}, action="read",
                             asset=ASSET, agreement=AGREEMENT, usage={"accesses": 2, "rows": 40},
                             request={"purpose": "research"}, now=NOW.timestamp())
    assert doc["consumer"] == {"org_id": "c1", "role": "consumer", "org_type": "research_institute",
                               "attributes": {"clearance": "internal"}}
    assert doc["params"] == {"purposes": ["research"]}  # from the agreement
    assert doc["agreement"]["not_before"] == (NOW - timedelta(days=1)).timestamp()
    assert doc["agreement"]["not_after"] == (NOW + timedelta(days=1)).timestamp()
    assert doc["usage"] == {"accesses": 2, "rows": 40} and doc["approvals"] == []
    canonical_sha256(doc)  # plain JSON throughout
    decision = get_pdp(Settings()).decide("purpose-restricted", doc)
    assert decision.allow, decision.reasons
    # Without the org attribute override the principal's own clearance (public) is below `internal`.
    lower = build_policy_input(principal=PRINCIPAL, action="read", asset=ASSET, agreement=AGREEMENT,
                               now=NOW.timestamp())
    denied = get_pdp(Settings()).decide("purpose-restricted", lower)
    assert not denied.allow and any("classification internal" in r for r in denied.reasons)


def test_build_policy_input_refuses_unknown_actions_and_makes_values_json():
    with pytest.raises(ValueError):
        build_policy_input(principal=PRINCIPAL, action="delete", asset=ASSET)
    doc = build_policy_input(principal=PRINCIPAL, action="negotiate", asset=dict(ASSET, created_at=NOW),
                             request={"bbox": (1, 2, 3, 4)})
    assert doc["asset"]["created_at"] == NOW.isoformat() and doc["request"]["bbox"] == [1, 2, 3, 4]
    assert doc["agreement"] is None


def test_get_pdp_resolves_uploads_without_a_session(tmp_path, client, make_org, settings):
    operator = make_org("operator")
    assert client.put("/policies/night-only", json={"rego": GOOD}, headers=operator.headers()).status_code == 201
    pdp = get_pdp(settings)
    assert isinstance(pdp, PolicyDecisionPoint)
    doc = build_policy_input(principal=PRINCIPAL, action="read", asset=ASSET, agreement=AGREEMENT,
                             request={"hour": 22}, now=NOW.timestamp())
    assert pdp.decide("night-only", doc).allow
    noon = pdp.decide("night-only", dict(doc, request={"hour": 12}))
    assert not noon.allow and noon.reasons == ["only at night"] and noon.policy_version == "v1"


def test_an_agreement_pinned_to_a_replaced_builtin_version_is_denied_with_the_reason(settings, engine):
    with session_scope(engine) as session:
        decision = service.decide(session, settings, "open-data", {"action": "read"}, version="builtin-000000000000",
                                  actor="c1")
    assert not decision.allow and "no longer installed" in decision.reasons[0]


def test_upload_that_fails_at_evaluation_is_refused(client, make_org):
    operator = make_org("operator")
    rego = ("package twinspace.policies.conflicting\nimport rego.v1\n"
            "decision := {\"allow\": true, \"deny\": [], \"obligations\": {}} if input.now == 0\n"
            "decision := {\"allow\": false, \"deny\": [\"x\"], \"obligations\": {}} if input.action == \"read\"\n")
    r = client.put("/policies/conflicting", json={"rego": rego}, headers=operator.headers())
    assert r.status_code == 400 and r.json()["code"] == "policy_evaluation_error", r.text


def test_library_is_compiled_at_startup(tmp_path):
    """Starting the app compiles every built-in policy (a fresh library directory: nothing cached)."""
    from fastapi.testclient import TestClient

    from broker.app import create_app

    library_dir = tmp_path / "policies"
    shutil.copytree(DEFAULT_DIR, library_dir)
    settings = Settings(data_dir=tmp_path / "d", policies_dir=library_dir)
    assert not engine_for(settings)._cache
    app = create_app(settings)
    assert not engine_for(settings)._cache  # creating the app does not compile; starting it does
    with TestClient(app):
        compiled = {key[0] for key in engine_for(settings)._cache}
    assert compiled == set(service.builtin_policies(settings))


def test_a_broken_library_is_reported_at_startup_and_denies(tmp_path):
    broken_dir = tmp_path / "policies"
    shutil.copytree(DEFAULT_DIR, broken_dir)
    target = broken_dir / "twinspace" / "policies" / "open_data.rego"
    target.write_text(target.read_text() + "\nbroken if {\n")
    settings = Settings(data_dir=tmp_path / "d", policies_dir=broken_dir)
    problems = service.warm(settings)
    assert problems and all("open-data" in p for p in problems)
    decision = get_pdp(settings).decide("open-data", {"action": "read"})
    assert not decision.allow and "does not compile" in decision.reasons[0]
