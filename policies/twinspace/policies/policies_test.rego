# Rego unit tests of the built-in policies. Run in CI by tests/policy/test_rego_unit.py through
# the embedded engine (every test_* rule must be true), and by `opa test policies/` with a real OPA.
# Each test calls a policy's decide(inp) directly (no `with input as`, which rego-cpp cannot run).
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

with_params(p) := object.union(base, {"params": p})

with_asset(a) := object.union(base, {"asset": object.union(base.asset, a)})

with_consumer(c) := object.union(base, {"consumer": object.union(base.consumer, c)})

denied_because(d, fragment) if {
	d.allow == false
	some reason in d.deny
	contains(reason, fragment)
}

# --- open-data ---------------------------------------------------------------------------------
test_open_data_allows_a_bound_consumer if {
	d := policies.open_data.decide(base)
	d.allow
	count(d.deny) == 0
	d.obligations.log_level == "summary"
}

test_open_data_denies_an_expired_agreement if {
	denied_because(policies.open_data.decide(object.union(base, {"now": 3000})), "expired")
}

test_open_data_denies_before_the_agreement_starts if {
	denied_because(policies.open_data.decide(object.union(base, {"now": -5})), "not yet valid")
}

test_open_data_denies_another_consumers_agreement if {
	denied_because(policies.open_data.decide(with_consumer({"org_id": "c2"})), "another consumer")
}

test_open_data_denies_without_an_agreement if {
	denied_because(policies.open_data.decide(object.union(base, {"agreement": null})), "agreement is required")
}

test_open_data_denies_a_provider_role if {
	denied_because(policies.open_data.decide(with_consumer({"role": "provider"})), "role provider")
}

test_open_data_denies_a_withdrawn_asset if {
	denied_because(policies.open_data.decide(with_asset({"status": "withdrawn"})), "withdrawn")
}

# --- usage limits (max accesses / rows) ----------------------------------------------------------
test_max_accesses_is_enforced if {
	inp := object.union(with_params({"max_accesses": 3}), {"usage": {"accesses": 3, "rows": 0}})
	denied_because(policies.open_data.decide(inp), "access limit reached (3 of 3)")
}

test_max_accesses_allows_below_the_limit if {
	inp := object.union(with_params({"max_accesses": 3}), {"usage": {"accesses": 2, "rows": 0}})
	policies.open_data.decide(inp).allow
}

test_max_total_rows_is_enforced if {
	inp := object.union(with_params({"max_total_rows": 100}), {"usage": {"accesses": 1, "rows": 100}})
	denied_because(policies.open_data.decide(inp), "row quota")
}

test_max_rows_becomes_an_obligation if {
	d := policies.purpose_restricted.decide(with_params({"purposes": ["research"], "max_rows": 5}))
	d.allow
	d.obligations.max_rows == 5
}

# --- purpose limitation, organisation type, validity window ------------------------------------
test_purpose_restricted_allows_the_declared_purpose if {
	policies.purpose_restricted.decide(base).allow
}

test_purpose_restricted_denies_another_purpose if {
	inp := object.union(base, {"request": {"purpose": "marketing"}})
	denied_because(policies.purpose_restricted.decide(inp), "purpose")
}

test_org_type_admitted if {
	policies.purpose_restricted.decide(with_params({"purposes": ["research"], "org_types": ["enterprise"]})).allow
}

test_org_type_not_admitted if {
	inp := with_params({"purposes": ["research"], "org_types": ["government_agency"]})
	denied_because(policies.purpose_restricted.decide(inp), "organisation type enterprise")
}

test_policy_validity_window if {
	denied_because(policies.purpose_restricted.decide(with_params({"purposes": ["research"], "not_after": 900})), "ended")
	denied_because(policies.purpose_restricted.decide(with_params({"purposes": ["research"], "not_before": 1100})), "not started")
}

test_policy_elapsed_time if {
	# ODRL elapsedTime: the agreement started at 0, now is 1000
	denied_because(policies.purpose_restricted.decide(with_params({"purposes": ["research"], "max_elapsed_seconds": 999})), "elapsed time")
	policies.purpose_restricted.decide(with_params({"purposes": ["research"], "max_elapsed_seconds": 1000})).allow
	policies.open_data.decide(with_params({"max_elapsed_seconds": 1000})).allow
}

# --- clearance versus classification (分级) ------------------------------------------------------
test_clearance_at_or_above_classification_is_allowed if {
	policies.purpose_restricted.decide(with_asset({"classification": "public"})).allow
	policies.purpose_restricted.decide(with_asset({"classification": "internal"})).allow
}

test_clearance_below_classification_is_denied if {
	denied_because(policies.purpose_restricted.decide(with_asset({"classification": "core"})), "classification core")
}

test_unknown_clearance_is_denied if {
	inp := with_consumer({"attributes": {"clearance": "top-secret"}})
	denied_because(policies.purpose_restricted.decide(inp), "clearance level is unknown")
}

# --- aggregation only ----------------------------------------------------------------------------
test_aggregation_only_refuses_reads if {
	denied_because(policies.aggregation_only.decide(base), "aggregate queries")
}

