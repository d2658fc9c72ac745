"""Ingest twin-entity data into Arrow tables: CSV (streamed), GeoJSON FeatureCollections, NGSI-LD /
NGSI-v2 entities (FIWARE Smart Data Models) and the Taipei parking feed.

Every reader returns (or writes) an Arrow table with the asset-level facts in its schema metadata
(see ``connectors.tables``): ``entity_type``, ``twin_category``, ``source_format``, ``bbox``
``[min_lon, min_lat, max_lon, max_lat]`` (WGS84), ``time_start``/``time_end`` and ``rows``.
Rows keep the provider's id in ``source_id``; when a region is given an ``entity_code`` column
(see ``twinspace.entity_codes``) is added. Geometry becomes ``lon``/``lat`` (centroid) plus a
``geometry`` column holding the GeoJSON text.

No network I/O; JSON inputs are read whole, CSV is streamed block by block.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from twinspace.entity_codes import TWIN_CATEGORIES, entity_code
from connectors.errors import IngestError
from connectors.tables import with_meta, write_batches

Progress = Callable[[int, int], None]  # (done, total) in bytes

# Default twin category for common Smart Data Models types (override with --category).
DEFAULT_CATEGORY = {
    "Building": "building_structure", "BuildingType": "building_structure", "BuildingOperation": "management_entity",
    "OffStreetParking": "building_structure", "OnStreetParking": "building_structure",
    "ParkingGroup": "management_entity", "ParkingSpot": "building_structure", "ParkingAccess": "building_structure",
    "ParkingLot": "building_structure", "Road": "building_structure", "RoadSegment": "building_structure",
    "Junction": "goods_equipment", "Pipe": "goods_equipment", "WaterPipe": "goods_equipment",
    "Valve": "goods_equipment", "Pump": "goods_equipment", "Tank": "goods_equipment",
    "Reservoir": "natural_entity", "WaterNetwork": "management_entity",
    "WaterDistributionNetwork": "management_entity", "Streetlight": "goods_equipment",
    "StreetlightControlCabinet": "goods_equipment", "StreetlightFeeder": "goods_equipment",
    "StreetlightGroup": "management_entity", "StreetlightModel": "goods_equipment",
    "Device": "goods_equipment", "DeviceModel": "goods_equipment", "DeviceMeasurement": "goods_equipment",
    "EVChargingStation": "goods_equipment", "Vehicle": "vehicle", "FleetVehicle": "vehicle",
    "VehicleModel": "vehicle", "Garden": "natural_entity", "GreenspaceRecord": "natural_entity",
    "Person": "natural_person", "Organization": "legal_person", "AnonymousCommuterId": "natural_person",
}
TIME_FIELDS = ("dateObserved", "observedAt", "dateModified", "dateCreated", "modifiedAt", "createdAt",
               "dateLastReported", "date", "timestamp", "time")
NGSI_LD_ATTR_TYPES = {"Property", "Relationship", "GeoProperty", "LanguageProperty", "VocabProperty",
                      "ListProperty", "ListRelationship", "JsonProperty"}
GEOJSON_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                 "GeometryCollection"}


@dataclass
class IngestResult:
    table: pa.Table | None
    meta: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None
    content_hash: str | None = None


# --------------------------------------------------------------------------- helpers
def _load_json(path: Path, what: str) -> Any:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror}", code="ingest_unreadable") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path.name}: {what} must be UTF-8 (JSON, RFC 8259); invalid byte at offset "
                          f"{exc.start}", code="ingest_bad_encoding") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                          code="ingest_malformed_json") from exc


def _positions(coords: Any) -> list[tuple[float, float]]:
    """All (lon, lat) positions of a GeoJSON coordinates array."""
    if isinstance(coords, (list, tuple)) and len(coords) >= 2 and all(isinstance(c, (int, float)) and
                                                                       not isinstance(c, bool) for c in coords[:2]):
        return [(float(coords[0]), float(coords[1]))]
    if isinstance(coords, (list, tuple)):
        out: list[tuple[float, float]] = []
        for c in coords:
            out.extend(_positions(c))
        return out
    raise ValueError("coordinates must be nested arrays of numbers")


def geometry_positions(geom: Any) -> list[tuple[float, float]]:
    if not isinstance(geom, dict) or geom.get("type") not in GEOJSON_TYPES:
        raise ValueError("not a GeoJSON geometry (needs a 'type' among Point, Polygon, ...)")
    if geom["type"] == "GeometryCollection":
        pts: list[tuple[float, float]] = []
        for g in geom.get("geometries") or []:
            pts.extend(geometry_positions(g))
        return pts
    if "coordinates" not in geom:
        raise ValueError(f"{geom['type']} geometry has no 'coordinates'")
    pts = _positions(geom["coordinates"])
    if not pts:
        raise ValueError("geometry has no positions")
    for lon, lat in pts:
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError(f"position ({lon}, {lat}) is outside WGS84 lon/lat ranges")
    return pts


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


class _Extent:
    def __init__(self) -> None:
        self.bbox: list[float] | None = None
        self.t0: datetime | None = None
        self.t1: datetime | None = None

    def add_point(self, lon: float, lat: float) -> None:
        if self.bbox is None:
            self.bbox = [lon, lat, lon, lat]
        else:
            b = self.bbox
            b[0], b[1], b[2], b[3] = min(b[0], lon), min(b[1], lat), max(b[2], lon), max(b[3], lat)

    def add_time(self, dt: datetime | None) -> None:
        if dt is None:
            return
        self.t0 = dt if self.t0 is None or dt < self.t0 else self.t0
        self.t1 = dt if self.t1 is None or dt > self.t1 else self.t1

    def meta(self) -> dict[str, Any]:
        return {"bbox": [round(v, 7) for v in self.bbox] if self.bbox else None,
                "time_start": self.t0.isoformat() if self.t0 else None,
                "time_end": self.t1.isoformat() if self.t1 else None}


def _column(values: list[Any]) -> pa.Array:
    """Infer one Arrow type per column; mixed or nested values become JSON text."""
    kinds = set()
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool):
            kinds.add("bool")
        elif isinstance(v, int):
            kinds.add("int")
        elif isinstance(v, float):
            kinds.add("float")
        elif isinstance(v, str):
            kinds.add("str")
        else:
            kinds.add("json")
    if not kinds:
        return pa.array(values, type=pa.string())
    if kinds == {"bool"}:
        return pa.array(values, type=pa.bool_())
    if kinds == {"int"}:
        if all(v is None or -(2**63) <= v < 2**63 for v in values):
            return pa.array(values, type=pa.int64())
    if kinds <= {"int", "float"}:
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    if kinds == {"str"}:
        return pa.array(values, type=pa.string())
    return pa.array([None if v is None else v if isinstance(v, str)
                     else json.dumps(v, ensure_ascii=False, sort_keys=True) for v in values], type=pa.string())


def rows_to_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> pa.Table:
    names: list[str] = []
    seen: set[str] = set()
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                names.append(k)
    arrays = [_column([r.get(n) for r in rows]) for n in names]
    table = pa.Table.from_arrays(arrays, names=names) if names else pa.table({})
    return table.replace_schema_metadata(with_meta(table.schema, meta).metadata)


def _add_codes(rows: list[dict[str, Any]], region: str | None, category: str, entity_type: str) -> None:
    if not region:
        return
    for i, r in enumerate(rows):
        sid = r.get("source_id")
        if sid is None:
            raise IngestError(f"row {i}: no id, cannot build an entity code", code="ingest_missing_id")
        try:
            r["entity_code"] = entity_code(region, category, entity_type, str(sid))
        except ValueError as exc:
            raise IngestError(f"row {i}: {exc}", code="ingest_bad_entity_code") from exc


def _category(entity_type: str, category: str | None) -> str:
    cat = category or DEFAULT_CATEGORY.get(entity_type, "other")
    if cat not in TWIN_CATEGORIES:
        raise IngestError(f"twin category {cat!r} is not one of {', '.join(TWIN_CATEGORIES)}",
                          code="ingest_bad_category")
    return cat


# --------------------------------------------------------------------------- NGSI
def _unwrap_attr(value: Any) -> tuple[Any, bool]:
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


def ngsi_entity_to_row(entity: Any, index: int, extent: _Extent) -> tuple[str, dict[str, Any]]:
    if not isinstance(entity, dict):
        raise IngestError(f"entity #{index}: expected a JSON object, got {type(entity).__name__}",
                          code="ingest_malformed_ngsi")
    eid, etype = entity.get("id"), entity.get("type")
    if not isinstance(eid, str) or not eid:
        raise IngestError(f"entity #{index}: missing string 'id'", code="ingest_malformed_ngsi")
    if not isinstance(etype, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", etype):
        raise IngestError(f"entity #{index} ({eid}): missing or invalid 'type'", code="ingest_malformed_ngsi")
    row: dict[str, Any] = {"source_id": eid}
    for key, raw in entity.items():
        if key in ("id", "type", "@context"):
            continue
        value, is_geo = _unwrap_attr(raw)
        if isinstance(value, dict) and "@value" in value:  # {"@type": "DateTime", "@value": "..."}
            value = value["@value"]
        if key == "location" or is_geo:
            try:
                pts = geometry_positions(value)
            except ValueError as exc:
                raise IngestError(f"entity #{index} ({eid}): attribute {key!r}: {exc}",
                                  code="ingest_malformed_geometry") from exc
            for lon, lat in pts:
                extent.add_point(lon, lat)
            if key == "location":
                row["lon"] = sum(p[0] for p in pts) / len(pts)
                row["lat"] = sum(p[1] for p in pts) / len(pts)
                row["geometry"] = json.dumps(value, sort_keys=True)
                continue
        if key in TIME_FIELDS:
            extent.add_time(_parse_time(value))
        row[key] = value
    for key in ("observedAt", "modifiedAt", "createdAt"):  # NGSI-LD temporal members on attributes
        for raw in entity.values():
            if isinstance(raw, dict) and key in raw:
                extent.add_time(_parse_time(raw[key]))
    return etype, row


def ingest_ngsi(paths: list[Path] | Path, *, entity_type: str | None = None, category: str | None = None,
                region: str | None = None) -> IngestResult:
    """NGSI-LD (normalized or key-values) or NGSI-v2 entities: one entity, an array, or several files."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    extent = _Extent()
    rows: list[dict[str, Any]] = []
    types: set[str] = set()
    n = 0
    for path in paths:
        path = Path(path)
        doc = _load_json(path, "NGSI-LD")
        entities = doc if isinstance(doc, list) else [doc]
        if not entities:
            raise IngestError(f"{path.name}: no entities", code="ingest_empty")
        for ent in entities:
            etype, row = ngsi_entity_to_row(ent, n, extent)
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
    cat = _category(etype, category)
    _add_codes(rows, region, cat, etype)
    meta = {"entity_type": etype, "twin_category": cat, "source_format": "ngsi-ld", "rows": len(rows),
            "region": region, **extent.meta()}
    return IngestResult(rows_to_table(rows, meta), meta)


