"""Contract negotiation (Dataspace Protocol), signed agreements and their offline verification.

See docs/contracts.md. Layering: ``states`` / ``messages`` / ``signing`` are pure (no I/O);
``service`` holds the domain logic; ``api`` the thin HTTP routes.
"""
