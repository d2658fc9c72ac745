# unified-authorisation: one operator is authorised for all of a provider's data.
# Params: operator_org_id, provider_id? (defaults to the asset's provider)
package twinspace.policies.unified_authorisation

import data.twinspace.lib
import rego.v1

deny contains msg if {
	object.get(lib.params, "operator_org_id", null) != input.consumer.org_id
	msg := "only the unified operator named by the authorisation may use this provider's data"
}

deny contains "the asset belongs to another provider than the authorisation names" if {
	lib.params.provider_id
	input.asset.provider_id != lib.params.provider_id
}

deny contains r if some r in lib.validity_denied
deny contains r if some r in lib.binding_denied

allow := count(deny) == 0

obligations := object.union({"log_level": "full"}, lib.base_obligations)

# The one document the broker reads.
decision := {"allow": allow, "deny": deny, "obligations": obligations}
