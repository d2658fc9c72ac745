"""What every reader shares: the result type, JSON loading with clear errors, the asset extent
(bbox, time coverage), Arrow column inference, twin categories and entity codes."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from twinspace.entity_codes import TWIN_CATEGORIES, entity_code
from connectors.errors import IngestError
from connectors.tables import with_meta

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

# JSON nested deeper than this is refused before parsing: Python's json module would otherwise
# hit RecursionError (a crash, not an error message) on hostile or broken input.
MAX_JSON_DEPTH = 200


@dataclass
class IngestResult:
    table: pa.Table | None
    meta: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None
    content_hash: str | None = None


def _json_depth(text: str) -> tuple[int, int]:
    """(maximum nesting depth, offset where it is first exceeded) ignoring brackets inside strings."""
    depth = deepest = 0
    in_str = esc = False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest, i
        elif ch in "]}":
            depth -= 1
    return deepest, -1


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def load_json(path: Path, what: str) -> Any:
    """Read a whole JSON file; every way it can be wrong is an IngestError naming line and column."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror}", code="ingest_unreadable") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise IngestError(f"{path.name}: {what} must be UTF-8 (JSON, RFC 8259); byte 0x{raw[exc.start]:02x} at "
                          f"line {line} column {col} (offset {exc.start}) is not valid UTF-8. Re-save the file "
                          "as UTF-8.", code="ingest_bad_encoding") from exc
    depth, at = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        line, col = _line_col(text, at)
        raise IngestError(f"{path.name}: JSON nested deeper than {MAX_JSON_DEPTH} levels (at line {line} column "
                          f"{col}); twin-entity data is never that deep, so the file is refused",
                          code="ingest_too_deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                          code="ingest_malformed_json") from exc
    except RecursionError as exc:  # belt and braces: the depth scan above should catch it first
        raise IngestError(f"{path.name}: JSON nested too deeply", code="ingest_too_deep") from exc


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


class Extent:
    """Bounding box and time coverage of an asset, grown row by row or batch by batch."""

    def __init__(self) -> None:
        self.bbox: list[float] | None = None
        self.t0: datetime | None = None
        self.t1: datetime | None = None

    def add_bounds(self, minx: float, miny: float, maxx: float, maxy: float) -> None:
        if self.bbox is None:
            self.bbox = [minx, miny, maxx, maxy]
        else:
            b = self.bbox
            b[0], b[1], b[2], b[3] = min(b[0], minx), min(b[1], miny), max(b[2], maxx), max(b[3], maxy)

    def add_point(self, lon: float, lat: float) -> None:
        self.add_bounds(lon, lat, lon, lat)

    def add_time(self, dt: datetime | None) -> None:
        if dt is None:
            return
        self.t0 = dt if self.t0 is None or dt < self.t0 else self.t0
        self.t1 = dt if self.t1 is None or dt > self.t1 else self.t1

    def meta(self) -> dict[str, Any]:
        # Rounded outwards to 1e-7 degree (~1 cm): the box still contains every point.
        box = None
        if self.bbox:
            w, s, e, n = self.bbox
            lo = lambda v: math.floor(round(v * 1e7, 3)) / 1e7  # noqa: E731
            hi = lambda v: math.ceil(round(v * 1e7, 3)) / 1e7  # noqa: E731
            box = [lo(w), lo(s), hi(e), hi(n)]
        return {"bbox": box,
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


def add_codes(rows: list[dict[str, Any]], region: str | None, category: str, entity_type: str) -> None:
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


def category_for(entity_type: str, category: str | None) -> str:
    cat = category or DEFAULT_CATEGORY.get(entity_type, "other")
    if cat not in TWIN_CATEGORIES:
        raise IngestError(f"twin category {cat!r} is not one of {', '.join(TWIN_CATEGORIES)}",
                          code="ingest_bad_category")
    return cat
