# domain-authorisation: a consumer is authorised per data domain (transport, water, energy, ...).
# Params: domain_grants {org_id: [domains]}
package twinspace.policies.domain_authorisation

import data.twinspace.lib
import rego.v1

granted := object.get(object.get(lib.params, "domain_grants", {}), input.consumer.org_id, [])

deny contains msg if {
	not input.asset.domain in granted
	msg := sprintf("no authorisation for the %s domain", [input.asset.domain])
}

deny contains r if some r in lib.role_denied
deny contains r if some r in lib.clearance_denied
deny contains r if some r in lib.validity_denied
deny contains r if some r in lib.binding_denied

allow := count(deny) == 0

obligations := object.union({"log_level": "full"}, lib.base_obligations)

# The one document the broker reads.
decision := {"allow": allow, "deny": deny, "obligations": obligations}
