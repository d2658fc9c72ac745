"""Pipe networks as graphs (networkx): FIWARE Smart Data Models water-network entities (Junction,
Reservoir, Tank as nodes; Pipe, Pump, Valve as links via ``startsAt``/``endsAt``; WaterNetwork as the
container) in any NGSI form, or GeoJSON line networks (LineStrings are links, Points are nodes,
endpoints joined by declared ids or snapped within an explicit tolerance in metres).

Lengths are geodesic on the WGS84 ellipsoid (pyproj ``Geod``) along the link's own line, or along
start node → ``vertices`` → end node; a declared ``length`` is kept beside it, never mixed in.
A reference to an element that is not in the input is an error naming both ends: a topology with
holes in it would be published as if it were whole.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import pyarrow as pa
from pyproj import Geod

from twinspace.entity_codes import REGION_RE, entity_code
from connectors.errors import IngestError
from connectors.ingest import DEFAULT_CATEGORY, _Extent, _load_json, geometry_positions, ngsi_entity_to_row, rows_to_table
from connectors.tables import get_meta

GEOD = Geod(ellps="WGS84")
NODE_TYPES = {"Junction", "Reservoir", "Tank"}
LINK_TYPES = {"Pipe", "Pump", "Valve"}
STORAGE_TYPES = {"Reservoir", "Tank"}  # a source at the end of a line is not a dead end
CONTAINER_TYPES = {"WaterNetwork"}


def ref_key(ref: Any) -> str:
    """The comparable part of an NGSI id or reference: ``urn:ngsi-ld:Pipe:P1``, ``ngsi:P1``, ``uri:P1``
    and ``P1`` all name P1 (the SDM examples use all of these spellings)."""
    s = str(ref).strip()
    for prefix in ("urn:ngsi-ld:", "uri:ngsi-ld:", "ngsi-ld:"):
        if s.startswith(prefix):
            rest = s[len(prefix):]
            return rest.split(":", 1)[1] if ":" in rest else rest
    for prefix in ("ngsi:", "uri:", "urn:"):
        if s.startswith(prefix):
            return s[len(prefix):]
    return s


@dataclass
class Node:
    id: str
    type: str
    code: str
    lon: float | None
    lat: float | None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Link:
    id: str
    type: str
    code: str
    start: str            # ref_key of the start node
    end: str
    coords: list[tuple[float, float]]
    length_m: float       # geodesic along coords
    declared_length_m: float | None
    material: str | None
    diameter: float | None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Network:
    name: str
    region: str
    nodes: dict[str, Node]
    links: list[Link]
    graph: nx.MultiGraph
    containers: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        g = self.graph
        comps = sorted((len(c) for c in nx.connected_components(g)), reverse=True)
        pipes = [ln for ln in self.links if ln.type == "Pipe" or ln.type not in LINK_TYPES]
        by_mat: dict[str, float] = {}
        by_dia: dict[str, float] = {}
        for ln in pipes:
            by_mat[ln.material or "unknown"] = by_mat.get(ln.material or "unknown", 0.0) + ln.length_m
            d = "unknown" if ln.diameter is None else f"{ln.diameter:g}"
            by_dia[d] = by_dia.get(d, 0.0) + ln.length_m
        declared = [ln.declared_length_m for ln in pipes if ln.declared_length_m is not None]
        return {
            "nodes": g.number_of_nodes(), "links": g.number_of_edges(),
            "node_types": _count(n.type for n in self.nodes.values()), "link_types": _count(ln.type for ln in self.links),
            "components": len(comps), "component_sizes": comps,
            "pipe_length_m": round(sum(ln.length_m for ln in pipes), 3),
            "declared_pipe_length_m": round(sum(declared), 3) if declared else None,
            "length_by_material_m": {k: round(v, 3) for k, v in sorted(by_mat.items())},
            "length_by_diameter_m": {k: round(v, 3) for k, v in sorted(by_dia.items())},
            "dead_ends": sorted(self.nodes[k].code for k in self.dead_ends()),
            "isolated_nodes": sorted(self.nodes[k].code for k in g.nodes if g.degree(k) == 0),
        }

    def dead_ends(self) -> list[str]:
        return [k for k in self.graph.nodes if self.graph.degree(k) == 1 and self.nodes[k].type not in STORAGE_TYPES]

    def topology_table(self, entity_type: str = "WaterNetwork") -> pa.Table:
        """Nodes and links in one table (``kind``), each with its unified code, so the topology circulates
        as an asset of its own: from_code/to_code are the edges, ``component`` the connected part."""
        comp_of = {k: i for i, c in enumerate(sorted(nx.connected_components(self.graph), key=lambda c: (-len(c), min(c))))
                   for k in c}
        ext = _Extent()
        rows: list[dict[str, Any]] = []
        for k, n in sorted(self.nodes.items()):
            if n.lon is not None:
                ext.add_point(n.lon, n.lat)
            rows.append({"kind": "node", "source_id": n.id, "entity_code": n.code, "element_type": n.type,
                         "from_code": None, "to_code": None, "length_m": None, "declared_length_m": None,
                         "material": None, "diameter": None, "component": comp_of[k], "degree": self.graph.degree(k),
                         "lon": n.lon, "lat": n.lat, "geometry": None if n.lon is None else
                         json.dumps({"type": "Point", "coordinates": [n.lon, n.lat]})})
        for ln in self.links:
            for lon, lat in ln.coords:
                ext.add_point(lon, lat)
            rows.append({"kind": "link", "source_id": ln.id, "entity_code": ln.code, "element_type": ln.type,
                         "from_code": self.nodes[ln.start].code, "to_code": self.nodes[ln.end].code,
                         "length_m": round(ln.length_m, 3), "declared_length_m": ln.declared_length_m,
                         "material": ln.material, "diameter": ln.diameter, "component": comp_of[ln.start],
                         "degree": None, "lon": None, "lat": None,
                         "geometry": json.dumps({"type": "LineString", "coordinates": [list(c) for c in ln.coords]})
                         if len(ln.coords) >= 2 else None})
        meta = {"entity_type": entity_type, "twin_category": DEFAULT_CATEGORY.get("Pipe", "goods_equipment"),
                "source_format": "network", "region": self.region, "rows": len(rows), "network": self.name,
                "units": {"length_m": "m", "declared_length_m": "m", "lon": "degree", "lat": "degree"}, **ext.meta()}
        table = rows_to_table(rows, meta)
        return table.cast(table.schema.set(table.schema.get_field_index("diameter"), pa.field("diameter", pa.float64())))


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _code(region: str, etype: str, sid: str, where: str) -> str:
    try:
        return entity_code(region, DEFAULT_CATEGORY.get(etype, "goods_equipment"), etype, sid)
    except ValueError as exc:
        raise IngestError(f"{where}: {exc}", code="ingest_bad_entity_code") from exc


def _check_region(region: str) -> None:
    if not REGION_RE.match(region or ""):
        raise IngestError(f"region {region!r} is not an ISO 3166 code such as 'FI' or 'TW-TPE'", code="ingest_bad_region")


def _line_length(coords: list[tuple[float, float]]) -> float:
    if len(coords) < 2:
        return 0.0
    return float(GEOD.line_length([c[0] for c in coords], [c[1] for c in coords]))


def _graph(nodes: dict[str, Node], links: list[Link]) -> nx.MultiGraph:
    g = nx.MultiGraph()
    g.add_nodes_from(nodes)
    for ln in links:
        g.add_edge(ln.start, ln.end, key=ln.id, type=ln.type, length_m=ln.length_m)
    return g


# --------------------------------------------------------------------------- Smart Data Models
def network_from_entities(entities: list[Any], *, region: str, name: str = "network",
                          node_types: set[str] | frozenset[str] = frozenset(NODE_TYPES),
                          link_types: set[str] | frozenset[str] = frozenset(LINK_TYPES)) -> Network:
    """SDM water-network entities (key-values, normalized NGSI-v2 or NGSI-LD) → a checked Network.
    Other entity types are refused unless named in ``node_types`` / ``link_types``."""
    _check_region(region)
    nodes: dict[str, Node] = {}
    raw_links: list[tuple[int, str, dict[str, Any]]] = []
    containers: list[tuple[str, list[str]]] = []
    ext = _Extent()
    for i, ent in enumerate(entities):
        etype, row = ngsi_entity_to_row(ent, i, ext)
        sid, key = row["source_id"], ref_key(row["source_id"])
        where = f"{etype} {sid!r}"
        if etype in CONTAINER_TYPES:
            members = row.get("isComposedOf") or []
            members = [members] if isinstance(members, (str, dict)) else list(members)
            # NGSI-LD multi-attribute: a list of Relationship objects
            containers.append((sid, [m.get("object") if isinstance(m, dict) else m for m in members]))
            continue
        if etype in link_types:
            raw_links.append((i, etype, row))
            continue
        if etype not in node_types:
            raise IngestError(f"{where}: not a network element (nodes: {', '.join(sorted(node_types))}; links: "
                              f"{', '.join(sorted(link_types))})", code="network_unknown_element")
        if key in nodes:
            raise IngestError(f"{where}: duplicate id (also a {nodes[key].type})", code="network_duplicate_id")
        nodes[key] = Node(sid, etype, _code(region, etype, sid, where), row.get("lon"), row.get("lat"),
                          {k: v for k, v in row.items() if k not in ("lon", "lat", "geometry")})
    links: list[Link] = []
    seen: set[str] = set()
    for i, etype, row in raw_links:
        sid = row["source_id"]
        where = f"{etype} {sid!r}"
        if ref_key(sid) in seen or ref_key(sid) in nodes:
            raise IngestError(f"{where}: duplicate id", code="network_duplicate_id")
        seen.add(ref_key(sid))
        ends = []
        for attr in ("startsAt", "endsAt"):
            ref = row.get(attr)
            if isinstance(ref, list) and len(ref) == 1:
                ref = ref[0]
            if not isinstance(ref, str) or not ref:
                raise IngestError(f"{where}: '{attr}' must name one node", code="network_dangling_reference")
            if ref_key(ref) not in nodes:
                raise IngestError(f"{where}: '{attr}' refers to {ref!r}, which is not a node in the input "
                                  f"(nodes: {len(nodes)})", code="network_dangling_reference")
            ends.append(ref_key(ref))
        a, b = nodes[ends[0]], nodes[ends[1]]
        coords = _link_coords(row, a, b, where)
        links.append(Link(sid, etype, _code(region, etype, sid, where), ends[0], ends[1], coords, _line_length(coords),
                          _num(row.get("length")), None if row.get("material") is None else str(row["material"]),
                          _num(row.get("diameter")), {k: v for k, v in row.items() if k != "geometry"}))
    known = set(nodes) | seen
    for cid, members in containers:
        for m in members:
            if ref_key(m) not in known:
                raise IngestError(f"WaterNetwork {cid!r}: 'isComposedOf' lists {m!r}, which is not in the input",
                                  code="network_dangling_reference")
    if not nodes:
        raise IngestError("the input holds no network nodes", code="ingest_empty")
    return Network(name, region, nodes, links, _graph(nodes, links), [c for c, _ in containers])


def _link_coords(row: dict[str, Any], a: Node, b: Node, where: str) -> list[tuple[float, float]]:
    """The link's own line if it has one; else start node, ``vertices`` (SDM), end node."""
    geom = row.get("geometry")
    if geom:
        g = json.loads(geom)
        if g.get("type") == "LineString":
            return [tuple(p[:2]) for p in g["coordinates"]]
    mid: list[tuple[float, float]] = []
    if row.get("vertices") is not None:
        try:
            mid = geometry_positions(row["vertices"])
        except ValueError as exc:
            raise IngestError(f"{where}: 'vertices': {exc}", code="ingest_malformed_geometry") from exc
    ends = [(n.lon, n.lat) for n in (a, b) if n.lon is not None]
    if len(ends) < 2 and not mid:
        return []
    return ([ends[0]] if a.lon is not None else []) + mid + ([(b.lon, b.lat)] if b.lon is not None else [])


