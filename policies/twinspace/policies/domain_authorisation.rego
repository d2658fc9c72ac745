# domain-authorisation (分域授权): a consumer is authorised per data domain (transport, water, ...).
# Params: domain_grants {org_id: [domains]}
package twinspace.policies.domain_authorisation

import data.twinspace.lib
import rego.v1

granted(inp) := object.get(object.get(inp.params, "domain_grants", {}), inp.consumer.org_id, [])

mode_denied(inp) := {msg |
	domain := inp.asset.domain
	not domain in granted(inp)
	msg := sprintf("no authorisation for the %s domain", [domain])
} | {"the asset has no data domain" | not inp.asset.domain}

deny_for(inp) := (((mode_denied(inp) | lib.role_denied(inp)) | lib.clearance_denied(inp)) | lib.validity_denied(inp)) | lib.binding_denied(inp)

obligations_for(inp) := object.union({"log_level": "full"}, lib.base_obligations(inp))

# Rego unit tests call decide(some_input) directly; the broker queries `decision`.
decide(inp) := lib.decide(inp, deny_for(inp), obligations_for(inp))

# The one document the broker reads.
decision := decide(input)
