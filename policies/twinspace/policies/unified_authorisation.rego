# unified-authorisation (统一授权): one operator is authorised for all of a provider's data.
# Params: operator_org_id, provider_id? (defaults to the asset's provider)
package twinspace.policies.unified_authorisation

import data.twinspace.lib
import rego.v1

mode_denied(inp) := {"only the unified operator named by the authorisation may use this provider's data" |
	object.get(inp.params, "operator_org_id", null) != inp.consumer.org_id
} | {"the asset belongs to another provider than the authorisation names" |
	inp.params.provider_id
	inp.asset.provider_id != inp.params.provider_id
}

deny_for(inp) := (mode_denied(inp) | lib.validity_denied(inp)) | lib.binding_denied(inp)

obligations_for(inp) := object.union({"log_level": "full"}, lib.base_obligations(inp))

# Rego unit tests call decide(some_input) directly; the broker queries `decision`.
decide(inp) := lib.decide(inp, deny_for(inp), obligations_for(inp))

# The one document the broker reads.
decision := decide(input)
