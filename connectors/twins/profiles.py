"""Entity profiles (实体画像): the key attributes of a set of twin entities, computed at the
provider's connector from its own table and circulated as a data product of their own.

A profile is a tidy table (``dimension``, ``group``, ``measure``, ``value``, ``unit``,
``entities``) plus a declaration carried in the table's metadata and the catalog entry: the source
asset and version it derives from (with that table's SHA-256), the method, and the de-identification.
The rule is the k-threshold rule of encrypted queries: a profile of fewer than ``k`` entities is
refused; a group of fewer than ``k`` entities is not released (nor named); and when that leaves one
suppressed group, or suppressed groups totalling fewer than ``k``, the smallest released groups are
suppressed too — otherwise the total minus the released groups would give the hidden one back.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from twinspace.entity_codes import CATEGORY_CODES
from twinspace.errors import TwinSpaceError
from twinspace.privacy.dp import enforce_k_threshold
from connectors.errors import PrivacyError, PublishError
from connectors.ingest import rows_to_table
from connectors.tables import get_meta

NOT_RECORDED = "(not recorded)"
K_DEFAULT = 10          # the broker's default ``privacy_min_cohort``
METHOD_VERSION = 1
HEIGHT_BINS = (0, 3, 6, 10, 15, 25, 50)
PARKING_CLASSES = {"car": "total_car", "motorcycle": "total_motor", "bicycle": "total_bike", "bus": "total_bus",
                   "large_motorcycle": "total_large_motor", "ev_charging": "charging_spaces",
                   "accessible": "handicap_spaces", "pregnancy_child": "pregnancy_spaces"}


@dataclass
class Profile:
    kind: str
    entity_type: str
    twin_category: str
    region: str | None
    entities: int
    rows: list[dict[str, Any]]
    method: dict[str, Any]
    deid: dict[str, Any]
    bbox: list[float] | None = None
    source: dict[str, Any] | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def code_prefix(self) -> str:
        """The unified-code prefix every entity of the profile shares (region:category:type)."""
        return f"{self.region or '*'}:{CATEGORY_CODES[self.twin_category]}:{self.entity_type}"

    def with_source(self, asset: dict[str, Any]) -> "Profile":
        """Bind the profile to the published source asset (id, version, content hash)."""
        missing = [k for k in ("id", "version", "content_hash") if k not in asset]
        if missing:
            raise PublishError(f"source asset lacks {', '.join(missing)}", code="profile_bad_source")
        src = {**(self.source or {}), "asset_id": asset["id"], "version": int(asset["version"]),
               "content_sha256": asset["content_hash"]}
        if self.source and self.source.get("content_sha256") not in (None, asset["content_hash"]):
            raise PublishError("the profile was computed from a different table than the asset's "
                               f"(sha256 {self.source['content_sha256'][:12]}… vs {asset['content_hash'][:12]}…)",
                               code="profile_source_mismatch")
        return replace(self, source=src)

    def declaration(self) -> dict[str, Any]:
        return {"kind": self.kind, "entity_type": self.entity_type, "twin_category": self.twin_category,
                "code_prefix": self.code_prefix, "entities": self.entities, "source": self.source,
                "method": self.method, "deidentification": self.deid, "figures": self.figures}

    def table(self) -> pa.Table:
        meta = {"entity_type": self.entity_type, "twin_category": self.twin_category, "source_format": "profile",
                "region": self.region, "rows": len(self.rows), "bbox": self.bbox, "time_start": None, "time_end": None,
                "profile": self.declaration()}
        t = rows_to_table(self.rows, meta)
        return t.cast(pa.schema([pa.field("dimension", pa.string()), pa.field("group", pa.string()),
                                 pa.field("measure", pa.string()), pa.field("value", pa.float64()),
                                 pa.field("unit", pa.string()), pa.field("entities", pa.int64())],
                                metadata=t.schema.metadata))

    def value(self, dimension: str, group: str, measure: str) -> float | None:
        for r in self.rows:
            if (r["dimension"], r["group"], r["measure"]) == (dimension, group, measure):
                return r["value"]
        return None

    def groups(self, dimension: str) -> list[str]:
        return sorted({r["group"] for r in self.rows if r["dimension"] == dimension})


def suppress(sizes: dict[str, int], k: int) -> set[str]:
    """Groups that may not be released under the k-threshold rule (primary and complementary)."""
    hidden = {g for g, n in sizes.items() if n < k}
    shown = sorted((n, g) for g, n in sizes.items() if g not in hidden)
    while hidden and shown and (len(hidden) == 1 or sum(sizes[g] for g in hidden) < k):
        hidden.add(shown.pop(0)[1])
    return hidden


def _enforce_k(n: int, k: int, what: str) -> None:
    """The encrypted queries' rule (``twinspace.privacy.dp.enforce_k_threshold``), as a connector error."""
    if not isinstance(k, int) or isinstance(k, bool):
        raise PrivacyError("k must be a whole number of at least 1", code="invalid_k")
    try:
        enforce_k_threshold(n, k)
    except TwinSpaceError as exc:
        detail = f"a profile of {n} {what} is below the k-threshold ({k}); nothing is released" \
            if exc.code == "cohort_too_small" else "k must be a whole number of at least 1"
        raise PrivacyError(detail, code=exc.code) from exc


