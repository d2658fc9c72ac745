# scenario-authorisation (场景授权): data is released per declared use scenario, only after the
# provider approved that scenario for this consumer (input.approvals lists the approved scenarios).
# Params: scenarios [names the offer admits]
package twinspace.policies.scenario_authorisation

import data.twinspace.lib
import rego.v1

offered(inp) := object.get(inp.params, "scenarios", [])

mode_denied(inp) := {"the declared scenario is not one this offer admits" |
	not lib.scenario(inp) in offered(inp)
} | {"the declared scenario has not been approved for this consumer yet" |
	lib.scenario(inp) in offered(inp)
	not lib.scenario(inp) in inp.approvals
}

deny_for(inp) := ((((mode_denied(inp) | lib.role_denied(inp)) | lib.clearance_denied(inp)) | lib.validity_denied(inp)) | lib.usage_denied(inp)) | lib.binding_denied(inp)

obligations_for(inp) := object.union({"log_level": "full", "scenario": lib.scenario(inp)}, lib.base_obligations(inp))

# Rego unit tests call decide(some_input) directly; the broker queries `decision`.
decide(inp) := lib.decide(inp, deny_for(inp), obligations_for(inp))

# The one document the broker reads.
decision := decide(input)
