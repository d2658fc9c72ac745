# aggregation-only: "usable but not visible" — only privacy-preserving aggregate queries, with
# differential-privacy noise and a minimum cohort. Params: epsilon_per_query?, min_cohort?, purposes?
package twinspace.policies.aggregation_only

import data.twinspace.lib
import rego.v1

deny_for(inp) := (((((lib.role_denied(inp) | lib.clearance_denied(inp)) | lib.aggregation_denied(inp)) | lib.validity_denied(inp)) | lib.usage_denied(inp)) | lib.binding_denied(inp)) | lib.purpose_denied_if_listed(inp)

obligations_for(inp) := {
	"add_dp_noise": {"epsilon": lib.param(inp, "epsilon_per_query", 0.5)},
	"min_cohort": lib.param(inp, "min_cohort", 10),
	"log_level": "full",
}

# Rego unit tests call decide(some_input) directly; the broker queries `decision`.
decide(inp) := lib.decide(inp, deny_for(inp), obligations_for(inp))

# The one document the broker reads.
decision := decide(input)
