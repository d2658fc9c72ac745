"""Usage policies: Rego in ``policies/``, decided in-process (regopy) or by an OPA server."""