class _Builder:
    """Collects rows; grouped dimensions pass through ``suppress`` before any value is written."""

    def __init__(self, k: int):
        self.k = k
        self.rows: list[dict[str, Any]] = []
        self.suppressed: dict[str, int] = {}

    def add(self, dimension: str, group: str, measure: str, value: float | int | None, unit: str, entities: int) -> None:
        if value is None:
            return
        self.rows.append({"dimension": dimension, "group": str(group), "measure": measure,
                          "value": float(value), "unit": unit, "entities": int(entities)})

    def grouped(self, dimension: str, items: list[dict[str, Any]], key: Callable[[dict], Any],
                measures: Callable[[list[dict[str, Any]]], Iterable[tuple[str, float | None, str]]]) -> None:
        groups: dict[str, list[dict[str, Any]]] = {}
        for it in items:  # entities without a value form a group too: the groups partition the total,
            g = key(it)   # so "total minus released groups" is always covered by complementary suppression
            groups.setdefault(NOT_RECORDED if g is None else str(g), []).append(it)
        hidden = suppress({g: len(v) for g, v in groups.items()}, self.k)
        self.suppressed[dimension] = len(hidden)
        for g in sorted(groups):
            if g in hidden:
                continue
            self.add(dimension, g, "entities", len(groups[g]), "count", len(groups[g]))
            for name, value, unit in measures(groups[g]):
                self.add(dimension, g, name, value, unit, len(groups[g]))

    def deid(self) -> dict[str, Any]:
        return {"rule": "k-threshold", "k": self.k, "groups_suppressed": dict(self.suppressed),
                "complementary_suppression": True, "row_level_data": False}


def _source_of(table: pa.Table) -> dict[str, Any]:
    from connectors.tables import table_to_ipc_bytes
    import hashlib

    return {"content_sha256": hashlib.sha256(table_to_ipc_bytes(table)).hexdigest(), "rows": table.num_rows}


def _sum(items: list[dict[str, Any]], col: str) -> int | float:
    return sum(v for it in items if (v := it.get(col)) is not None)


