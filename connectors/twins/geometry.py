"""Pure geometry helpers for the CityJSON reader: boundary checks, surfaces with their semantics,
geometry templates, and 2D footprints (shapely). Errors name the city object and geometry."""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon

from connectors.errors import IngestError

DEPTH = {"MultiPoint": 1, "MultiLineString": 2, "MultiSurface": 3, "CompositeSurface": 3, "Solid": 4,
         "MultiSolid": 5, "CompositeSolid": 5}


def _fail(msg: str, code: str) -> IngestError:
    return IngestError(msg, code=code)


def check_indices(node: Any, depth: int, n: int, where: str) -> None:
    if depth == 0:
        if not isinstance(node, int) or isinstance(node, bool):
            raise _fail(f"{where}: boundaries hold {type(node).__name__} where a vertex index is expected",
                        "cityjson_malformed_geometry")
        if not 0 <= node < n:
            raise _fail(f"{where}: vertex index {node} is out of range (the file has {n} vertices)",
                        "cityjson_bad_vertex_index")
        return
    if not isinstance(node, list):
        raise _fail(f"{where}: boundaries are nested {depth} level(s) too shallow", "cityjson_malformed_geometry")
    for child in node:
        check_indices(child, depth - 1, n, where)


def _surfaces(boundaries: list, semantics_values: Any, gtype: str) -> list[tuple[list[list[int]], Any]]:
    """(rings, semantic index) for every surface of a surface/solid geometry."""
    depth = DEPTH[gtype]
    out: list[tuple[list[list[int]], Any]] = []

    def walk(node: list, values: Any, d: int) -> None:
        if d == 3:
            for i, surface in enumerate(node):
                out.append((surface, values[i] if isinstance(values, list) and i < len(values) else None))
            return
        for i, child in enumerate(node):
            walk(child, values[i] if isinstance(values, list) and i < len(values) else None, d - 1)

    if depth >= 3:
        walk(boundaries, semantics_values, depth)
    return out


def _template(doc: dict, geom: dict, where: str) -> tuple[dict, np.ndarray]:
    """A GeometryInstance as a plain geometry with its own (real-coordinate) vertices."""
    gt = doc.get("geometry-templates") or {}
    templates, tverts = gt.get("templates") or [], gt.get("vertices-templates") or []
    idx = geom.get("template")
    if not isinstance(idx, int) or not 0 <= idx < len(templates):
        raise _fail(f"{where}: GeometryInstance refers to template {idx!r}, the file has {len(templates)}",
                    "cityjson_bad_template")
    tpl = templates[idx]
    matrix = geom.get("transformationMatrix")
    if not (isinstance(matrix, list) and len(matrix) == 16):
        raise _fail(f"{where}: GeometryInstance needs a 16-number transformationMatrix", "cityjson_malformed_geometry")
    if not isinstance(tpl, dict) or tpl.get("type") not in DEPTH:
        raise _fail(f"{where}: template {idx} is not a CityJSON geometry", "cityjson_malformed_geometry")
    check_indices(tpl.get("boundaries"), DEPTH[tpl["type"]], len(tverts), f"{where} (template {idx})")
    pts = np.asarray(tverts, dtype=float).reshape(-1, 3)
    m = np.asarray(matrix, dtype=float).reshape(4, 4)
    return tpl, pts @ m[:3, :3].T + m[:3, 3]


def geometry_parts(doc: dict, geom: Any, verts: np.ndarray, where: str
                    ) -> tuple[list[tuple[list[list[int]], Any]], np.ndarray, list[int]]:
    if not isinstance(geom, dict) or "type" not in geom:
        raise _fail(f"{where}: not a CityJSON geometry object", "cityjson_malformed_geometry")
    gtype = geom["type"]
    if gtype == "GeometryInstance":
        b = geom.get("boundaries")
        if not (isinstance(b, list) and len(b) == 1):
            raise _fail(f"{where}: GeometryInstance boundaries must hold one anchor vertex", "cityjson_malformed_geometry")
        check_indices(b, 1, len(verts), where)
        tpl, tpts = _template(doc, geom, where)
        local = tpts + verts[b[0]]
        idx = all_indices(tpl["boundaries"], DEPTH[tpl["type"]])
        surfaces = _surfaces(tpl["boundaries"], None, tpl["type"])
        return surfaces, local, idx
    if gtype not in DEPTH:
        raise _fail(f"{where}: unknown geometry type {gtype!r}", "cityjson_malformed_geometry")
    check_indices(geom.get("boundaries"), DEPTH[gtype], len(verts), where)
    values = (geom.get("semantics") or {}).get("values")
    surface_types = [s.get("type") if isinstance(s, dict) else None
                     for s in (geom.get("semantics") or {}).get("surfaces") or []]
    surfaces = [(rings, surface_types[v] if isinstance(v, int) and 0 <= v < len(surface_types) else None)
                for rings, v in _surfaces(geom["boundaries"], values, gtype)]
    return surfaces, verts, all_indices(geom["boundaries"], DEPTH[gtype])


def all_indices(node: Any, depth: int) -> list[int]:
    if depth == 0:
        return [node]
    out: list[int] = []
    for child in node:
        out.extend(all_indices(child, depth - 1))
    return out


def footprint(surfaces: list[tuple[list[list[int]], Any]], pts: np.ndarray, grid: float) -> Polygon | None:
    """Ground surfaces if the model labels them, else every surface projected to the plane and unioned
    (walls project to nothing and drop out; faces sharing vertex indices share exact coordinates)."""
    ground = [s for s in surfaces if s[1] == "GroundSurface"]
    chosen = [rings for rings, _ in (ground or surfaces) if rings and len(rings[0]) >= 3]
    simple = [r[0] for r in chosen if len(r) == 1]
    polys: list[Any] = []
    if simple:  # the common case (triangles, plain faces): build them in one vectorised call
        coords = pts[np.concatenate(simple), :2]
        idx = np.repeat(np.arange(len(simple)), [len(r) for r in simple])
        polys.extend(shapely.polygons(shapely.linearrings(coords, indices=idx)))
    for rings in chosen:
        if len(rings) > 1:
            polys.append(Polygon(pts[rings[0], :2], [pts[r, :2] for r in rings[1:] if len(r) >= 3]))
    arr = np.asarray(polys, dtype=object)
    if not arr.size:
        return None
    arr = arr[shapely.area(arr) > grid * grid]  # walls project to (near) nothing
    if not arr.size:
        return None
    bad = ~shapely.is_valid(arr)
    if bad.any():
        arr[bad] = shapely.make_valid(arr[bad])
    fp = shapely.union_all(arr)
    return None if fp.is_empty else fp
