"""Catalog of twin-entity assets (metadata only): publish, version, withdraw, search, DCAT export, and the
registry of providers' verified connectors, which hold the rows."""
