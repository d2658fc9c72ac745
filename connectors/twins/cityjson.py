"""CityJSON 2.0 reader (https://www.cityjson.org/specs/2.0.1/), written on the spec rather than on
cjio so that every defect is reported with the city object and geometry it sits in.

What it gives per city object: its CityGML type mapped to a twin category, a unified entity code,
its attributes, the highest LoD, a 2D footprint (shapely; GroundSurface semantics when present,
else the union of all projected surfaces), the footprint area in m² (geodesic, on WGS84), the
centroid, validity, the height (``measuredHeight`` or the z-range of the geometry) and storeys.
Coordinates are de-quantised with ``transform`` and moved to WGS84 with pyproj.

Refused with an ``IngestError`` that names the object: another ``version``, a vertex index out of
range, malformed boundaries, an unknown geometry template, and a file without a CRS (unless the
caller declares one: a file that does not say where it is cannot be placed on a map honestly).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import shapely
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError
from shapely.geometry import Polygon, mapping

from twinspace.entity_codes import REGION_RE, entity_code
from connectors.errors import IngestError
from connectors.ingest import rows_to_table
from connectors.twins.geometry import DEPTH, check_indices, footprint, geometry_parts

SUPPORTED_VERSIONS = ("2.0", "2.0.0", "2.0.1")
GEOD = Geod(ellps="WGS84")

# CityGML 3.0 / CityJSON 2.0 city object types -> the eight twin categories.
TYPE_CATEGORY = {
    **{t: "building_structure" for t in (
        "Building", "BuildingPart", "BuildingInstallation", "BuildingConstructiveElement", "BuildingFurniture",
        "BuildingRoom", "BuildingStorey", "BuildingUnit", "Bridge", "BridgePart", "BridgeInstallation",
        "BridgeConstructiveElement", "BridgeRoom", "BridgeFurniture", "Tunnel", "TunnelPart", "TunnelInstallation",
        "TunnelConstructiveElement", "TunnelHollowSpace", "TunnelFurniture", "Road", "Railway", "TransportSquare",
        "Waterway", "OtherConstruction")},
    **{t: "natural_entity" for t in ("PlantCover", "SolitaryVegetationObject", "WaterBody", "TINRelief", "LandUse")},
    "CityFurniture": "goods_equipment",
    "CityObjectGroup": "management_entity",
    "GenericCityObject": "other",
}
# Top-level types of CityJSON 2.0 ("1st-level" city objects); the others need a parent.
SECOND_LEVEL = {"BuildingPart", "BuildingInstallation", "BuildingConstructiveElement", "BuildingFurniture",
                "BuildingRoom", "BuildingStorey", "BuildingUnit", "BridgePart", "BridgeInstallation",
                "BridgeConstructiveElement", "BridgeRoom", "BridgeFurniture", "TunnelPart", "TunnelInstallation",
                "TunnelConstructiveElement", "TunnelHollowSpace", "TunnelFurniture"}
_CRS_URL = re.compile(r"(?:/crs/|crs:)([A-Za-z]+)(?:/[^/]*/|::?)(\d+)$")


@dataclass
class CityObject:
    """One city object, ready to become a table row (all coordinates WGS84 except ``footprint_src``)."""

    id: str
    type: str
    category: str
    code: str
    attributes: dict[str, Any]
    lod: str | None
    geometry_types: list[str]
    footprint_src: Polygon | None          # in the file's CRS (x, y)
    footprint: Any | None                  # shapely geometry, WGS84 lon/lat
    area_m2: float | None
    lon: float | None
    lat: float | None
    valid: bool | None
    z_min: float | None
    z_max: float | None
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)

    @property
    def height(self) -> tuple[float | None, str | None]:
        h = self.attributes.get("measuredHeight")
        if isinstance(h, (int, float)) and not isinstance(h, bool) and math.isfinite(h):
            return float(h), "measuredHeight"
        if self.z_min is not None and self.z_max is not None:
            return round(self.z_max - self.z_min, 3), "geometry z-range"
        return None, None


@dataclass
class CityModel:
    path: str
    version: str
    crs: str
    objects: list[CityObject]
    bbox: list[float] | None               # WGS84 [min_lon, min_lat, max_lon, max_lat]
    region: str
    warnings: list[str] = field(default_factory=list)

    def of_type(self, city_type: str) -> list[CityObject]:
        return [o for o in self.objects if o.type == city_type]


# --------------------------------------------------------------------------- reading
def _fail(msg: str, code: str) -> IngestError:
    return IngestError(msg, code=code)


def parse_crs(reference: str | None, declared: str | None, where: str) -> CRS:
    """The horizontal CRS of the file (``metadata.referenceSystem``) or the caller's declaration."""
    text = declared or reference
    if not text:
        raise _fail(f"{where}: no metadata.referenceSystem, so the model cannot be placed on a map; declare the "
                    "CRS (e.g. crs='EPSG:7415' / --crs EPSG:7415) if you know it", "cityjson_missing_crs")
    m = _CRS_URL.search(text.strip())
    spec = f"{m.group(1).upper()}:{m.group(2)}" if m else text.strip()
    try:
        crs = CRS.from_user_input(spec)
    except CRSError as exc:
        raise _fail(f"{where}: reference system {text!r} is not a CRS pyproj knows ({exc})", "cityjson_bad_crs") from exc
    if crs.is_compound:  # e.g. EPSG:7415 = RD New (EPSG:28992) + NAP height: x, y are in the horizontal part
        crs = crs.sub_crs_list[0]
    return crs


