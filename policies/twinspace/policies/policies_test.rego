# Rego unit tests, run by tests/policy/test_rego_unit.py through the embedded engine
# (each rule named test_* must be true).
package twinspace.policies_test

import data.twinspace.policies
import rego.v1

base := {
	"action": "read", "now": 1000,
	"consumer": {"org_id": "c1", "role": "consumer", "org_type": "enterprise", "attributes": {"clearance": "internal"}},
	"asset": {"id": "a1", "provider_id": "p1", "classification": "internal", "domain": "transport", "status": "active"},
	"agreement": {"consumer_id": "c1", "status": "FINALIZED", "not_before": 0, "not_after": 2000, "purpose": "research", "scenario": "parking_guidance"},
	"params": {"purposes": ["research"]},
	"usage": {"accesses": 0, "rows": 0},
	"request": {},
	"approvals": [],
}

test_open_data_allows_a_bound_consumer if {
	d := policies.open_data.decision with input as base
	d.allow
}

test_open_data_denies_an_expired_agreement if {
	inp := object.union(base, {"now": 3000})
	d := policies.open_data.decision with input as inp
	not d.allow
}

test_purpose_restricted_allows_declared_purpose if {
	d := policies.purpose_restricted.decision with input as base
	d.allow
}

test_purpose_restricted_denies_other_purpose if {
	inp := object.union(base, {"request": {"purpose": "marketing"}})
	d := policies.purpose_restricted.decision with input as inp
	not d.allow
	some reason in d.deny
	contains(reason, "purpose")
}

test_clearance_below_classification_is_denied if {
	inp := object.union(base, {"asset": object.union(base.asset, {"classification": "core"})})
	d := policies.purpose_restricted.decision with input as inp
	not d.allow
}

test_max_accesses_is_enforced if {
	inp := object.union(base, {"params": {"purposes": ["research"], "max_accesses": 3}, "usage": {"accesses": 3, "rows": 0}})
	d := policies.purpose_restricted.decision with input as inp
	not d.allow
}

test_aggregation_only_refuses_reads if {
	d := policies.aggregation_only.decision with input as base
	not d.allow
}

test_aggregation_only_allows_queries_with_noise if {
	inp := object.union(base, {"action": "query"})
	d := policies.aggregation_only.decision with input as inp
	d.allow
	d.obligations.add_dp_noise.epsilon == 0.5
}

test_geo_restriction if {
	inside := object.union(base, {"params": {"bbox": [121.4, 24.9, 121.7, 25.2]}, "request": {"bbox": [121.5, 25.0, 121.6, 25.1]}})
	outside := object.union(inside, {"request": {"bbox": [120.0, 25.0, 121.6, 25.1]}})
	d1 := policies.geo_restricted.decision with input as inside
	d2 := policies.geo_restricted.decision with input as outside
	d1.allow
	not d2.allow
}

test_unified_authorisation if {
	yes := object.union(base, {"params": {"operator_org_id": "c1"}})
	other := object.union(base, {"params": {"operator_org_id": "c9"}})
	unnamed := object.union(base, {"params": {}})
	d1 := policies.unified_authorisation.decision with input as yes
	d2 := policies.unified_authorisation.decision with input as other
	d3 := policies.unified_authorisation.decision with input as unnamed
	d1.allow
	not d2.allow
	not d3.allow
}

test_domain_authorisation if {
	granted := object.union(base, {"params": {"domain_grants": {"c1": ["transport"]}}})
	other := object.union(base, {"params": {"domain_grants": {"c1": ["water"]}}})
	d1 := policies.domain_authorisation.decision with input as granted
	d2 := policies.domain_authorisation.decision with input as other
	d1.allow
	not d2.allow
}

test_scenario_authorisation_needs_approval if {
	pending := object.union(base, {"params": {"scenarios": ["parking_guidance"]}})
	approved := object.union(pending, {"approvals": ["parking_guidance"]})
	d1 := policies.scenario_authorisation.decision with input as pending
	d2 := policies.scenario_authorisation.decision with input as approved
	not d1.allow
	d2.allow
}

test_hierarchical_authorisation if {
	params := {"first_tier": ["op1"], "second_tier": ["c1"]}
	raw := object.union(base, {"params": params})
	derived := object.union(raw, {"asset": object.union(base.asset, {"provider_id": "op1", "derived_from": "a0"})})
	d1 := policies.hierarchical_authorisation.decision with input as raw
	d2 := policies.hierarchical_authorisation.decision with input as derived
	not d1.allow
	d2.allow
}
