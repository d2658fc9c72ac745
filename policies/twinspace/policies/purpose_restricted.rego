# purpose-restricted: purpose limitation, clearance versus classification, organisation type,
# validity window and usage limits. Params: purposes, org_types?, max_accesses?, max_total_rows?,
# max_rows?, columns?, not_before?, not_after?
package twinspace.policies.purpose_restricted

import data.twinspace.lib
import rego.v1

deny contains r if some r in lib.role_denied
deny contains r if some r in lib.org_type_denied
deny contains r if some r in lib.clearance_denied
deny contains r if some r in lib.purpose_denied
deny contains r if some r in lib.validity_denied
deny contains r if some r in lib.usage_denied
deny contains r if some r in lib.binding_denied

allow := count(deny) == 0

obligations := object.union({"log_level": "full"}, lib.base_obligations)

# The one document the broker reads.
decision := {"allow": allow, "deny": deny, "obligations": obligations}