# --------------------------------------------------------------------------- parking
def parking_profile(table: pa.Table, *, k: int = K_DEFAULT, source_hash: str | None = None) -> Profile:
    """Car parks (the Taipei feed as ingested): spaces by vehicle class, EV and accessible bays,
    distribution by district and operator type."""
    _need(table, ["total_car", "district"], "a parking table (twinspace connector ingest --format taipei)")
    items = table.to_pylist()
    _enforce_k(len(items), k, "car parks")
    b = _Builder(k)
    b.add("total", "all", "entities", len(items), "count", len(items))
    present = {c: col for c, col in PARKING_CLASSES.items() if col in table.column_names}
    for cls, col in present.items():
        b.add("total", "all", f"spaces_{cls}", _sum(items, col), "spaces", len(items))
    b.grouped("district", items, lambda r: r.get("district"),
              lambda g: [(f"spaces_{c}", _sum(g, col), "spaces") for c, col in present.items()])
    if "operator_type" in table.column_names:
        b.grouped("operator_type", items, lambda r: r.get("operator_type"),
                  lambda g: [("spaces_car", _sum(g, "total_car"), "spaces")])
    if "charging_spaces" in table.column_names:
        with_ev = sum(1 for it in items if (it.get("charging_spaces") or 0) > 0)
        b.add("total", "all", "car_parks_with_ev_charging", with_ev, "count", len(items))
    figures = {"car_parks": len(items), **{f"spaces_{c}": _sum(items, col) for c, col in present.items()},
               "districts": len({it.get("district") for it in items if it.get("district")})}
    return _profile("parking", table, items, b, figures,
                    "sums of the ingested per-car-park space counts (Taipei TCMSV fields totalcar, totalmotor, ...); "
                    "groups by the feed's district (area) and operator type (type2)", source_hash)


# --------------------------------------------------------------------------- buildings
def _height_bin(h: float | None) -> str | None:
    if h is None:
        return None
    for lo, hi in zip(HEIGHT_BINS, HEIGHT_BINS[1:]):
        if lo <= h < hi:
            return f"{lo}-{hi} m"
    return f">={HEIGHT_BINS[-1]} m" if h >= HEIGHT_BINS[-1] else "<0 m"


def _stats(values: list[float], name: str, unit: str) -> list[tuple[str, float | None, str]]:
    if not values:
        return []
    return [(f"{name}_total", round(sum(values), 3), unit) if unit == "m2" else (f"{name}_mean", round(statistics.fmean(values), 3), unit),
            (f"{name}_median", round(statistics.median(values), 3), unit)]


def building_profile(table: pa.Table, *, k: int = K_DEFAULT, source_hash: str | None = None) -> Profile:
    """Buildings (a CityJSON building table): count, footprint area, height and storey distribution,
    material and construction year where the model records them, LoD, by district when known."""
    _need(table, ["footprint_area_m2", "height_m"], "a building table (connectors.twins.cityjson.objects_table)")
    items = table.to_pylist()
    _enforce_k(len(items), k, "buildings")
    b = _Builder(k)
    n = len(items)
    areas = [a for it in items if (a := it.get("footprint_area_m2")) is not None]
    heights = [h for it in items if (h := it.get("height_m")) is not None]
    b.add("total", "all", "entities", n, "count", n)
    b.add("total", "all", "footprint_area_m2_total", round(sum(areas), 3), "m2", len(areas))
    if areas:
        b.add("total", "all", "footprint_area_m2_median", round(statistics.median(areas), 3), "m2", len(areas))
    if heights:
        b.add("total", "all", "height_m_mean", round(statistics.fmean(heights), 3), "m", len(heights))
        b.add("total", "all", "height_m_median", round(statistics.median(heights), 3), "m", len(heights))
    if "footprint_valid" in table.column_names:
        b.add("total", "all", "footprints_valid", sum(1 for it in items if it.get("footprint_valid")), "count", n)
    b.grouped("height_band", items, lambda r: _height_bin(r.get("height_m")),
              lambda g: _stats([it["footprint_area_m2"] for it in g if it.get("footprint_area_m2") is not None],
                               "footprint_area_m2", "m2"))
    for dim, col, fmt in (("storeys", "storeys", str), ("material", "material", str),
                          ("construction_decade", "year_of_construction", lambda y: f"{int(y) // 10 * 10}s"),
                          ("lod", "lod", str)):
        if col in table.column_names:
            b.grouped(dim, items, lambda r, c=col, f=fmt: None if r.get(c) is None else f(r[c]), lambda g: [])
    if "district" in table.column_names and any(it.get("district") for it in items):
        b.grouped("district", items, lambda r: r.get("district"),
                  lambda g: _stats([it["footprint_area_m2"] for it in g if it.get("footprint_area_m2") is not None],
                                   "footprint_area_m2", "m2") +
                  _stats([it["height_m"] for it in g if it.get("height_m") is not None], "height_m", "m"))
    figures = {"buildings": n, "footprint_area_m2": round(sum(areas), 3),
               "height_m_median": round(statistics.median(heights), 3) if heights else None}
    return _profile("buildings", table, items, b, figures,
                    "footprints from CityJSON geometry (GroundSurface, else the union of projected surfaces) with "
                    "geodesic area on WGS84; height from measuredHeight, else the geometry's z-range", source_hash)


