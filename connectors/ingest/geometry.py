"""GeoJSON geometry through shapely: the true centroid (not the mean of the vertices), the geodesic
area on the WGS84 ellipsoid, the bounds and OGC validity.

Structure is checked here first (types, nesting, WGS84 ranges, ring sizes) so that a broken
geometry is an error naming what is wrong instead of a GEOS exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

GEOJSON_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                 "GeometryCollection"}
# How deep the coordinates array of each type is (Point: [x, y]; Polygon: [[[x, y], ...], ...]).
_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3}


@dataclass
class Geometry:
    lon: float
    lat: float
    bounds: tuple[float, float, float, float]
    area_m2: float | None  # polygons only
    valid: bool
    problem: str | None  # shapely's explanation when not valid
    geojson: str


def _position(p: Any, where: str) -> tuple[float, float]:
    if not isinstance(p, (list, tuple)) or len(p) < 2 or not all(
            isinstance(c, (int, float)) and not isinstance(c, bool) for c in p):
        raise ValueError(f"{where}: a position must be an array of 2 or 3 numbers, got {json.dumps(p)[:60]}")
    lon, lat = float(p[0]), float(p[1])
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValueError(f"position ({lon}, {lat}) is outside WGS84 lon/lat ranges")
    return lon, lat


def _check(coords: Any, depth: int, gtype: str, where: str) -> int:
    """Check a coordinates array of the given depth; returns how many positions it holds."""
    if depth == 0:
        _position(coords, where)
        return 1
    if not isinstance(coords, (list, tuple)):
        raise ValueError(f"{where}: coordinates must be nested arrays of numbers")
    n = sum(_check(c, depth - 1, gtype, where) for c in coords)
    if gtype in ("LineString", "MultiLineString") and depth == 1 and len(coords) < 2:
        raise ValueError(f"{where}: a line needs at least 2 positions")
    if gtype in ("Polygon", "MultiPolygon") and depth == 1:
        if len(coords) < 4:
            raise ValueError(f"{where}: a polygon ring needs at least 4 positions")
        if list(coords[0][:2]) != list(coords[-1][:2]):
            raise ValueError(f"{where}: a polygon ring must end where it starts (closed ring)")
    return n


def check_structure(geom: Any, where: str = "geometry") -> None:
    if not isinstance(geom, dict) or geom.get("type") not in GEOJSON_TYPES:
        raise ValueError("not a GeoJSON geometry (needs a 'type' among Point, Polygon, ...)")
    if geom["type"] == "GeometryCollection":
        parts = geom.get("geometries")
        if not isinstance(parts, list) or not parts:
            raise ValueError("a GeometryCollection needs a non-empty 'geometries' array")
        for g in parts:
            check_structure(g, where)
        return
    if "coordinates" not in geom:
        raise ValueError(f"{geom['type']} geometry has no 'coordinates'")
    if _check(geom["coordinates"], _DEPTH[geom["type"]], geom["type"], where) == 0:
        raise ValueError("geometry has no positions")


def geometry_positions(geom: Any) -> list[tuple[float, float]]:
    """Every (lon, lat) position of a checked GeoJSON geometry (ValueError if malformed)."""
    check_structure(geom)

    def walk(g: Any) -> list[tuple[float, float]]:
        if g["type"] == "GeometryCollection":
            return [p for part in g["geometries"] for p in walk(part)]
        out: list[tuple[float, float]] = []

        def flat(c: Any, depth: int) -> None:
            if depth == 0:
                out.append((float(c[0]), float(c[1])))
            else:
                for x in c:
                    flat(x, depth - 1)

        flat(g["coordinates"], _DEPTH[g["type"]])
        return out

    return walk(geom)


def analyse(geom: Any) -> Geometry:
    """Centroid, bounds, geodesic area and validity of one GeoJSON geometry (ValueError if malformed)."""
    import shapely
    from shapely.geometry import shape
    from shapely.validation import explain_validity

    check_structure(geom)
    try:
        shp = shape(geom)
    except (shapely.errors.ShapelyError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"geometry cannot be built: {exc}") from None
    valid = bool(shp.is_valid)
    problem = None if valid else explain_validity(shp)
    # The centroid of an invalid polygon (e.g. a bow-tie) is meaningless; use its repaired form.
    solid = shp if valid else shapely.make_valid(shp)
    c = solid.centroid if not solid.is_empty else shp.representative_point()
    lon, lat = (float(geom["coordinates"][0]), float(geom["coordinates"][1])) if geom["type"] == "Point" else (
        float(c.x), float(c.y))
    area = None
    if shp.geom_type in ("Polygon", "MultiPolygon") or (
            shp.geom_type == "GeometryCollection" and any(g.geom_type.endswith("Polygon") for g in shp.geoms)):
        area = round(abs(_geod().geometry_area_perimeter(solid)[0]), 3)
    minx, miny, maxx, maxy = shp.bounds
    return Geometry(lon=lon, lat=lat, bounds=(minx, miny, maxx, maxy), area_m2=area, valid=valid,
                    problem=problem, geojson=json.dumps(geom, sort_keys=True))


_GEOD = None


def _geod():
    global _GEOD
    if _GEOD is None:
        from pyproj import Geod

        _GEOD = Geod(ellps="WGS84")
    return _GEOD
