"""Catalog of twin-entity assets: publish, version, withdraw, search, DCAT export, and the encrypted
data vault holding each version's de-identified table."""
