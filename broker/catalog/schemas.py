"""Request bodies of the catalog API (unknown fields refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from twinspace.canonical import canonical_json
from broker.schemas import StrictModel

TwinCategory = Literal["natural_person", "legal_person", "natural_entity", "management_entity",
                       "building_structure", "goods_equipment", "vehicle", "other"]
Classification = Literal["public", "internal", "sensitive", "core"]
CLASSIFICATION_ORDER = {"public": 0, "internal": 1, "sensitive": 2, "core": 3}
HEX64 = r"^[0-9a-f]{64}$"


class ColumnSpec(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=200)
    unit: str | None = Field(None, max_length=64)


class Audience(StrictModel):
    org_types: list[str] = Field(default_factory=list, max_length=50)
    org_ids: list[str] = Field(default_factory=list, max_length=500)


class Offer(StrictModel):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    policy_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(canonical_json(value)) > 8192:
            raise ValueError("offer params exceed 8 KiB")
        if "audience" in value:
            Audience.model_validate(value["audience"])
        return value


class AssetMetadata(StrictModel):
    title: str = Field(min_length=1, max_length=300)
    description: str = Field("", max_length=10_000)
    keywords: list[str] = Field(default_factory=list, max_length=50)
    twin_category: TwinCategory
    entity_type: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
    region: str | None = Field(None, pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")
    classification: Classification
    domain: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    bbox: list[float] | None = Field(None, min_length=4, max_length=4)
    time_start: datetime | None = None
    time_end: datetime | None = None
    columns: list[ColumnSpec] = Field(min_length=1, max_length=2000)
    row_count: int = Field(ge=0)
    content_hash: str = Field(pattern=HEX64)
    deid_report: dict[str, Any] | None = None
    deid_report_hash: str | None = Field(None, pattern=HEX64)
    offers: list[Offer] = Field(min_length=1, max_length=50)
    # The endpoint of the provider's verified connector (POST /connectors) that serves the rows; the
    # broker reads its signed manifest and never the rows (docs/data-plane.md).
    data_endpoint: str = Field(max_length=400, pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/\-]*)?$")

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str]) -> list[str]:
        if any(not k or len(k) > 64 for k in value):
            raise ValueError("keywords must be 1-64 characters")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "AssetMetadata":
        if self.bbox is not None:
            w, s, e, n = self.bbox
            if not (-180 <= w <= e <= 180 and -90 <= s <= n <= 90):
                raise ValueError("bbox must be [min_lon, min_lat, max_lon, max_lat] in WGS84 with min <= max")
        if self.time_start and self.time_end and self.time_start > self.time_end:
            raise ValueError("time_start is after time_end")
        if (self.deid_report is None) != (self.deid_report_hash is None):
            raise ValueError("deid_report and deid_report_hash go together")
        ids = [o.id for o in self.offers]
        if len(ids) != len(set(ids)):
            raise ValueError("offer ids must be unique within an asset")
        return self

