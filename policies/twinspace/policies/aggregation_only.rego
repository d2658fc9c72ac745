# aggregation-only: "usable but not visible" — only privacy-preserving aggregate queries, with
# differential-privacy noise and a minimum cohort. Params: epsilon_per_query?, min_cohort?, purposes?
package twinspace.policies.aggregation_only

import data.twinspace.lib
import rego.v1

deny contains r if some r in lib.role_denied
deny contains r if some r in lib.clearance_denied
deny contains r if some r in lib.aggregation_denied
deny contains r if some r in lib.validity_denied
deny contains r if some r in lib.usage_denied
deny contains r if some r in lib.binding_denied

deny contains r if {
	lib.params.purposes
	some r in lib.purpose_denied
}

allow := count(deny) == 0

obligations := {
	"add_dp_noise": {"epsilon": object.get(lib.params, "epsilon_per_query", 0.5)},
	"min_cohort": object.get(lib.params, "min_cohort", 10),
	"log_level": "full",
}

# The one document the broker reads.
decision := {"allow": allow, "deny": deny, "obligations": obligations}
