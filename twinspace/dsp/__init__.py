"""Dataspace Protocol 2025-1: JSON-LD contexts, schema validation, message shapes (pure core)."""