def load_entities(paths: list[Path]) -> list[Any]:
    out: list[Any] = []
    for p in paths:
        doc = _load_json(Path(p), "NGSI entities")
        out.extend(doc if isinstance(doc, list) else [doc])
    return out


def network_from_topology(table: pa.Table, *, name: str = "network") -> Network:
    """Rebuild a Network from its published topology table (``Network.topology_table``), so a
    topology asset can be profiled, or analysed by a consumer, without the original entities."""
    need = {"kind", "source_id", "entity_code", "element_type", "from_code", "to_code", "length_m"}
    missing = need - set(table.column_names)
    if missing:
        raise IngestError(f"not a network topology table; missing {', '.join(sorted(missing))}",
                          code="network_bad_topology")
    region = get_meta(table.schema).get("region") or ""
    nodes: dict[str, Node] = {}
    links: list[Link] = []
    rows = table.to_pylist()
    for r in rows:
        if r["kind"] == "node":
            nodes[r["entity_code"]] = Node(r["source_id"], r["element_type"], r["entity_code"], r.get("lon"), r.get("lat"))
    for r in rows:
        if r["kind"] != "link":
            continue
        for end in ("from_code", "to_code"):
            if r[end] not in nodes:
                raise IngestError(f"{r['element_type']} {r['source_id']!r}: {end} {r[end]!r} is not a node of the table",
                                  code="network_dangling_reference")
        coords = [tuple(c) for c in json.loads(r["geometry"])["coordinates"]] if r.get("geometry") else []
        links.append(Link(r["source_id"], r["element_type"], r["entity_code"], r["from_code"], r["to_code"], coords,
                          float(r["length_m"] or 0.0), r.get("declared_length_m"), r.get("material"), r.get("diameter")))
    return Network(name, region, nodes, links, _graph(nodes, links))
