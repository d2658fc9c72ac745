# open-data: any consumer, within validity and usage limits, with a binding agreement.
package twinspace.policies.open_data

import data.twinspace.lib
import rego.v1

deny contains r if some r in lib.role_denied
deny contains r if some r in lib.validity_denied
deny contains r if some r in lib.usage_denied
deny contains r if some r in lib.binding_denied

allow := count(deny) == 0

obligations := object.union({"log_level": "summary"}, lib.base_obligations)

# The one document the broker reads.
decision := {"allow": allow, "deny": deny, "obligations": obligations}