test_aggregation_only_allows_queries_with_noise if {
	d := policies.aggregation_only.decide(object.union(base, {"action": "query"}))
	d.allow
	d.obligations.add_dp_noise.epsilon == 0.5
	d.obligations.min_cohort == 10
}

# --- geographic restriction ----------------------------------------------------------------------
test_geo_restriction_inside_the_area if {
	inp := object.union(with_params({"bbox": [121.4, 24.9, 121.7, 25.2]}), {"request": {"bbox": [121.5, 25.0, 121.6, 25.1]}})
	d := policies.geo_restricted.decide(inp)
	d.allow
	d.obligations.clip_bbox == [121.4, 24.9, 121.7, 25.2]
}

test_geo_restriction_outside_the_area if {
	inp := object.union(with_params({"bbox": [121.4, 24.9, 121.7, 25.2]}), {"request": {"bbox": [120.0, 25.0, 121.6, 25.1]}})
	denied_because(policies.geo_restricted.decide(inp), "outside the permitted area")
}

test_geo_restriction_needs_a_requested_area if {
	denied_because(policies.geo_restricted.decide(with_params({"bbox": [121.4, 24.9, 121.7, 25.2]})), "must name a bbox")
}

# --- unified authorisation (统一授权) ----------------------------------------------------------------
test_unified_authorisation_allows_the_named_operator if {
	policies.unified_authorisation.decide(with_params({"operator_org_id": "c1"})).allow
}

test_unified_authorisation_denies_others if {
	denied_because(policies.unified_authorisation.decide(with_params({"operator_org_id": "c9"})), "unified operator")
	denied_because(policies.unified_authorisation.decide(with_params({})), "unified operator")
}

test_unified_authorisation_is_limited_to_the_provider if {
	inp := with_params({"operator_org_id": "c1", "provider_id": "p9"})
	denied_because(policies.unified_authorisation.decide(inp), "another provider")
}

# --- domain authorisation (分域授权) -----------------------------------------------------------------
test_domain_authorisation_allows_a_granted_domain if {
	policies.domain_authorisation.decide(with_params({"domain_grants": {"c1": ["transport"]}})).allow
}

test_domain_authorisation_denies_other_domains if {
	denied_because(policies.domain_authorisation.decide(with_params({"domain_grants": {"c1": ["water"]}})), "transport domain")
	denied_because(policies.domain_authorisation.decide(with_params({"domain_grants": {"c2": ["transport"]}})), "transport domain")
}

# --- scenario authorisation (场景授权) ---------------------------------------------------------------
test_scenario_authorisation_needs_approval if {
	pending := with_params({"scenarios": ["parking_guidance"]})
	denied_because(policies.scenario_authorisation.decide(pending), "not been approved")
	policies.scenario_authorisation.decide(object.union(pending, {"approvals": ["parking_guidance"]})).allow
}

test_scenario_authorisation_denies_scenarios_not_offered if {
	inp := object.union(with_params({"scenarios": ["flood_response"]}), {"approvals": ["parking_guidance"]})
	denied_because(policies.scenario_authorisation.decide(inp), "not one this offer admits")
}

# --- hierarchical authorisation (分级授权) -----------------------------------------------------------
test_hierarchical_first_tier_uses_and_derives if {
	inp := with_params({"first_tier": ["c1"], "second_tier": []})
	d := policies.hierarchical_authorisation.decide(inp)
	d.allow
	d.obligations.tier == "first"
	policies.hierarchical_authorisation.decide(object.union(inp, {"action": "derive"})).allow
}

test_hierarchical_second_tier_only_on_derived_products if {
	raw := with_params({"first_tier": ["op1"], "second_tier": ["c1"]})
	derived := object.union(raw, {"asset": object.union(base.asset, {"provider_id": "op1", "derived_from": "a0"})})
	denied_because(policies.hierarchical_authorisation.decide(raw), "only use derived products")
	d := policies.hierarchical_authorisation.decide(derived)
	d.allow
	d.obligations.tier == "second"
	denied_because(policies.hierarchical_authorisation.decide(object.union(derived, {"action": "derive"})), "only first-tier")
}

test_hierarchical_outside_both_tiers if {
	inp := with_params({"first_tier": ["op1"], "second_tier": ["c2"]})
	denied_because(policies.hierarchical_authorisation.decide(inp), "neither authorisation tier")
}

# --- malformed input is always a deny ------------------------------------------------------------
test_malformed_input_is_denied_by_every_policy if {
	decisions := [
		policies.open_data.decide({}), policies.purpose_restricted.decide({}),
		policies.aggregation_only.decide({}), policies.geo_restricted.decide({}),
		policies.unified_authorisation.decide({}), policies.domain_authorisation.decide({}),
		policies.scenario_authorisation.decide({}), policies.hierarchical_authorisation.decide({}),
	]
	every d in decisions {
		d.allow == false
		count(d.deny) > 0
	}
}

test_unknown_action_is_denied if {
	denied_because(policies.open_data.decide(object.union(base, {"action": "delete"})), "action is missing or invalid")
}
