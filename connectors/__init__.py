"""TwinSpace connectors: what a participant runs on its own machine (SDK, ingest, de-identification)."""
