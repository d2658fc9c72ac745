# Note: reasons interpolate input values only; rego-cpp 1.x mis-escapes interpolated string literals.
# Shared checks. Every check is a set of human-readable reasons; an empty set means it passed.
# Policies (package twinspace.policies.<id>) union the checks they need into `deny`.
package twinspace.lib

import rego.v1

levels := {"public": 0, "internal": 1, "sensitive": 2, "core": 3}

params := object.get(input, "params", {})

attributes := object.get(input.consumer, "attributes", {})

clearance := object.get(attributes, "clearance", "public")

agreement := object.get(input, "agreement", null)

purpose := object.get(input.request, "purpose", object.get(object.get(input, "agreement", {}), "purpose", ""))

scenario := object.get(input.request, "scenario", object.get(object.get(input, "agreement", {}), "scenario", ""))

# Consumer role and organisation type -------------------------------------------------------
role_denied contains msg if {
	allowed := object.get(params, "roles", ["consumer"])
	not input.consumer.role in allowed
	msg := sprintf("role %s may not use this asset", [input.consumer.role])
}

org_type_denied contains msg if {
	allowed := params.org_types
	not input.consumer.org_type in allowed
	msg := sprintf("organisation type %s is not admitted by this offer", [input.consumer.org_type])
}

# Clearance versus classification (分级) -----------------------------------------------------
clearance_denied contains msg if {
	not levels[clearance]
	msg := "the consumer's clearance level is unknown"
}

clearance_denied contains msg if {
	levels[clearance] < levels[input.asset.classification]
	msg := sprintf("the consumer's clearance is below the asset's classification %s", [input.asset.classification])
}

# Purpose limitation -------------------------------------------------------------------------
purpose_denied contains msg if {
	allowed := object.get(params, "purposes", [])
	not purpose in allowed
	msg := "the declared purpose is not among the permitted purposes"
}

# Validity window (epoch seconds) -------------------------------------------------------------
validity_denied contains "the agreement is not yet valid" if {
	agreement != null
	input.now < agreement.not_before
}

validity_denied contains "the agreement has expired" if {
	agreement != null
	input.now >= agreement.not_after
}

validity_denied contains "the policy's validity window has not started" if input.now < params.not_before

validity_denied contains "the policy's validity window has ended" if input.now >= params.not_after

# Usage limits --------------------------------------------------------------------------------
usage_denied contains msg if {
	input.usage.accesses >= params.max_accesses
	msg := sprintf("access limit reached (%d of %d)", [input.usage.accesses, params.max_accesses])
}

usage_denied contains msg if {
	input.usage.rows >= params.max_total_rows
	msg := sprintf("row quota exhausted (%d of %d rows)", [input.usage.rows, params.max_total_rows])
}

# Aggregation only: only privacy-preserving queries ------------------------------------------
aggregation_denied contains msg if {
	input.action != "query"
	msg := sprintf("only privacy-preserving aggregate queries are allowed, not %s", [input.action])
}

# Geographic restriction: the requested area must lie within the permitted bbox ---------------
bbox_within(inner, outer) if {
	inner[0] >= outer[0]
	inner[1] >= outer[1]
	inner[2] <= outer[2]
	inner[3] <= outer[3]
}

geo_denied contains "a geographic restriction applies: the request must name a bbox" if {
	params.bbox
	not input.request.bbox
}

geo_denied contains msg if {
	not bbox_within(input.request.bbox, params.bbox)
	msg := sprintf("requested area %v is outside the permitted area %v", [input.request.bbox, params.bbox])
}

# The asset must be active and the agreement must name this consumer and asset ----------------
binding_denied contains "the asset is withdrawn" if input.asset.status == "withdrawn"

binding_denied contains "the agreement belongs to another consumer" if {
	agreement != null
	agreement.consumer_id != input.consumer.org_id
}

binding_denied contains "the agreement is not finalised" if {
	agreement != null
	agreement.status != "FINALIZED"
}

binding_denied contains "an agreement is required for this action" if {
	input.action in {"read", "query"}
	agreement == null
}

# Common obligations ---------------------------------------------------------------------------
base_obligations := {k: v |
	some k in ["max_rows", "columns", "log_level"]
	v := params[k]
}
