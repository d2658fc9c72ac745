# scenario-authorisation: data is released per declared use scenario, only after the provider
# approved that scenario for this consumer (input.approvals lists the approved scenarios).
# Params: scenarios [names the offer admits]
package twinspace.policies.scenario_authorisation

import data.twinspace.lib
import rego.v1

deny contains msg if {
	not lib.scenario in object.get(lib.params, "scenarios", [])
	msg := "the declared scenario is not one this offer admits"
}

deny contains msg if {
	lib.scenario in object.get(lib.params, "scenarios", [])
	not lib.scenario in object.get(input, "approvals", [])
	msg := "the declared scenario has not been approved for this consumer yet"
}

deny contains r if some r in lib.role_denied
deny contains r if some r in lib.clearance_denied
deny contains r if some r in lib.validity_denied
deny contains r if some r in lib.usage_denied
deny contains r if some r in lib.binding_denied

allow := count(deny) == 0

obligations := object.union({"log_level": "full", "scenario": lib.scenario}, lib.base_obligations)

# The one document the broker reads.
decision := {"allow": allow, "deny": deny, "obligations": obligations}
