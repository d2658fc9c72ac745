# geo-restricted: access limited to an area. Params: bbox [minLon, minLat, maxLon, maxLat], purposes?
package twinspace.policies.geo_restricted

import data.twinspace.lib
import rego.v1

deny contains r if some r in lib.role_denied
deny contains r if some r in lib.clearance_denied
deny contains r if some r in lib.geo_denied
deny contains r if some r in lib.validity_denied
deny contains r if some r in lib.binding_denied

deny contains r if {
	lib.params.purposes
	some r in lib.purpose_denied
}

allow := count(deny) == 0

obligations := object.union({"log_level": "full", "clip_bbox": object.get(lib.params, "bbox", null)}, lib.base_obligations)

# The one document the broker reads.
decision := {"allow": allow, "deny": deny, "obligations": obligations}
