# Shared checks of the TwinSpace policy library.
#
# Every check is a FUNCTION of the input document (`inp`) returning a
# set of human-readable reasons; an empty set means the check passed. A policy (package
# twinspace.policies.<id>) unions the checks it needs in `deny_for(inp)` and exposes
#     decide(inp) := lib.decide(inp, deny_for(inp), obligations_for(inp))
#     decision := decide(input)
# The broker queries `decision`; the Rego unit tests call `decide(some_input)` directly, without
# `with input as` (which rego-cpp 1.5 cannot evaluate), so they run in-process and under `opa test`.
#
# Reference data (classification levels, known actions) lives in data.twinspace.config
# (policies/twinspace/config/data.json), pushed to OPA with the modules. If it is missing,
# every decision denies.
#
# Reasons interpolate input values only: rego-cpp 1.5 mis-escapes interpolated string literals
# (e.g. object.get defaults), and output it cannot serialise is a deny.
package twinspace.lib

import rego.v1

levels := data.twinspace.config.levels

known_actions := data.twinspace.config.actions

# --- accessors ---------------------------------------------------------------------------------
# Checks read fields directly (inp.params.x): input_denied guarantees every part is there with the
# right type, so a check that cannot read what it needs never turns a malformed input into an allow.
clearance(inp) := object.get(inp.consumer.attributes, "clearance", "public")

has_agreement(inp) if is_object(inp.agreement)

agreement_field(inp, key) := inp.agreement[key] if has_agreement(inp)

else := ""

# Total accessors, for obligations (which must be defined even when the input is malformed).
request(inp) := inp.request if is_object(inp.request)

else := {}

params_or_empty(inp) := inp.params if is_object(inp.params)

else := {}

param(inp, key, fallback) := object.get(params_or_empty(inp), key, fallback)

purpose(inp) := object.get(request(inp), "purpose", agreement_field(inp, "purpose"))

scenario(inp) := object.get(request(inp), "scenario", agreement_field(inp, "scenario"))

# --- the input must be well formed: anything else is a deny ----------------------------------
# Well-formed input: every part the checks read, with the right type (build_policy_input always
# produces it; a hand-written or tampered input that lacks one is denied).
input_denied(inp) := set() if well_formed(inp)

else := input_problems(inp)

# The fast path: one rule body (no sets built) for the usual, well-formed input.
well_formed(inp) if {
	inp.action in known_actions
	is_number(inp.now)
	is_string(inp.consumer.org_id)
	is_string(inp.consumer.role)
	is_object(inp.consumer.attributes)
	is_string(inp.asset.id)
	agreement_ok(inp)
	is_object(inp.params)
	is_number(inp.usage.accesses)
	is_number(inp.usage.rows)
	is_object(inp.request)
	is_array(inp.approvals)
}

input_problems(inp) := {msg | some problems in [
	{"malformed policy input: action is missing or invalid" | not inp.action in known_actions},
	{"malformed policy input: now is missing or invalid" | not is_number(inp.now)},
	{"malformed policy input: consumer is missing or invalid" | not is_object(inp.consumer)},
	{"malformed policy input: consumer.org_id is missing or invalid" | not is_string(inp.consumer.org_id)},
	{"malformed policy input: consumer.role is missing or invalid" | not is_string(inp.consumer.role)},
	{"malformed policy input: consumer.attributes is missing or invalid" | not is_object(inp.consumer.attributes)},
	{"malformed policy input: asset is missing or invalid" | not is_object(inp.asset)},
	{"malformed policy input: asset.id is missing or invalid" | not is_string(inp.asset.id)},
	{"malformed policy input: agreement is missing or invalid" | not agreement_ok(inp)},
	{"malformed policy input: params is missing or invalid" | not is_object(inp.params)},
	{"malformed policy input: usage.accesses is missing or invalid" | not is_number(inp.usage.accesses)},
	{"malformed policy input: usage.rows is missing or invalid" | not is_number(inp.usage.rows)},
	{"malformed policy input: request is missing or invalid" | not is_object(inp.request)},
	{"malformed policy input: approvals is missing or invalid" | not is_array(inp.approvals)},
]; some msg in problems}

agreement_ok(inp) if inp.agreement == null

agreement_ok(inp) if {
	is_object(inp.agreement)
	is_string(inp.agreement.consumer_id)
	is_string(inp.agreement.status)
	is_number(inp.agreement.not_before)
	is_number(inp.agreement.not_after)
}

