# hierarchical-authorisation (分级授权): first-tier operators may use and derive from the raw
# asset; second-tier consumers may use only products derived by a first-tier operator.
# Params: first_tier [org ids], second_tier [org ids]
package twinspace.policies.hierarchical_authorisation

import data.twinspace.lib
import rego.v1

first_tier(inp) := object.get(inp.params, "first_tier", [])

second_tier(inp) := object.get(inp.params, "second_tier", [])

is_first(inp) if inp.consumer.org_id in first_tier(inp)

is_second(inp) if {
	inp.consumer.org_id in second_tier(inp)
	not is_first(inp)
}

derived(inp) if object.get(inp.asset, "derived_from", null) != null

mode_denied(inp) := (({"the organisation is in neither authorisation tier" |
	not is_first(inp)
	not is_second(inp)
} | {"second-tier consumers may only use derived products" |
	is_second(inp)
	not derived(inp)
}) | {"a derived product must come from a first-tier operator" |
	is_second(inp)
	derived(inp)
	not inp.asset.provider_id in first_tier(inp)
}) | {"only first-tier operators may derive products" |
	inp.action == "derive"
	not is_first(inp)
}

deny_for(inp) := (mode_denied(inp) | lib.validity_denied(inp)) | lib.binding_denied(inp)

tier(inp) := "first" if is_first(inp)

else := "second"

obligations_for(inp) := object.union({"log_level": "full", "tier": tier(inp)}, lib.base_obligations(inp))

# Rego unit tests call decide(some_input) directly; the broker queries `decision`.
decide(inp) := lib.decide(inp, deny_for(inp), obligations_for(inp))

# The one document the broker reads.
decision := decide(input)
