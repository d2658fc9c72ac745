# purpose-restricted: purpose limitation, clearance versus classification, organisation type,
# validity window and usage limits. Params: purposes, org_types?, roles?, max_accesses?,
# max_total_rows?, max_rows?, columns?, not_before?, not_after?
package twinspace.policies.purpose_restricted

import data.twinspace.lib
import rego.v1

deny_for(inp) := (((((lib.role_denied(inp) | lib.org_type_denied(inp)) | lib.clearance_denied(inp)) | lib.purpose_denied(inp)) | lib.validity_denied(inp)) | lib.usage_denied(inp)) | lib.binding_denied(inp)

obligations_for(inp) := object.union({"log_level": "full"}, lib.base_obligations(inp))

# Rego unit tests call decide(some_input) directly; the broker queries `decision`.
decide(inp) := lib.decide(inp, deny_for(inp), obligations_for(inp))

# The one document the broker reads.
decision := decide(input)