# --- consumer role and organisation type ------------------------------------------------------
role_denied(inp) := {msg |
	allowed := object.get(inp.params, "roles", ["consumer"])
	not inp.consumer.role in allowed
	msg := sprintf("role %s may not use this asset", [inp.consumer.role])
}

org_type_denied(inp) := {msg |
	allowed := inp.params.org_types
	org_type := inp.consumer.org_type
	not org_type in allowed
	msg := sprintf("organisation type %s is not admitted by this offer", [org_type])
} | {"the consumer's organisation type is unknown" |
	inp.params.org_types
	not inp.consumer.org_type
}

# --- clearance versus classification (分级) ---------------------------------------------------
clearance_denied(inp) := (unknown_clearance(inp) | below_classification(inp)) | unclassified(inp)

unclassified(inp) := {"the asset has no classification" | not inp.asset.classification}

unknown_clearance(inp) := {"the consumer's clearance level is unknown" |
	level := clearance(inp)
	not levels[level]
}

cleared_for(level, classification) if levels[level] >= levels[classification]

below_classification(inp) := {msg |
	level := clearance(inp)
	levels[level]
	classification := inp.asset.classification
	not cleared_for(level, classification)
	msg := sprintf("the consumer's clearance is below the asset's classification %s", [classification])
}

# --- purpose limitation -----------------------------------------------------------------------
purpose_denied(inp) := {"the declared purpose is not among the permitted purposes" |
	not purpose(inp) in object.get(inp.params, "purposes", [])
}

# Only when the offer lists purposes.
purpose_denied_if_listed(inp) := purpose_denied(inp) if inp.params.purposes

else := set()

# --- validity window (epoch seconds) ------------------------------------------------------------
validity_denied(inp) := ((({"the agreement is not yet valid" |
	has_agreement(inp)
	not inp.now >= inp.agreement.not_before
} | {"the agreement has expired" |
	has_agreement(inp)
	not inp.now < inp.agreement.not_after
}) | {"the policy's validity window has not started" | inp.now < inp.params.not_before}) | {"the policy's validity window has ended" | inp.now >= inp.params.not_after}) | elapsed_denied(inp)

# ODRL elapsedTime (params.max_elapsed_seconds): use ends that long after the agreement started.
elapsed_denied(inp) := {msg |
	has_agreement(inp)
	limit := inp.params.max_elapsed_seconds
	inp.now - inp.agreement.not_before > limit
	msg := sprintf("the permitted elapsed time of %v seconds is over", [limit])
}

# --- usage limits -------------------------------------------------------------------------------
usage_denied(inp) := {msg |
	limit := inp.params.max_accesses
	inp.usage.accesses >= limit
	msg := sprintf("access limit reached (%v of %v)", [inp.usage.accesses, limit])
} | {msg |
	limit := inp.params.max_total_rows
	inp.usage.rows >= limit
	msg := sprintf("row quota exhausted (%v of %v rows)", [inp.usage.rows, limit])
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
	inp.params.bbox
	not inp.request.bbox
} | {msg |
	requested := inp.request.bbox
	not bbox_within(requested, inp.params.bbox)
	msg := sprintf("requested area %v is outside the permitted area %v", [requested, inp.params.bbox])
}

# --- binding: an active asset, a finalised agreement naming this consumer ---------------------
binding_denied(inp) := (({"the asset is withdrawn" | inp.asset.status == "withdrawn"} | {"the agreement belongs to another consumer" |
	has_agreement(inp)
	inp.agreement.consumer_id != inp.consumer.org_id
}) | {"the agreement is not finalised" |
	has_agreement(inp)
	inp.agreement.status != "FINALIZED"
}) | {"an agreement is required for this action" |
	inp.action in {"read", "query", "derive"}
	not has_agreement(inp)
}

# --- obligations ---------------------------------------------------------------------------------
base_obligations(inp) := {k: v |
	some k in ["max_rows", "columns", "log_level"]
	v := inp.params[k]
}

# The decision document every policy returns: deny by default, reasons sorted,
# malformed input always denied.
decide(inp, deny, obligations) := {"allow": count(reasons) == 0, "deny": sort(reasons), "obligations": obligations} if {
	reasons := deny | input_denied(inp)
}
