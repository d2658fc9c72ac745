# hierarchical-authorisation: first-tier operators may use and derive from the raw asset;
# second-tier consumers may use only products derived by a first-tier operator.
# Params: first_tier [org ids], second_tier [org ids]
package twinspace.policies.hierarchical_authorisation

import data.twinspace.lib
import rego.v1

first_tier := object.get(lib.params, "first_tier", [])

second_tier := object.get(lib.params, "second_tier", [])

derived := object.get(input.asset, "derived_from", null) != null

deny contains "the organisation is in neither authorisation tier" if {
	not input.consumer.org_id in first_tier
	not input.consumer.org_id in second_tier
}

deny contains "second-tier consumers may only use derived products" if {
	input.consumer.org_id in second_tier
	not input.consumer.org_id in first_tier
	not derived
}

deny contains "a derived product must come from a first-tier operator" if {
	input.consumer.org_id in second_tier
	derived
	not input.asset.provider_id in first_tier
}

deny contains "only first-tier operators may derive products" if {
	input.action == "derive"
	not input.consumer.org_id in first_tier
}

deny contains r if some r in lib.validity_denied
deny contains r if some r in lib.binding_denied

allow := count(deny) == 0

obligations := object.union({"log_level": "full", "tier": tier}, lib.base_obligations)

tier := "first" if input.consumer.org_id in first_tier

else := "second"

# The one document the broker reads.
decision := {"allow": allow, "deny": deny, "obligations": obligations}
