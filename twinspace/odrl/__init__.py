"""ODRL 2.2 policies for TwinSpace offers and agreements, and their mapping to the Rego input."""
