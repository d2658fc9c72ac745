# geo-restricted: access limited to an area. Params: bbox [minLon, minLat, maxLon, maxLat], purposes?
package twinspace.policies.geo_restricted

import data.twinspace.lib
import rego.v1

deny_for(inp) := ((((lib.role_denied(inp) | lib.clearance_denied(inp)) | lib.geo_denied(inp)) | lib.validity_denied(inp)) | lib.binding_denied(inp)) | lib.purpose_denied_if_listed(inp)

obligations_for(inp) := object.union(
	{"log_level": "full", "clip_bbox": lib.param(inp, "bbox", null)},
	lib.base_obligations(inp),
)

# Rego unit tests call decide(some_input) directly; the broker queries `decision`.
decide(inp) := lib.decide(inp, deny_for(inp), obligations_for(inp))

# The one document the broker reads.
decision := decide(input)
