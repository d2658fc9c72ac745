"""The Taipei City parking feed ``TCMSV_alldesc.json``: one OffStreetParking row per car park, TWD97
(EPSG:3826) metres turned into WGS84 by pyproj, string counts normalised to numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.errors import IngestError
from connectors.ingest.common import Extent, IngestResult, add_codes, load_json, rows_to_table


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
    doc = load_json(path, "Taipei parking feed")
    try:
        parks = doc["data"]["park"]
        updated = doc["data"].get("UPDATETIME")
    except (TypeError, KeyError) as exc:
        raise IngestError(f"{path.name}: expected {{'data': {{'park': [...]}}}}", code="ingest_malformed_feed") from exc
    if not isinstance(parks, list) or not parks:
        raise IngestError(f"{path.name}: no car parks in data.park", code="ingest_empty")
    to_wgs84 = Transformer.from_crs("EPSG:3826", "EPSG:4326", always_xy=True)
    extent = Extent()
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
    add_codes(rows, region, "building_structure", "OffStreetParking")
    meta = {"entity_type": "OffStreetParking", "twin_category": "building_structure",
            "source_format": "taipei-tcmsv", "rows": len(rows), "region": region, "source_updated": updated,
            "units": {"total_car": "spaces", "total_motor": "spaces", "lon": "degree", "lat": "degree"},
            **extent.meta()}
    return IngestResult(rows_to_table(rows, meta), meta, warnings)