# --------------------------------------------------------------------------- networks
def network_profile(network, *, k: int = K_DEFAULT, topology: pa.Table | None = None,
                    source_hash: str | None = None) -> Profile:
    """A pipe network: element counts, components, geodesic and declared pipe length, length by
    material and diameter (cohort = pipes in the group), dead ends."""
    topology = topology if topology is not None else network.topology_table()
    s = network.summary()
    elements = s["nodes"] + s["links"]
    _enforce_k(elements, k, "network elements")
    b = _Builder(k)
    for name in ("nodes", "links", "components", "pipe_length_m", "declared_pipe_length_m"):
        b.add("total", "all", name, s[name], "m" if name.endswith("_m") else "count", elements)
    b.add("total", "all", "dead_ends", len(s["dead_ends"]), "count", elements)
    b.add("total", "all", "isolated_nodes", len(s["isolated_nodes"]), "count", elements)
    b.grouped("node_type", [{"t": nd.type} for nd in network.nodes.values()], lambda r: r["t"], lambda g: [])
    b.grouped("link_type", [{"t": ln.type} for ln in network.links], lambda r: r["t"], lambda g: [])
    pipes = [{"material": ln.material or "unknown", "diameter": "unknown" if ln.diameter is None else f"{ln.diameter:g}",
              "length_m": ln.length_m} for ln in network.links if ln.type == "Pipe" or ln.type not in ("Pump", "Valve")]
    for dim in ("material", "diameter"):
        b.grouped(dim, pipes, lambda r, d=dim: r[d],
                  lambda g: [("pipe_length_m", round(sum(it["length_m"] for it in g), 3), "m")])
    figures = {k_: s[k_] for k_ in ("nodes", "links", "components", "pipe_length_m", "declared_pipe_length_m")}
    figures["dead_ends"] = len(s["dead_ends"])
    prof = _profile("network", topology, [], b, figures,
                    "networkx graph of nodes and links; geodesic length on WGS84 (pyproj Geod) along each link's line "
                    "or start node → vertices → end node; dead end = non-storage node of degree 1", source_hash)
    return replace(prof, entities=elements)


# --------------------------------------------------------------------------- shared
def _need(table: pa.Table, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise PublishError(f"expected {what}; missing column(s): {', '.join(missing)}", code="profile_bad_input")


def _profile(kind: str, table: pa.Table, items: list, b: _Builder, figures: dict[str, Any], method: str,
             source_hash: str | None) -> Profile:
    meta = get_meta(table.schema)
    if not meta.get("entity_type") or not meta.get("twin_category"):
        raise PublishError("the source table carries no entity type / twin category (ingest it first)",
                           code="profile_bad_input")
    source = {"content_sha256": source_hash, "rows": table.num_rows} if source_hash else _source_of(table)
    return Profile(kind=kind, entity_type=meta["entity_type"], twin_category=meta["twin_category"],
                   region=meta.get("region"), entities=len(items), rows=b.rows,
                   method={"name": f"twinspace.{kind}_profile", "version": METHOD_VERSION, "description": method},
                   deid=b.deid(), bbox=meta.get("bbox"), source=source, figures=figures)
