"""Linking one physical entity across two sources to one unified code.

Two ways, both explicit about what counts as "the same":
* by a declared identifier both sources carry (e.g. the Dutch BAG building id), exact after
  trimming; an identifier that occurs twice on one side is ambiguous and refused;
* by a spatial match: centroids within ``tolerance_m`` metres (measured in an azimuthal
  equidistant projection centred on the data, so metres are metres), found with a shapely
  STRtree, and for two polygons an overlap of at least ``min_iou`` (intersection over union).
  Matching is one-to-one, closest pairs first.

The left source's entity code becomes the unified code; the result is a crosswalk
(right code → unified code) that can be published instead of either source's rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import Point, shape

from connectors.errors import IngestError
from connectors.ingest import rows_to_table


@dataclass
class Match:
    left_code: str
    right_code: str
    method: str
    distance_m: float | None = None
    iou: float | None = None


@dataclass
class LinkResult:
    method: str
    matches: list[Match]
    unmatched_left: list[str]
    unmatched_right: list[str]
    params: dict[str, Any] = field(default_factory=dict)

    def unified(self) -> dict[str, str]:
        return {m.right_code: m.left_code for m in self.matches}

    def crosswalk(self, region: str | None = None) -> pa.Table:
        """right code → unified code, with how each pair was matched (an asset of its own)."""
        rows = [{"entity_code": m.right_code, "unified_code": m.left_code, "method": m.method,
                 "distance_m": None if m.distance_m is None else round(m.distance_m, 3),
                 "iou": None if m.iou is None else round(m.iou, 4)} for m in self.matches]
        meta = {"entity_type": "EntityLink", "twin_category": "other", "source_format": "crosswalk", "region": region,
                "rows": len(rows), "link": {"method": self.method, **self.params}}
        table = rows_to_table(rows, meta)
        schema = pa.schema([pa.field("entity_code", pa.string()), pa.field("unified_code", pa.string()),
                            pa.field("method", pa.string()), pa.field("distance_m", pa.float64()),
                            pa.field("iou", pa.float64())], metadata=table.schema.metadata)
        return table.cast(schema) if rows else pa.Table.from_pylist([], schema=schema)


def apply_unified(table: pa.Table, result: LinkResult) -> pa.Table:
    """``table`` (the right source) with a ``unified_code`` column: the linked code, else its own."""
    mapping = result.unified()
    codes = [mapping.get(c, c) for c in _codes(table, "right")]
    if "unified_code" in table.column_names:
        table = table.drop_columns(["unified_code"])
    return table.append_column("unified_code", pa.array(codes, pa.string()))


def _codes(table: pa.Table, side: str) -> list[str]:
    if "entity_code" not in table.column_names:
        raise IngestError(f"the {side} table has no entity_code column (ingest it with a region)",
                          code="link_missing_codes")
    codes = table.column("entity_code").to_pylist()
    if any(c is None for c in codes):
        raise IngestError(f"the {side} table has rows without an entity code", code="link_missing_codes")
    return codes


def _values(table: pa.Table, key: str, side: str) -> list[Any]:
    """A column, or ``attributes.<name>`` inside a JSON ``attributes`` column (CityJSON tables)."""
    if key in table.column_names:
        return table.column(key).to_pylist()
    if key.startswith("attributes.") and "attributes" in table.column_names:
        name = key.split(".", 1)[1]
        return [json.loads(a).get(name) if a else None for a in table.column("attributes").to_pylist()]
    raise IngestError(f"the {side} table has no identifier {key!r}", code="link_missing_identifier")


def link_by_identifier(left: pa.Table, right: pa.Table, *, left_key: str, right_key: str) -> LinkResult:
    lc, rc = _codes(left, "left"), _codes(right, "right")
    lv, rv = _values(left, left_key, "left"), _values(right, right_key, "right")
    index: dict[str, str] = {}
    for code, v in zip(lc, lv):
        if v in (None, ""):
            continue
        k = str(v).strip()
        if k in index:
            raise IngestError(f"identifier {left_key}={k!r} occurs twice in the left source "
                              f"({index[k]}, {code}): ambiguous", code="link_ambiguous_identifier")
        index[k] = code
    matches, seen = [], set()
    for code, v in zip(rc, rv):
        k = None if v in (None, "") else str(v).strip()
        if k is None or k not in index:
            continue
        if k in seen:
            raise IngestError(f"identifier {right_key}={k!r} occurs twice in the right source: ambiguous",
                              code="link_ambiguous_identifier")
        seen.add(k)
        matches.append(Match(index[k], code, "identifier"))
    used_l, used_r = {m.left_code for m in matches}, {m.right_code for m in matches}
    return LinkResult("identifier", matches, [c for c in lc if c not in used_l], [c for c in rc if c not in used_r],
                      {"left_key": left_key, "right_key": right_key})


def _geometries(table: pa.Table, side: str) -> list[Any]:
    geoms = table.column("geometry").to_pylist() if "geometry" in table.column_names else [None] * table.num_rows
    lon = table.column("lon").to_pylist() if "lon" in table.column_names else [None] * table.num_rows
    lat = table.column("lat").to_pylist() if "lat" in table.column_names else [None] * table.num_rows
    out = []
    for i, (g, x, y) in enumerate(zip(geoms, lon, lat)):
        if g:
            try:
                out.append(shape(json.loads(g)))
                continue
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise IngestError(f"{side} row {i}: geometry is not GeoJSON ({exc})", code="ingest_malformed_geometry") from exc
        out.append(Point(x, y) if x is not None and y is not None else None)
    return out


def link_spatial(left: pa.Table, right: pa.Table, *, tolerance_m: float, min_iou: float = 0.5) -> LinkResult:
    """One-to-one spatial match of WGS84 geometries (the ``geometry`` GeoJSON column, else lon/lat)."""
    if not (isinstance(tolerance_m, (int, float)) and math.isfinite(tolerance_m) and 0 < tolerance_m <= 10_000):
        raise IngestError("the spatial tolerance must be a distance in metres in (0, 10000]", code="link_bad_tolerance")
    if not 0 <= min_iou <= 1:
        raise IngestError("min_iou must be between 0 and 1", code="link_bad_tolerance")
    lc, rc = _codes(left, "left"), _codes(right, "right")
    lg, rg = _geometries(left, "left"), _geometries(right, "right")
    located = [g for g in lg + rg if g is not None]
    if not located:
        raise IngestError("neither source has geometry or lon/lat to match on", code="link_no_geometry")
    c = shapely.centroid(shapely.GeometryCollection(located))
    local = CRS.from_proj4(f"+proj=aeqd +lat_0={c.y} +lon_0={c.x} +datum=WGS84 +units=m")
    fwd = Transformer.from_crs("EPSG:4326", local, always_xy=True)

    def project(g):
        if g is None:
            return None
        return shapely.transform(g, lambda xy: np.column_stack(fwd.transform(xy[:, 0], xy[:, 1])))

    lp, rp = [project(g) for g in lg], [project(g) for g in rg]
    l_idx = [i for i, g in enumerate(lp) if g is not None]
    tree = shapely.STRtree([lp[i].centroid for i in l_idx])
    candidates = []
    for j, g in enumerate(rp):
        if g is None:
            continue
        cj = g.centroid
        for t in tree.query(cj, predicate="dwithin", distance=tolerance_m):
            i = l_idx[int(t)]
            d = float(lp[i].centroid.distance(cj))
            iou = None
            if lp[i].area > 0 and g.area > 0:
                union = lp[i].union(g).area
                iou = float(lp[i].intersection(g).area / union) if union else 0.0
                if iou < min_iou:
                    continue
            candidates.append((d, -(iou or 0.0), i, j, iou))
    candidates.sort()
    used_l, used_r, matches = set(), set(), []
    for d, _, i, j, iou in candidates:
        if i in used_l or j in used_r:
            continue
        used_l.add(i)
        used_r.add(j)
        matches.append(Match(lc[i], rc[j], "spatial", d, iou))
    return LinkResult("spatial", matches, [lc[i] for i in range(len(lc)) if i not in used_l],
                      [rc[j] for j in range(len(rc)) if j not in used_r],
                      {"tolerance_m": float(tolerance_m), "min_iou": float(min_iou), "projection": "aeqd (local)"})