# --------------------------------------------------------------------------- GeoJSON
def ingest_geojson(path: Path, *, entity_type: str | None = None, category: str | None = None,
                   region: str | None = None, id_property: str = "id") -> IngestResult:
    path = Path(path)
    doc = _load_json(path, "GeoJSON")
    if not isinstance(doc, dict) or doc.get("type") not in ("FeatureCollection", "Feature"):
        raise IngestError(f"{path.name}: a GeoJSON FeatureCollection (or Feature) is expected",
                          code="ingest_malformed_geojson")
    features = doc.get("features") if doc["type"] == "FeatureCollection" else [doc]
    if not isinstance(features, list):
        raise IngestError(f"{path.name}: 'features' must be an array", code="ingest_malformed_geojson")
    extent = _Extent()
    rows: list[dict[str, Any]] = []
    types: set[str] = set()
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
        geom, _ = _unwrap_attr(feat.get("geometry"))  # Smart Data Models wrap it as a GeoProperty
        if geom is not None:
            try:
                pts = geometry_positions(geom)
            except ValueError as exc:
                raise IngestError(f"feature #{i}: geometry: {exc}", code="ingest_malformed_geometry") from exc
            for lon, lat in pts:
                extent.add_point(lon, lat)
            row["lon"] = sum(p[0] for p in pts) / len(pts)
            row["lat"] = sum(p[1] for p in pts) / len(pts)
            row["geometry"] = json.dumps(geom, sort_keys=True)
        ftype = entity_type
        for key, raw in props.items():
            if key == "type" and isinstance(raw, str):
                ftype = ftype or raw
                continue
            value, _ = _unwrap_attr(raw)
            if key in TIME_FIELDS:
                extent.add_time(_parse_time(value))
            row[key] = value
        types.add(ftype or "Feature")
        rows.append(row)
    if not rows:
        raise IngestError(f"{path.name}: the FeatureCollection is empty", code="ingest_empty")
    if len(types) > 1 and not entity_type:
        raise IngestError(f"features mix entity types {', '.join(sorted(types))}; pass --entity-type",
                          code="ingest_mixed_types")
    etype = entity_type or types.pop()
    cat = _category(etype, category)
    if region and any(r["source_id"] is None for r in rows):
        raise IngestError("every feature needs an id (Feature.id or properties.id) to build entity codes",
                          code="ingest_missing_id")
    _add_codes(rows, region, cat, etype)
    meta = {"entity_type": etype, "twin_category": cat, "source_format": "geojson", "rows": len(rows),
            "region": region, **extent.meta()}
    return IngestResult(rows_to_table(rows, meta), meta)


