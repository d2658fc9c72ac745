"""GeoJSON line networks as graphs: LineString/MultiLineString features are links, Point features
nodes; a line's ends join the nodes it names or the nearest node within an explicit tolerance.

Coordinates are WGS84 (RFC 7946) unless the caller declares a CRS or the file carries the legacy
``crs`` member (``urn:ogc:def:crs:EPSG::28992``); they are then moved to WGS84 with pyproj first.
Property names are matched without regard to case, with the usual aliases (``MATERIAAL``, ``DN``...).
"""

from __future__ import annotations

import math
import re
from typing import Any

from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from connectors.errors import IngestError
from connectors.ingest import geometry_positions
from connectors.twins.network import GEOD, Link, Network, Node, _check_region, _code, _graph, _line_length, _num, ref_key

ALIASES = {
    "material": ("material", "pipe_material", "pipematerial", "materiaal", "mat"),
    "diameter": ("diameter", "diameter_mm", "nominaldiameter", "nominal_diameter", "dn", "diam"),
    "length": ("length", "length_m", "lengte", "shape_length"),
}
_LEGACY_CRS = re.compile(r"(?:EPSG|epsg)[:/]+(?:[^:/]*[:/]+)?(\d+)$")


def _prop(props: dict[str, Any], name: str, kind: str | None = None) -> Any:
    """``props[name]``, else a case-insensitive match of ``name`` or the aliases of ``kind``."""
    if name in props:
        return props[name]
    lower = {str(k).lower(): v for k, v in props.items()}
    for candidate in (name.lower(), *(ALIASES.get(kind or "", ()))):
        if candidate in lower:
            return lower[candidate]
    return None


def _source_crs(doc: dict[str, Any], declared: str | None, name: str) -> CRS | None:
    legacy = ((doc.get("crs") or {}).get("properties") or {}).get("name") if isinstance(doc.get("crs"), dict) else None
    text = declared or legacy
    if not text or text.endswith("CRS84") or text.endswith("::4326") or text in ("EPSG:4326", "WGS84"):
        return None
    m = _LEGACY_CRS.search(text.strip())
    try:
        crs = CRS.from_user_input(f"EPSG:{m.group(1)}" if m else text)
    except CRSError as exc:
        raise IngestError(f"{name}: CRS {text!r} is not one pyproj knows ({exc})", code="network_bad_crs") from exc
    return crs.sub_crs_list[0] if crs.is_compound else crs


def _reproject(geom: dict[str, Any], tr: Transformer) -> dict[str, Any]:
    def walk(c):
        if isinstance(c, list) and c and all(isinstance(v, (int, float)) for v in c[:2]):
            lon, lat = tr.transform(c[0], c[1])
            return [lon, lat, *c[2:]]
        return [walk(x) for x in c] if isinstance(c, list) else c

    return {**geom, "coordinates": walk(geom.get("coordinates"))}


