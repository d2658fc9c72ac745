# open-data: any consumer, within validity and usage limits, with a binding agreement.
# Params: roles?, max_accesses?, max_total_rows?, max_rows?, columns?, log_level?
package twinspace.policies.open_data

import data.twinspace.lib
import rego.v1

deny_for(inp) := ((lib.role_denied(inp) | lib.validity_denied(inp)) | lib.usage_denied(inp)) | lib.binding_denied(inp)

obligations_for(inp) := object.union({"log_level": "summary"}, lib.base_obligations(inp))

# Rego unit tests call decide(some_input) directly; the broker queries `decision`.
decide(inp) := lib.decide(inp, deny_for(inp), obligations_for(inp))

# The one document the broker reads.
decision := decide(input)
