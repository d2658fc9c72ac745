# Shared checks of the TwinSpace policy library.
#
# Every check is a FUNCTION of the input document (`inp`) returning a set of human-readable
# reasons; an empty set means the check passed. Policies (package twinspace.policies.<id>) union
# the checks they need in `deny_for(inp)`, wrap them with `lib.decide`, and expose
#     decision := decide(input)
# which is what the broker queries. Writing checks as functions lets the Rego unit tests call
# `decide(some_input)` directly, without `with input as` (which rego-cpp 1.5 cannot evaluate).
#
# Reference data (classification levels, known actions) lives in data.twinspace.config
# (policies/twinspace/config/data.json), pushed to OPA with the modules. If it is missing,
# every clearance check denies.
#
# Reasons interpolate input values only: rego-cpp 1.5 mis-escapes interpolated string literals.
package twinspace.lib

import rego.v1

levels := data.twinspace.config.levels

known_actions := data.twinspace.config.actions

# --- accessors (total: a missing or mistyped field reads as the default) ---------------------
obj(x) := x if is_object(x)

else := {}

params(inp) := obj(object.get(inp, "params", {}))

consumer(inp) := obj(object.get(inp, "consumer", {}))

asset(inp) := obj(object.get(inp, "asset", {}))

request(inp) := obj(object.get(inp, "request", {}))

usage(inp) := obj(object.get(inp, "usage", {}))

attributes(inp) := obj(object.get(consumer(inp), "attributes", {}))

clearance(inp) := object.get(attributes(inp), "clearance", "public")

has_agreement(inp) if is_object(object.get(inp, "agreement", null))

agreement(inp) := obj(object.get(inp, "agreement", {}))

purpose(inp) := object.get(request(inp), "purpose", object.get(agreement(inp), "purpose", ""))

scenario(inp) := object.get(request(inp), "scenario", object.get(agreement(inp), "scenario", ""))

approvals(inp) := object.get(inp, "approvals", [])

# --- the input must be well formed: anything else is a deny ----------------------------------
valid_field(inp, "action") if inp.action in known_actions

valid_field(inp, "now") if is_number(inp.now)

valid_field(inp, "consumer.org_id") if is_string(consumer(inp).org_id)

valid_field(inp, "consumer.role") if is_string(consumer(inp).role)

valid_field(inp, "asset.id") if is_string(asset(inp).id)

valid_field(inp, "usage.accesses") if is_number(usage(inp).accesses)

valid_field(inp, "usage.rows") if is_number(usage(inp).rows)

input_denied(inp) := {msg |
	some field in ["action", "now", "consumer.org_id", "consumer.role", "asset.id", "usage.accesses", "usage.rows"]
	not valid_field(inp, field)
	msg := sprintf("malformed policy input: %s is missing or invalid", [field])
}

# --- consumer role and organisation type ------------------------------------------------------
role_denied(inp) := {msg |
	allowed := object.get(params(inp), "roles", ["consumer"])
	not consumer(inp).role in allowed
	msg := sprintf("role %s may not use this asset", [consumer(inp).role])
}

org_type_denied(inp) := {msg |
	allowed := params(inp).org_types
	org_type := consumer(inp).org_type
	not org_type in allowed
	msg := sprintf("organisation type %s is not admitted by this offer", [org_type])
} | {"the consumer's organisation type is unknown" |
	params(inp).org_types
	not consumer(inp).org_type
}

# --- clearance versus classification (分级) ---------------------------------------------------
clearance_denied(inp) := (unknown_clearance(inp) | below_classification(inp)) | unclassified(inp)

unclassified(inp) := {"the asset has no classification" | not asset(inp).classification}

unknown_clearance(inp) := {"the consumer's clearance level is unknown" |
	level := clearance(inp)
	not levels[level]
}

cleared_for(level, classification) if levels[level] >= levels[classification]

below_classification(inp) := {msg |
	level := clearance(inp)
	levels[level]
	classification := asset(inp).classification
	not cleared_for(level, classification)
	msg := sprintf("the consumer's clearance is below the asset's classification %s", [classification])
}

# --- purpose limitation -----------------------------------------------------------------------
purpose_denied(inp) := {"the declared purpose is not among the permitted purposes" |
	not purpose(inp) in object.get(params(inp), "purposes", [])
}

# Only when the offer lists purposes.
purpose_denied_if_listed(inp) := purpose_denied(inp) if params(inp).purposes

else := set()

# --- validity window (epoch seconds) ------------------------------------------------------------
validity_denied(inp) := (({"the agreement is not yet valid" |
	has_agreement(inp)
	not inp.now >= agreement(inp).not_before
} | {"the agreement has expired" |
	has_agreement(inp)
	not inp.now < agreement(inp).not_after
}) | {"the policy's validity window has not started" | inp.now < params(inp).not_before}) | {"the policy's validity window has ended" | inp.now >= params(inp).not_after}

# --- usage limits -------------------------------------------------------------------------------
usage_denied(inp) := {msg |
	limit := params(inp).max_accesses
	usage(inp).accesses >= limit
	msg := sprintf("access limit reached (%v of %v)", [usage(inp).accesses, limit])
} | {msg |
	limit := params(inp).max_total_rows
	usage(inp).rows >= limit
	msg := sprintf("row quota exhausted (%v of %v rows)", [usage(inp).rows, limit])
}

# --- aggregation only: only privacy-preserving aggregate queries ------------------------------
aggregation_denied(inp) := {msg |
	inp.action != "query"
	msg := sprintf("only privacy-preserving aggregate queries are allowed, not %s", [inp.action])
}

# --- geographic restriction: the requested area must lie within the permitted bbox ------------
bbox_within(inner, outer) if {
	count(inner) == 4
	inner[0] >= outer[0]
	inner[1] >= outer[1]
	inner[2] <= outer[2]
	inner[3] <= outer[3]
}

geo_denied(inp) := {"a geographic restriction applies: the request must name a bbox" |
	params(inp).bbox
	not request(inp).bbox
} | {msg |
	requested := request(inp).bbox
	not bbox_within(requested, params(inp).bbox)
	msg := sprintf("requested area %v is outside the permitted area %v", [requested, params(inp).bbox])
}

# --- binding: an active asset, a finalised agreement naming this consumer ---------------------
binding_denied(inp) := (({"the asset is withdrawn" | asset(inp).status == "withdrawn"} | {"the agreement belongs to another consumer" |
	has_agreement(inp)
	agreement(inp).consumer_id != consumer(inp).org_id
}) | {"the agreement is not finalised" |
	has_agreement(inp)
	agreement(inp).status != "FINALIZED"
}) | {"an agreement is required for this action" |
	inp.action in {"read", "query", "derive"}
	not has_agreement(inp)
}

# --- obligations ---------------------------------------------------------------------------------
base_obligations(inp) := {k: v |
	some k in ["max_rows", "columns", "log_level"]
	v := params(inp)[k]
}

# The decision document every policy returns: deny by default, reasons sorted, malformed input
# always denied.
decide(inp, deny, obligations) := {"allow": count(reasons) == 0, "deny": sort(reasons), "obligations": obligations} if {
	reasons := deny | input_denied(inp)
}
