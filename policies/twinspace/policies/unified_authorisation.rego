# unified-authorisation (统一授权): one operator is authorised for all of a provider's data.
# Params: operator_org_id, provider_id? (defaults to the asset's provider)
package twinspace.policies.unified_authorisation

import data.twinspace.lib
import rego.v1

mode_denied(inp) := {"only the unified operator named by the authorisation may use this provider's data" |
	object.get(lib.params(inp), "operator_org_id", null) != lib.consumer(inp).org_id
} | {"the asset belongs to another provider than the authorisation names" |
	lib.params(inp).provider_id
	lib.asset(inp).provider_id != lib.params(inp).provider_id
}

deny_for(inp) := (mode_denied(inp) | lib.validity_denied(inp)) | lib.binding_denied(inp)

obligations_for(inp) := object.union({"log_level": "full"}, lib.base_obligations(inp))

decide(inp) := lib.decide(inp, deny_for(inp), obligations_for(inp))

# The one document the broker reads.
decision := decide(input)