def load_document(path: Path) -> dict[str, Any]:
    """A CityJSON file, or a CityJSON Text Sequence (``.city.jsonl``: a header line, then one
    CityJSONFeature per line with its own vertices), merged into one document."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}", "ingest_unreadable") from exc
    name = Path(path).name
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(f"{name}: CityJSON must be UTF-8; invalid byte at offset {exc.start}", "ingest_bad_encoding") from exc
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        if len(lines) > 1 and (name.endswith(".jsonl") or '"CityJSONFeature"' in lines[1]):
            return merge_sequence([json.loads(ln) for ln in lines], name)
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                    "ingest_malformed_json") from exc


def _offset(node: Any, depth: int, base: int, where: str) -> Any:
    if depth == 0:
        if not isinstance(node, int) or isinstance(node, bool):
            raise _fail(f"{where}: boundaries hold {type(node).__name__} where a vertex index is expected",
                        "cityjson_malformed_geometry")
        return node + base
    if not isinstance(node, list):
        raise _fail(f"{where}: boundaries are nested {depth} level(s) too shallow", "cityjson_malformed_geometry")
    return [_offset(c, depth - 1, base, where) for c in node]


def merge_sequence(items: list[Any], name: str) -> dict[str, Any]:
    """CityJSONSeq → one CityJSON document: each feature's vertex indices move past the vertices
    merged before it (vertex indices of a feature are local to it; templates stay shared)."""
    head = items[0]
    if not isinstance(head, dict) or head.get("type") != "CityJSON":
        raise _fail(f"{name}: the first line of a CityJSON sequence must be the CityJSON header", "cityjson_malformed")
    doc = {**head, "CityObjects": dict(head.get("CityObjects") or {}), "vertices": list(head.get("vertices") or [])}
    for n, feat in enumerate(items[1:], start=2):
        if not isinstance(feat, dict) or feat.get("type") != "CityJSONFeature":
            raise _fail(f"{name}: line {n} is not a CityJSONFeature", "cityjson_malformed")
        verts = feat.get("vertices") or []
        base = len(doc["vertices"])
        for oid, co in (feat.get("CityObjects") or {}).items():
            if oid in doc["CityObjects"]:
                raise _fail(f"{name}: line {n}: CityObject {oid!r} appears twice", "cityjson_duplicate_object")
            if not isinstance(co, dict):
                raise _fail(f"{name}: line {n}: CityObject {oid!r} is not an object", "cityjson_malformed")
            geoms = []
            for gi, g in enumerate(co.get("geometry") or []):
                where = f"{name}: line {n}: CityObject {oid!r} geometry #{gi}"
                gtype = g.get("type") if isinstance(g, dict) else None
                depth = 1 if gtype == "GeometryInstance" else DEPTH.get(gtype)
                if depth is None:
                    raise _fail(f"{where}: unknown geometry type {gtype!r}", "cityjson_malformed_geometry")
                check_indices(g.get("boundaries"), depth, len(verts), where)
                geoms.append({**g, "boundaries": _offset(g["boundaries"], depth, base, where)})
            doc["CityObjects"][oid] = {**co, "geometry": geoms} if "geometry" in co else co
        doc["vertices"].extend(verts)
    return doc


def read_cityjson(source: Path | dict[str, Any], *, region: str, crs: str | None = None,
                  name: str | None = None) -> CityModel:
    """Read and check a whole CityJSON 2.0 document; raises before returning anything if any object
    is broken (so a caller never publishes part of a model)."""
    doc = source if isinstance(source, dict) else load_document(Path(source))
    where = name or (Path(source).name if not isinstance(source, dict) else "CityJSON document")
    if not isinstance(doc, dict) or doc.get("type") != "CityJSON":
        raise _fail(f"{where}: not a CityJSON document (type must be 'CityJSON')", "cityjson_malformed")
    version = doc.get("version")
    if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
        raise _fail(f"{where}: CityJSON version {version!r} is not supported (this reader implements 2.0; "
                    "upgrade older files with `cjio file.json upgrade save out.json`)", "cityjson_unsupported_version")
    tr = doc.get("transform")
    try:
        scale = np.asarray(tr["scale"], dtype=float).reshape(3)
        translate = np.asarray(tr["translate"], dtype=float).reshape(3)
    except (TypeError, KeyError, ValueError) as exc:
        raise _fail(f"{where}: 'transform' with three-number 'scale' and 'translate' is required in CityJSON 2.0",
                    "cityjson_malformed") from exc
    raw_vertices = doc.get("vertices")
    try:
        if not isinstance(raw_vertices, list) or any(not isinstance(v, list) or len(v) != 3 for v in raw_vertices):
            raise ValueError("not [x, y, z] triples")
        as_float = np.asarray(raw_vertices, dtype=float).reshape(-1, 3)
        if not np.all(np.isfinite(as_float)) or not np.array_equal(as_float, np.round(as_float)):
            raise ValueError("not integers")  # CityJSON 2.0 vertices are quantised: integers and a transform
        verts = as_float * scale + translate
    except (TypeError, ValueError) as exc:
        raise _fail(f"{where}: 'vertices' must be an array of [x, y, z] integers ({exc})", "cityjson_malformed") from exc
    if not REGION_RE.match(region or ""):
        raise _fail(f"region {region!r} is not an ISO 3166 code such as 'NL' or 'NL-ZH'", "ingest_bad_region")
    cos = doc.get("CityObjects")
    if not isinstance(cos, dict) or not cos:
        raise _fail(f"{where}: no CityObjects", "ingest_empty")
    src_crs = parse_crs((doc.get("metadata") or {}).get("referenceSystem"), crs, where)
    to_wgs84 = Transformer.from_crs(src_crs, "EPSG:4326", always_xy=True)
    grid = float(min(scale[0], scale[1]))

    def lonlat(xy: np.ndarray) -> np.ndarray:
        lon, lat = to_wgs84.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([lon, lat])

    objects: list[CityObject] = []
    ext = [math.inf, math.inf, -math.inf, -math.inf]
    warnings: list[str] = []
    for oid, co in cos.items():
        here = f"{where}: CityObject {oid!r}"
        if not isinstance(co, dict) or not isinstance(co.get("type"), str):
            raise _fail(f"{here}: needs a string 'type'", "cityjson_malformed")
        ctype = co["type"]
        etype = ctype.lstrip("+")  # extension types ("+NoiseBuilding") keep their name without the '+'
        category = TYPE_CATEGORY.get(ctype, "other")
        for rel in ("parents", "children"):
            if not isinstance(co.get(rel) or [], list):
                raise _fail(f"{here}: '{rel}' must be an array of object ids", "cityjson_malformed")
            for ref in co.get(rel) or []:
                if ref not in cos:
                    raise _fail(f"{here}: {rel} refers to {ref!r}, which is not in the file", "cityjson_dangling_reference")
        attrs = co.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise _fail(f"{here}: 'attributes' must be an object", "cityjson_malformed")
        geoms = co.get("geometry") or []
        if not isinstance(geoms, list):
            raise _fail(f"{here}: 'geometry' must be an array", "cityjson_malformed")
        best_lod = None
        parts = []
        for gi, g in enumerate(geoms):
            surfaces, pts, idx = geometry_parts(doc, g, verts, f"{here} geometry #{gi} ({(g or {}).get('type')})")
            lod = str(g.get("lod")) if g.get("lod") is not None else None
            parts.append((lod, surfaces, pts, idx, g["type"]))
            if lod is not None and (best_lod is None or _lod_key(lod) > _lod_key(best_lod)):
                best_lod = lod
        chosen = [p for p in parts if p[0] == best_lod] or parts
        fps = [f for p in chosen if (f := footprint(p[1], p[2], grid)) is not None]
        fp = shapely.union_all(fps) if len(fps) > 1 else (fps[0] if fps else None)
        zs = np.concatenate([p[2][p[3], 2] for p in chosen if p[3]]) if any(p[3] for p in chosen) else None
        try:
            code = entity_code(region, category, etype, oid)
        except ValueError as exc:
            raise _fail(f"{here}: {exc}", "ingest_bad_entity_code") from exc
        objects.append(CityObject(
            id=oid, type=etype, category=category, code=code, attributes=attrs, lod=best_lod,
            geometry_types=[p[4] for p in parts], footprint_src=fp, footprint=None, area_m2=None, lon=None, lat=None,
            valid=None, z_min=float(zs.min()) if zs is not None and zs.size else None,
            z_max=float(zs.max()) if zs is not None and zs.size else None,
            parents=list(co.get("parents") or []), children=list(co.get("children") or [])))
    by_id = {o.id: o for o in objects}
    for o in objects:  # a Building modelled only through its BuildingParts takes their union
        if o.footprint_src is None and o.children:
            kids = [by_id[c].footprint_src for c in o.children if by_id[c].footprint_src is not None]
            if kids:
                o.footprint_src = shapely.union_all(kids)
                zmins = [by_id[c].z_min for c in o.children if by_id[c].z_min is not None]
                zmaxs = [by_id[c].z_max for c in o.children if by_id[c].z_max is not None]
                o.z_min, o.z_max = (min(zmins), max(zmaxs)) if zmins and zmaxs else (None, None)
        fp = o.footprint_src
        if fp is None:
            continue
        o.valid = bool(fp.is_valid)
        if not o.valid:
            warnings.append(f"CityObject {o.id!r}: footprint invalid ({shapely.is_valid_reason(fp)})")
        o.footprint = shapely.transform(fp, lonlat)
        w, s_, e, n = o.footprint.bounds
        if not (all(math.isfinite(v) for v in (w, s_, e, n)) and -180 <= w <= e <= 180 and -90 <= s_ <= n <= 90):
            raise _fail(f"{where}: CityObject {o.id!r} does not fall on the Earth in {src_crs.to_string()} "
                        "(is the CRS right?)", "cityjson_bad_crs")
        o.area_m2 = round(abs(GEOD.geometry_area_perimeter(o.footprint)[0]), 3)
        c = fp.centroid
        o.lon, o.lat = (float(v) for v in to_wgs84.transform(c.x, c.y))
        b = o.footprint.bounds
        ext = [min(ext[0], b[0]), min(ext[1], b[1]), max(ext[2], b[2]), max(ext[3], b[3])]
    bbox = [round(v, 7) for v in ext] if math.isfinite(ext[0]) else None
    return CityModel(path=where, version=str(version), crs=src_crs.to_string(), objects=objects, bbox=bbox,
                     region=region, warnings=warnings)


def _lod_key(lod: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in lod.split("."))
    except ValueError:
        return (-1.0,)


# --------------------------------------------------------------------------- tables
ATTRIBUTE_ALIASES = {
    "storeys": ("storeysAboveGround", "storeys", "numberOfStoreys", "bouwlagen"),
    "year_of_construction": ("yearOfConstruction", "construction_year", "bouwjaar", "oorspronkelijkbouwjaar"),
    "material": ("material", "constructionMaterial", "structure", "roofMaterial"),
}


def _first(attrs: dict[str, Any], names: tuple[str, ...]) -> Any:
    for n in names:
        v = attrs.get(n)
        if v not in (None, ""):
            return v
    return None


def _as_int(v: Any) -> int | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) else None


def objects_table(model: CityModel, city_type: str, *, district_attribute: str | None = None):
    """One asset holds one entity type: the rows of ``city_type`` as an Arrow table, with the catalog
    facts (entity type, twin category, WGS84 bbox, CRS, CityJSON version) in its metadata."""
    objs = model.of_type(city_type)
    if not objs:
        raise IngestError(f"{model.path}: no {city_type} objects (types here: "
                          f"{', '.join(sorted({o.type for o in model.objects}))})", code="ingest_empty")
    rows = []
    ext = [math.inf, math.inf, -math.inf, -math.inf]
    for o in objs:
        h, hsrc = o.height
        a = o.attributes
        rows.append({
            "source_id": o.id, "entity_code": o.code, "cityobject_type": o.type, "lod": o.lod,
            "footprint_area_m2": o.area_m2, "height_m": h, "height_source": hsrc,
            "storeys": _as_int(_first(a, ATTRIBUTE_ALIASES["storeys"])),
            "year_of_construction": _as_int(_first(a, ATTRIBUTE_ALIASES["year_of_construction"])),
            "material": (None if (m := _first(a, ATTRIBUTE_ALIASES["material"])) is None else str(m)),
            "district": None if not district_attribute or a.get(district_attribute) in (None, "")
            else str(a[district_attribute]),
            "footprint_valid": o.valid, "lon": o.lon, "lat": o.lat,
            "geometry": None if o.footprint is None else json.dumps(mapping(o.footprint)),
            "attributes": json.dumps(a, ensure_ascii=False, sort_keys=True),
        })
        if o.footprint is not None:
            b = o.footprint.bounds
            ext = [min(ext[0], b[0]), min(ext[1], b[1]), max(ext[2], b[2]), max(ext[3], b[3])]
    meta = {"entity_type": objs[0].type, "twin_category": objs[0].category, "source_format": "cityjson",
            "cityjson_version": model.version, "crs": model.crs, "region": model.region, "rows": len(rows),
            "bbox": [round(v, 7) for v in ext] if math.isfinite(ext[0]) else None, "time_start": None,
            "time_end": None, "units": {"footprint_area_m2": "m2", "height_m": "m", "lon": "degree", "lat": "degree"},
            "district_attribute": district_attribute}
    table = rows_to_table(rows, meta)
    types = {"storeys": pa.int64(), "year_of_construction": pa.int64(), "material": pa.string(),
             "district": pa.string(), "footprint_valid": pa.bool_(), "footprint_area_m2": pa.float64(),
             "height_m": pa.float64(), "lon": pa.float64(), "lat": pa.float64(), "lod": pa.string(),
             "geometry": pa.string(), "height_source": pa.string()}
    schema = pa.schema([pa.field(f.name, types.get(f.name, f.type)) for f in table.schema], metadata=table.schema.metadata)
    return table.cast(schema)