def network_from_geojson(doc: dict[str, Any], *, region: str, name: str = "network", snap_m: float = 0.5,
                         link_type: str = "Pipe", node_type: str = "Junction", id_property: str = "id",
                         material_property: str = "material", diameter_property: str = "diameter",
                         from_property: str | None = None, to_property: str | None = None,
                         crs: str | None = None) -> Network:
    """LineString/MultiLineString features are links (a MultiLineString must be one continuous line),
    Point features nodes. Without ``from_property``/``to_property`` an endpoint joins the nearest node
    within ``snap_m`` metres, or becomes a new node there."""
    _check_region(region)
    if not (isinstance(snap_m, (int, float)) and 0 <= snap_m <= 1000):
        raise IngestError("snap tolerance must be between 0 and 1000 metres", code="network_bad_tolerance")
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        raise IngestError(f"{name}: a GeoJSON FeatureCollection is expected", code="ingest_malformed_geojson")
    src = _source_crs(doc, crs, name)
    to84 = Transformer.from_crs(src, "EPSG:4326", always_xy=True) if src is not None else None
    nodes: dict[str, Node] = {}
    grid: dict[tuple[int, int], list[str]] = {}
    cell = max(snap_m, 1e-3) / 111_320.0  # degrees of latitude; longitude cells are narrower, so safe

    def cell_of(lon: float, lat: float) -> tuple[int, int]:
        return int(math.floor(lon / cell)), int(math.floor(lat / cell))

    def add_node(key: str, sid: str, ntype: str, lon: float, lat: float, attrs: dict[str, Any], where: str) -> None:
        if key in nodes:
            raise IngestError(f"{where}: duplicate node id {sid!r}", code="network_duplicate_id")
        nodes[key] = Node(sid, ntype, _code(region, ntype, sid, where), lon, lat, attrs)
        grid.setdefault(cell_of(lon, lat), []).append(key)

    def snap(lon: float, lat: float, where: str) -> str:
        cx, cy = cell_of(lon, lat)
        best, best_d = None, math.inf
        span = 1 + int(1 / max(math.cos(math.radians(lat)), 1e-6))
        for dx in range(-span, span + 1):
            for dy in (-1, 0, 1):
                for k in grid.get((cx + dx, cy + dy), []):
                    n = nodes[k]
                    d = GEOD.inv(lon, lat, n.lon, n.lat)[2]
                    if d <= snap_m and d < best_d:
                        best, best_d = k, d
        if best is not None:
            return best
        sid = f"n{lon:.7f}_{lat:.7f}"
        add_node(sid, sid, node_type, lon, lat, {}, where)
        return sid

    feats = doc["features"]
    lines = []
    for i, f in enumerate(feats):
        if not isinstance(f, dict) or f.get("type") != "Feature" or not isinstance(f.get("geometry"), dict):
            raise IngestError(f"{name}: feature #{i} is not a GeoJSON Feature with a geometry", code="ingest_malformed_geojson")
        props = f.get("properties") or {}
        fid = f.get("id", props.get(id_property))
        sid = str(fid) if fid is not None else f"feature-{i}"
        where = f"{name}: feature #{i} ({sid})"
        g = f["geometry"] if to84 is None else _reproject(f["geometry"], to84)
        try:
            pts = geometry_positions(g)
        except ValueError as exc:
            raise IngestError(f"{where}: geometry: {exc}", code="ingest_malformed_geometry") from exc
        if g["type"] == "Point":
            add_node(ref_key(sid), sid, str(props.get("type") or node_type), pts[0][0], pts[0][1], dict(props), where)
        elif g["type"] in ("LineString", "MultiLineString"):
            lines.append((i, sid, where, g, pts, props))
        else:
            raise IngestError(f"{where}: {g['type']} is neither a node (Point) nor a link (LineString)",
                              code="network_unknown_element")
    links: list[Link] = []
    for i, sid, where, g, pts, props in lines:
        if len(pts) < 2:
            raise IngestError(f"{where}: a link needs at least two positions", code="ingest_malformed_geometry")
        if g["type"] == "MultiLineString":
            parts = g["coordinates"]
            for a, b in zip(parts, parts[1:]):
                if GEOD.inv(a[-1][0], a[-1][1], b[0][0], b[0][1])[2] > snap_m:
                    raise IngestError(f"{where}: MultiLineString parts do not join within {snap_m} m",
                                      code="network_discontinuous_link")
        ends = []
        for pos, prop in ((pts[0], from_property), (pts[-1], to_property)):
            if prop:
                ref = props.get(prop)
                if ref is None or ref_key(ref) not in nodes:
                    raise IngestError(f"{where}: {prop!r} refers to {ref!r}, which is not a node in the input",
                                      code="network_dangling_reference")
                ends.append(ref_key(ref))
            else:
                ends.append(snap(pos[0], pos[1], where))
        ltype = str(props.get("type") or link_type)
        length = (sum(_line_length([tuple(p[:2]) for p in part]) for part in g["coordinates"])
                  if g["type"] == "MultiLineString" else _line_length(pts))
        links.append(Link(sid, ltype, _code(region, ltype, sid, where), ends[0], ends[1], pts, length,
                          _num(_prop(props, "length", "length")),
                          None if (mat := _prop(props, material_property, "material")) in (None, "") else str(mat),
                          _num(_prop(props, diameter_property, "diameter")), dict(props)))
    if len({ln.id for ln in links}) != len(links):
        raise IngestError(f"{name}: link ids are not unique", code="network_duplicate_id")
    if not links and not nodes:
        raise IngestError(f"{name}: the FeatureCollection is empty", code="ingest_empty")
    return Network(name, region, nodes, links, _graph(nodes, links))
