"""GeoJSON FeatureCollections (or one Feature), including Smart Data Models' GeoJSON features whose
geometry and properties are NGSI-LD attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.errors import IngestError
from connectors.ingest.common import (TIME_FIELDS, Extent, IngestResult, add_codes, category_for, load_json,
                                      parse_time, rows_to_table)
from connectors.ingest.ngsi import put_geometry, unwrap_attr


def ingest_geojson(path: Path, *, entity_type: str | None = None, category: str | None = None,
                   region: str | None = None, id_property: str = "id") -> IngestResult:
    path = Path(path)
    doc = load_json(path, "GeoJSON")
    if not isinstance(doc, dict) or doc.get("type") not in ("FeatureCollection", "Feature"):
        raise IngestError(f"{path.name}: a GeoJSON FeatureCollection (or Feature) is expected",
                          code="ingest_malformed_geojson")
    features = doc.get("features") if doc["type"] == "FeatureCollection" else [doc]
    if not isinstance(features, list):
        raise IngestError(f"{path.name}: 'features' must be an array", code="ingest_malformed_geojson")
    extent = Extent()
    rows: list[dict[str, Any]] = []
    types: set[str] = set()
    warnings: list[str] = []
    for i, feat in enumerate(features):
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            raise IngestError(f"feature #{i}: not a GeoJSON Feature object", code="ingest_malformed_geojson")
        props = feat.get("properties")
        if props is None:
            props = {}
        if not isinstance(props, dict):
            raise IngestError(f"feature #{i}: 'properties' must be an object or null", code="ingest_malformed_geojson")
        row: dict[str, Any] = {}
        fid = feat.get("id", props.get(id_property))
        row["source_id"] = None if fid is None else str(fid)
        geom, _ = unwrap_attr(feat.get("geometry"))  # Smart Data Models wrap it as a GeoProperty
        if geom is not None:
            put_geometry(row, geom, extent, f"feature #{i}: geometry", warnings)
        ftype = entity_type
        for key, raw in props.items():
            if key == "type" and isinstance(raw, str):
                ftype = ftype or raw
                continue
            if key == "location" and geom is not None:
                continue  # the Feature's geometry already is the location
            value, _ = unwrap_attr(raw)
            if key in TIME_FIELDS:
                extent.add_time(parse_time(value))
            row[key] = value
        types.add(ftype or "Feature")
        rows.append(row)
    if not rows:
        raise IngestError(f"{path.name}: the FeatureCollection is empty", code="ingest_empty")
    if len(types) > 1 and not entity_type:
        raise IngestError(f"features mix entity types {', '.join(sorted(types))}; pass --entity-type",
                          code="ingest_mixed_types")
    etype = entity_type or types.pop()
    cat = category_for(etype, category)
    if region and any(r["source_id"] is None for r in rows):
        raise IngestError("every feature needs an id (Feature.id or properties.id) to build entity codes",
                          code="ingest_missing_id")
    add_codes(rows, region, cat, etype)
    meta = {"entity_type": etype, "twin_category": cat, "source_format": "geojson", "rows": len(rows),
            "region": region, **extent.meta()}
    return IngestResult(rows_to_table(rows, meta), meta, warnings)
