"""ODRL 2.2 offers and agreements: Information Model rules, and the mapping to the Rego parameters in
both directions (the engine's input is read back from the ODRL terms)."""

from __future__ import annotations

import pytest

from twinspace.dsp import jsonld, schemas
from twinspace.dsp.messages import PLAIN_CONTEXT
from twinspace.odrl import mapping, policy

CASES = [
    ("purpose-restricted", {"purposes": ["research", "planning"], "max_accesses": 5, "not_before": 1700000000,
                            "not_after": 1800000000, "max_elapsed_seconds": 86400, "max_total_rows": 1000,
                            "max_rows": 100, "columns": ["a", "b"], "roles": ["consumer"],
                            "org_types": ["government_agency"]}),
    ("aggregation-only", {"epsilon_per_query": 0.5, "min_cohort": 10, "purposes": ["statistics"]}),
    ("geo-restricted", {"bbox": [121.45, 25.0, 121.65, 25.2]}),
    ("hierarchical-authorisation", {"first_tier": ["org_a"], "second_tier": ["org_b"]}),
    ("scenario-authorisation", {"scenarios": ["flood_response"]}),
    ("domain-authorisation", {"domain_grants": {"org_a": ["energy"]}}),
    ("unified-authorisation", {"operator_org_id": "org_op", "provider_id": "org_p"}),
    ("open-data", {}),
]


@pytest.mark.parametrize("policy_id,params", CASES)
def test_offer_round_trips_through_json_ld(policy_id, params):
    offer = policy.offer("urn:twinspace:offer:a:v1:o", policy_id=policy_id, params=params, assigner="org_p",
                         classification="internal", target="urn:twinspace:asset:a:v1")
    assert policy.problems(offer, kind="Offer") == []
    msg = {"@context": list(PLAIN_CONTEXT), "@type": "ContractOfferMessage", "providerPid": "p",
           "consumerPid": "c", "offer": offer}
    assert schemas.errors(msg) == []
    read = jsonld.normalize(msg)["offer"]  # what a receiver gets after JSON-LD processing
    pid, back, facts = policy.terms_of(read)
    assert (pid, back) == (policy_id, params)
    assert facts["aggregation_only"] == (policy_id == "aggregation-only")
    if policy_id in mapping.CLEARANCE_POLICIES:
        assert facts["classification"] == "internal"


def test_standard_left_operands_are_used():
    rules = mapping.to_rules("purpose-restricted", dict(CASES[0][1]), classification="sensitive")
    lefts = {c["leftOperand"] for c in rules["permission"][0]["constraint"]}
    odrl = "http://www.w3.org/ns/odrl/2/"
    assert {odrl + "purpose", odrl + "dateTime", odrl + "count", odrl + "elapsedTime"} <= lefts
    geo = mapping.to_rules("geo-restricted", {"bbox": [1, 2, 3, 4]})
    assert geo["permission"][0]["constraint"][0]["leftOperand"] == odrl + "spatial"
    agg = mapping.to_rules("aggregation-only", {"epsilon_per_query": 1})
    assert agg["permission"][0]["action"] == odrl + "aggregate"
    assert agg["permission"][0]["duty"][0]["action"] == odrl + "anonymize"
    assert {p["action"] for p in agg["prohibition"]} == {odrl + "read", odrl + "derive"}


def test_spec_style_bare_terms_are_read():
    """The DSP examples write ``"leftOperand": "dateTime"`` (no prefix): read as ODRL terms."""
    params, _ = mapping.from_rules({"permission": [{"action": "use", "constraint": [
        {"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2030-01-01T00:00:00Z"},
        {"leftOperand": "purpose", "operator": "eq", "rightOperand": "research"}]}]})
    assert params == {"not_after": 1893456000, "purposes": ["research"]}


@pytest.mark.parametrize("bad", [
    {"permission": [{"action": "use", "constraint": [{"leftOperand": "partner", "operator": "eq",
                                                      "rightOperand": "gold"}]}]},
    {"permission": [{"action": "use", "constraint": [{"leftOperand": "count", "operator": "lteq",
                                                      "rightOperand": "many"}]}]},
    {"permission": [{"action": "use", "constraint": [{"or": []}]}]},
    {"permission": [{"constraint": []}]},
    {"permission": []},
    {"permission": [{"action": "use", "constraint": [{"leftOperand": "spatial", "operator": "isPartOf",
                                                      "rightOperand": "POINT(1 2)"}]}]},
])
def test_terms_outside_the_profile_are_refused(bad):
    with pytest.raises(mapping.OdrlProblem):
        mapping.from_rules(bad)


def test_information_model_rules():
    assert "an Agreement has an assignee (an IRI)" in policy.problems(
        {"@id": "urn:a", "@type": "Agreement", "assigner": "urn:p", "target": "urn:t",
         "permission": [{"action": "use"}]})
    assert "a policy has at least one permission, prohibition or obligation" in policy.problems(
        {"@id": "urn:a", "@type": "Offer", "assigner": "urn:p"})
    assert "a constraint has a leftOperand, an operator and a rightOperand" in policy.problems(
        {"@id": "urn:a", "@type": "Offer", "assigner": "urn:p",
         "permission": [{"action": "use", "constraint": [{"leftOperand": "purpose"}]}]})


def test_agreement_decision_reads_the_signed_odrl_terms(world):
    """The Rego input's parameters come from the agreement's ODRL rules; a stored copy that disagrees
    with them makes the agreement unusable (integrity), never silently used."""
    from sqlmodel import Session

    from broker.contracts import access
    from broker.contracts.models import Agreement
    from twinspace import agreements
    from twinspace.errors import ServiceUnavailable

    agreement = world.agreement(max_rows=3)
    with Session(world.consumer.client.http.app.state.runtime.engine) as s:
        row = s.get(Agreement, agreement["id"])
        view = access.policy_agreement_view(row)
        assert view["policy_params"] == row.document["policy"]["params"] and view["policy_params"]["max_rows"] == 3
        row.policy_params = {**row.policy_params, "max_rows": 30}
        row.document = {**row.document, "policy": {**row.document["policy"], "params": row.policy_params}}
        row.document_sha256 = agreements.document_sha256(row.document)  # every copy agrees but the ODRL terms
        with pytest.raises(ServiceUnavailable):
            access.require_active_agreement(s, row.id, world.consumer.org_id)
