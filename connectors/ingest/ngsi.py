"""NGSI-LD (normalized or key-values) and NGSI-v2 entities, e.g. FIWARE Smart Data Models examples:
each attribute is unwrapped to its plain value, ``location`` becomes lon/lat (true centroid),
``area_m2`` and a GeoJSON ``geometry`` column."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from connectors.errors import IngestError
from connectors.ingest.common import (TIME_FIELDS, Extent, IngestResult, add_codes, category_for, load_json,
                                      parse_time, rows_to_table)
from connectors.ingest.geometry import GEOJSON_TYPES, analyse

NGSI_LD_ATTR_TYPES = {"Property", "Relationship", "GeoProperty", "LanguageProperty", "VocabProperty",
                      "ListProperty", "ListRelationship", "JsonProperty"}
_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def unwrap_attr(value: Any) -> tuple[Any, bool]:
    """(plain value, is_geo) for an NGSI-LD normalized, NGSI-v2 normalized or key-values attribute."""
    if isinstance(value, dict):
        t = value.get("type")
        if t in NGSI_LD_ATTR_TYPES:
            if t == "Relationship" or t == "ListRelationship":
                return value.get("object", value.get("objectList")), False
            if t == "LanguageProperty":
                return value.get("languageMap"), False
            if t == "VocabProperty":
                return value.get("vocab"), False
            return value.get("value", value.get("valueList", value.get("json"))), t == "GeoProperty"
        if "value" in value and isinstance(t, str) and set(value) <= {"type", "value", "metadata"}:
            # NGSI-v2 normalized: {"type": "Text"|"geo:json"|..., "value": ..., "metadata": {...}}
            return value["value"], t == "geo:json"
        if t in GEOJSON_TYPES:
            return value, True
    return value, False


def put_geometry(row: dict[str, Any], value: Any, extent: Extent, where: str, warnings: list[str]) -> None:
    try:
        g = analyse(value)
    except ValueError as exc:
        raise IngestError(f"{where}: {exc}", code="ingest_malformed_geometry") from exc
    extent.add_bounds(*g.bounds)
    row["lon"], row["lat"] = g.lon, g.lat
    if g.area_m2 is not None:
        row["area_m2"] = g.area_m2
    row["geometry"] = g.geojson
    if not g.valid:
        warnings.append(f"{where}: geometry is not valid ({g.problem}); the centroid is that of its repaired form")


def ngsi_entity_to_row(entity: Any, index: int, extent: Extent,
                       warnings: list[str] | None = None) -> tuple[str, dict[str, Any]]:
    warnings = [] if warnings is None else warnings
    if not isinstance(entity, dict):
        raise IngestError(f"entity #{index}: expected a JSON object, got {type(entity).__name__}",
                          code="ingest_malformed_ngsi")
    eid, etype = entity.get("id"), entity.get("type")
    if not isinstance(eid, str) or not eid:
        raise IngestError(f"entity #{index}: missing string 'id'", code="ingest_malformed_ngsi")
    if not isinstance(etype, str) or not _TYPE_RE.match(etype):
        raise IngestError(f"entity #{index} ({eid}): missing or invalid 'type'", code="ingest_malformed_ngsi")
    row: dict[str, Any] = {"source_id": eid}
    for key, raw in entity.items():
        if key in ("id", "type", "@context"):
            continue
        value, is_geo = unwrap_attr(raw)
        if isinstance(value, dict) and "@value" in value:  # {"@type": "DateTime", "@value": "..."}
            value = value["@value"]
        if key == "location":
            put_geometry(row, value, extent, f"entity #{index} ({eid}): attribute 'location'", warnings)
            continue
        if is_geo:  # other GeoProperties are kept as GeoJSON text, checked but not the asset's extent
            try:
                analyse(value)
            except ValueError as exc:
                raise IngestError(f"entity #{index} ({eid}): attribute {key!r}: {exc}",
                                  code="ingest_malformed_geometry") from exc
        if key in TIME_FIELDS:
            extent.add_time(parse_time(value))
        row[key] = value
    for key in ("observedAt", "modifiedAt", "createdAt"):  # NGSI-LD temporal members on attributes
        for raw in entity.values():
            if isinstance(raw, dict) and key in raw:
                extent.add_time(parse_time(raw[key]))
    return etype, row


def ingest_ngsi(paths: list[Path] | Path, *, entity_type: str | None = None, category: str | None = None,
                region: str | None = None) -> IngestResult:
    """NGSI-LD (normalized or key-values) or NGSI-v2 entities: one entity, an array, or several files."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    extent = Extent()
    rows: list[dict[str, Any]] = []
    types: set[str] = set()
    warnings: list[str] = []
    n = 0
    for path in paths:
        path = Path(path)
        doc = load_json(path, "NGSI-LD")
        entities = doc if isinstance(doc, list) else [doc]
        if not entities:
            raise IngestError(f"{path.name}: no entities", code="ingest_empty")
        for ent in entities:
            etype, row = ngsi_entity_to_row(ent, n, extent, warnings)
            n += 1
            if entity_type and etype != entity_type:
                continue
            types.add(etype)
            rows.append(row)
    if not rows:
        raise IngestError(f"no entities of type {entity_type!r} in the input", code="ingest_empty")
    if len(types) > 1:
        raise IngestError(f"an asset holds one entity type; the input mixes {', '.join(sorted(types))} "
                          "(choose one with --entity-type)", code="ingest_mixed_types")
    etype = types.pop()
    cat = category_for(etype, category)
    add_codes(rows, region, cat, etype)
    meta = {"entity_type": etype, "twin_category": cat, "source_format": "ngsi-ld", "rows": len(rows),
            "region": region, **extent.meta()}
    return IngestResult(rows_to_table(rows, meta), meta, warnings)
