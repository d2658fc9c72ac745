"""Privacy-preserving queries (control plane): routing, budgets, secure-aggregation rounds."""
