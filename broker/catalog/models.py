"""Catalog tables: one ``Asset`` row per (asset id, version) — metadata only, the rows stay in the
provider's connector — and the registry of verified connectors (``ConnectorEndpoint``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel

from broker.storage.db import utcnow



class Asset(SQLModel, table=True):
    """Indexes (docs/catalog.md#queries): listing walks ``ix_catalog_asset_list`` in (created_at, id,
    version) order and filters on its trailing columns, counting reads ``ix_catalog_asset_visible`` only
    (both covering); one dataset is read by primary key.
    There is no single-column index on is_latest/status/classification: with two to four values each,
    SQLite preferred them to the primary key and to the ordered index."""

    __tablename__ = "catalog_asset"
    __table_args__ = (
        Index("ix_catalog_asset_list", "is_latest", "created_at", "id", "version", "status", "classification",
              "audience_restricted"),
        Index("ix_catalog_asset_visible", "is_latest", "status", "classification", "audience_restricted", "id",
              "version"),
    )

    id: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    provider_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    status: str = Field(default="active", max_length=16)  # active | superseded | withdrawn
    is_latest: bool = Field(default=True)
    title: str = Field(max_length=300)
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    twin_category: str = Field(index=True, max_length=32)
    entity_type: str = Field(index=True, max_length=64)
    entity_code_scheme: str = Field(default="", max_length=200)
    region: str | None = Field(default=None, max_length=16)
    classification: str = Field(max_length=16)
    domain: str = Field(index=True, max_length=64)
    min_lon: float | None = None
    min_lat: float | None = None
    max_lon: float | None = None
    max_lat: float | None = None
    time_start: datetime | None = None
    time_end: datetime | None = None
    columns: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    row_count: int
    content_hash: str = Field(max_length=64)
    byte_size: int
    deid_report: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    deid_report_hash: str | None = Field(default=None, max_length=64)
    offers: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    withdrawn_at: datetime | None = None
    # The normalised endpoint of the provider's verified connector that serves the rows (docs/data-plane.md).
    # None only for rows of old broker-hosted versions (their data was dropped with the vault).
    data_endpoint: str | None = Field(default=None, max_length=500)
    # Every offer names an audience: the admitted org types and org ids are rows of ``AssetAudience``.
    # False when some offer admits every consumer whose clearance suffices. Derived from ``offers``.
    # (False sorts first, so a capped count meets the cheap rows first.)
    audience_restricted: bool = Field(default=False)
    # Lower-cased title, description, keywords, entity type and domain: what ``q`` matches (substring).
    search_text: str = Field(default="", sa_column=Column(Text, nullable=False))

    @property
    def bbox(self) -> list[float] | None:
        if self.min_lon is None:
            return None
        return [self.min_lon, self.min_lat, self.max_lon, self.max_lat]


class AssetAudience(SQLModel, table=True):
    """Who an audience-restricted asset version admits (``kind`` = "type" | "org"), so that visibility
    is a primary-key probe in SQL instead of decoding every row's offers in Python."""

    __tablename__ = "catalog_asset_audience"

    asset_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    kind: str = Field(primary_key=True, max_length=8)
    value: str = Field(primary_key=True, max_length=64)


class AssetTerm(SQLModel, table=True):
    """The words of an asset version's ``search_text`` (lower-cased ``\\w+`` runs, at most 64 characters),
    so that ``q`` finds its matches through an index: a word of ``q`` matches a word it is a prefix of."""

    __tablename__ = "catalog_asset_term"
    __table_args__ = (Index("ix_catalog_asset_term_term", "term", "asset_id", "version",
                            postgresql_ops={"term": "text_pattern_ops"}),)

    asset_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    term: str = Field(primary_key=True, max_length=64)


class ConnectorEndpoint(SQLModel, table=True):
    """A provider's connector whose endpoint answered an ownership challenge signed by one of the
    provider's registered keys (``broker.catalog.endpoints``). An endpoint belongs to one organisation."""

    __tablename__ = "connector_endpoint"

    id: str = Field(primary_key=True, max_length=64)            # cn_...
    org_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    endpoint: str = Field(unique=True, max_length=500)           # normalised (the connector's audience)
    kid: str = Field(max_length=64)                              # the provider key that signed the proof
    public_key: str = Field(max_length=64)
    status: str = Field(default="verified", max_length=16)
    verified_at: datetime = Field(default_factory=utcnow)
    created_at: datetime = Field(default_factory=utcnow)