# --------------------------------------------------------------------------- Taipei parking
def _num(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    f = _num(value)
    return None if f is None else int(f)


def ingest_taipei_parking(path: Path, *, region: str = "TW-TPE") -> IngestResult:
    """Taipei ``TCMSV_alldesc.json`` → one OffStreetParking row per car park (TWD97 → WGS84 by pyproj)."""
    from pyproj import Transformer

    path = Path(path)
    doc = _load_json(path, "Taipei parking feed")
    try:
        parks = doc["data"]["park"]
        updated = doc["data"].get("UPDATETIME")
    except (TypeError, KeyError) as exc:
        raise IngestError(f"{path.name}: expected {{'data': {{'park': [...]}}}}", code="ingest_malformed_feed") from exc
    if not isinstance(parks, list) or not parks:
        raise IngestError(f"{path.name}: no car parks in data.park", code="ingest_empty")
    to_wgs84 = Transformer.from_crs("EPSG:3826", "EPSG:4326", always_xy=True)
    extent = _Extent()
    rows = []
    warnings = []
    for i, p in enumerate(parks):
        if not isinstance(p, dict) or not p.get("id"):
            raise IngestError(f"car park #{i}: missing id", code="ingest_malformed_feed")
        x, y = _num(p.get("tw97x")), _num(p.get("tw97y"))
        lon = lat = None
        if x and y:
            lon, lat = to_wgs84.transform(x, y)
            if 119 < lon < 123 and 21 < lat < 26:
                extent.add_point(lon, lat)
            else:
                warnings.append(f"car park {p['id']}: TWD97 ({x}, {y}) falls outside Taiwan; coordinates dropped")
                lon = lat = None
        entrances = [e for e in ((p.get("EntranceCoord") or {}).get("EntrancecoordInfo") or [])
                     if isinstance(e, dict) and _num(e.get("Xcod")) and _num(e.get("Ycod"))]
        rows.append({
            "source_id": str(p["id"]),
            "name": p.get("name"),
            "district": p.get("area"),
            "address": p.get("address"),
            "operator_type": p.get("type2"),
            "charge_type": p.get("type"),
            "telephone": p.get("tel"),
            "fare_description": p.get("payex"),
            "service_time": p.get("serviceTime"),
            "total_car": _int(p.get("totalcar")),
            "total_motor": _int(p.get("totalmotor")),
            "total_bike": _int(p.get("totalbike")),
            "total_bus": _int(p.get("totalbus")),
            "total_large_motor": _int(p.get("totallargemotor")),
            "handicap_spaces": _int(p.get("Handicap_First")),
            "pregnancy_spaces": _int(p.get("Pregnancy_First")),
            "charging_spaces": _int(p.get("ChargingStation")),
            "entrances": len(entrances),
            "lon": lon, "lat": lat,
        })
    _add_codes(rows, region, "building_structure", "OffStreetParking")
    meta = {"entity_type": "OffStreetParking", "twin_category": "building_structure",
            "source_format": "taipei-tcmsv", "rows": len(rows), "region": region, "source_updated": updated,
            "units": {"total_car": "spaces", "total_motor": "spaces", "lon": "degree", "lat": "degree"},
            **extent.meta()}
    return IngestResult(rows_to_table(rows, meta), meta, warnings)


# --------------------------------------------------------------------------- CSV (streaming)
_EXPECTED_RE = re.compile(r"Expected (\d+) columns?, got (\d+)")


def _csv_error(exc: Exception, path: Path, bad_row: dict[str, Any]) -> IngestError:
    msg = str(exc)
    if bad_row:
        return IngestError(f"{path.name}: malformed CSV at line {bad_row.get('number')}: expected "
                           f"{bad_row['expected']} columns, got {bad_row['actual']}", code="ingest_malformed_csv")
    if "invalid UTF8" in msg or "UTF8" in msg or "decode" in msg.lower():
        return IngestError(f"{path.name}: text is not valid in the declared encoding; pass --encoding "
                           "(e.g. big5, cp950, latin-1)", code="ingest_bad_encoding")
    m = _EXPECTED_RE.search(msg)
    if m:
        return IngestError(f"{path.name}: malformed CSV: expected {m.group(1)} columns, got {m.group(2)}",
                           code="ingest_malformed_csv")
    first = msg.split(":", 2)
    return IngestError(f"{path.name}: CSV could not be read ({': '.join(first[:2])[:200]})",
                       code="ingest_malformed_csv")


def ingest_csv(path: Path, out_path: Path | None = None, *, delimiter: str = ",", encoding: str = "utf8",
               require_columns: list[str] | None = None, column_types: dict[str, str] | None = None,
               entity_type: str = "Record", category: str | None = None, region: str | None = None,
               id_column: str | None = None, time_column: str | None = None, lon_column: str = "lon",
               lat_column: str = "lat", block_size: int = 4 << 20, on_progress: Progress | None = None
               ) -> IngestResult:
    """Stream a CSV into an Arrow table (or, with ``out_path``, straight into an IPC file, block by
    block, so files larger than memory pass through). ``column_types`` maps names to Arrow types
    (``int64``, ``float64``, ``string``, ``timestamp[s]``...)."""
    import pyarrow.compute as pc

    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file", code="ingest_unreadable")
    total = path.stat().st_size
    bad_row: dict[str, Any] = {}

    def on_invalid(row) -> str:
        bad_row.update(number=row.number, expected=row.expected_columns, actual=row.actual_columns)
        return "error"

    try:
        types = {k: pa.type_for_alias(v) for k, v in (column_types or {}).items()}
    except (ValueError, KeyError) as exc:
        raise IngestError(f"unknown column type in {column_types}: {exc}", code="ingest_bad_type") from exc
    cat = _category(entity_type, category)
    try:
        reader = pacsv.open_csv(
            str(path), read_options=pacsv.ReadOptions(encoding=encoding, block_size=block_size),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError, LookupError, UnicodeDecodeError) as exc:
        raise _csv_error(exc, path, bad_row) from exc
    schema = reader.schema
    names = schema.names
    undecodable = [f.name for f in schema if pa.types.is_binary(f.type) and f.name not in types]
    if undecodable:  # pyarrow infers binary when the text is not valid in the declared encoding
        raise IngestError(f"{path.name}: column(s) {', '.join(undecodable)} are not valid {encoding} text; pass "
                          "--encoding (e.g. big5, cp950, latin-1)", code="ingest_bad_encoding")
    missing = [c for c in (require_columns or []) + ([id_column] if id_column else []) if c not in names]
    if missing:
        raise IngestError(f"{path.name}: declared column(s) missing: {', '.join(missing)} "
                          f"(the file has: {', '.join(names)})", code="ingest_missing_columns")
    if region and not id_column:
        raise IngestError("entity codes need --id-column", code="ingest_missing_id")
    extent = _Extent()
    rows = 0

    def add_codes(batch: pa.RecordBatch) -> pa.RecordBatch:
        if not region:
            return batch
        ids = batch.column(id_column).to_pylist()
        try:
            codes = [None if v is None else entity_code(region, cat, entity_type, str(v)) for v in ids]
        except ValueError as exc:
            raise IngestError(str(exc), code="ingest_bad_entity_code") from exc
        return pa.RecordBatch.from_arrays(list(batch.columns) + [pa.array(codes, pa.string())],
                                          names=list(batch.schema.names) + ["entity_code"])

    def batches():
        nonlocal rows
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
                raise _csv_error(exc, path, bad_row) from exc
            rows += batch.num_rows
            if lon_column in names and lat_column in names:
                lo, la = batch.column(lon_column), batch.column(lat_column)
                if pa.types.is_floating(lo.type) or pa.types.is_integer(lo.type):
                    mm_lo, mm_la = pc.min_max(lo), pc.min_max(la)
                    if mm_lo["min"].is_valid and mm_la["min"].is_valid:
                        extent.add_point(mm_lo["min"].as_py(), mm_la["min"].as_py())
                        extent.add_point(mm_lo["max"].as_py(), mm_la["max"].as_py())
            if time_column:
                col = batch.column(time_column)
                if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
                    mm = pc.min_max(col)
                    for v in (mm["min"].as_py(), mm["max"].as_py()):
                        if v is not None:
                            v = v if isinstance(v, datetime) else datetime(v.year, v.month, v.day)
                            extent.add_time(v if v.tzinfo else v.replace(tzinfo=timezone.utc))
                else:
                    for v in col.to_pylist():
                        extent.add_time(_parse_time(v))
            if on_progress:
                on_progress(min(reader_bytes(), total), total)
            yield add_codes(batch)

    def reader_bytes() -> int:
        try:
            return reader.stats.num_bytes_read  # type: ignore[attr-defined]
        except AttributeError:
            return 0

    out_schema = schema.append(pa.field("entity_code", pa.string())) if region else schema
    base_meta = {"entity_type": entity_type, "twin_category": cat, "source_format": "csv", "region": region}
    if out_path is not None:
        digest = write_batches(Path(out_path), with_meta(out_schema, base_meta), batches())
        meta = {**base_meta, "rows": rows, **extent.meta()}
        # rewrite only the footer metadata is not possible in IPC; record it in a sidecar-free way by
        # re-streaming the (already converted) file with final metadata — cheap relative to parsing.
        from connectors.tables import iter_batches
        schema2, it = iter_batches(Path(out_path))
        final = Path(str(out_path) + ".final")
        write_batches(final, with_meta(schema2, meta), it)
        final.replace(out_path)
        from connectors.tables import file_sha256
        digest = file_sha256(Path(out_path))
        return IngestResult(None, meta, path=Path(out_path), content_hash=digest)
    table = pa.Table.from_batches(list(batches()), schema=out_schema)
    meta = {**base_meta, "rows": rows, **extent.meta()}
    return IngestResult(table.replace_schema_metadata(with_meta(table.schema, meta).metadata), meta)


def detect_format(path: Path) -> str:
    name = Path(path).name.lower()
    if name.endswith(".csv") or name.endswith(".tsv"):
        return "csv"
    if name.startswith("tcmsv_"):
        return "taipei"
    if name.endswith(".geojson") or "geojson" in name:
        return "geojson"
    if name.endswith((".jsonld", ".json")):
        return "ngsi"
    raise IngestError(f"cannot tell the format of {path.name}; pass --format", code="ingest_unknown_format")
