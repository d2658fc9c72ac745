"""Linking Delft's CityJSON buildings with a second provider's register derived in the test: by the
declared BAG identifier, and spatially (footprints shifted by a known distance in RD metres)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import mapping, shape

from connectors.errors import IngestError
from connectors.ingest import ingest_geojson
from connectors.twins.cityjson import objects_table
from connectors.twins.linking import apply_unified, link_by_identifier, link_spatial

TO_RD = Transformer.from_crs("EPSG:4326", "EPSG:28992", always_xy=True)
TO_84 = Transformer.from_crs("EPSG:28992", "EPSG:4326", always_xy=True)


def _shift(geom_json: str, dx: float) -> dict:
    """Move a WGS84 footprint dx metres east in RD New and back."""
    import numpy as np

    g = shape(json.loads(geom_json))
    g = shapely.transform(g, lambda xy: np.column_stack(TO_RD.transform(xy[:, 0], xy[:, 1])))
    g = shapely.transform(g, lambda xy: xy + [dx, 0])
    g = shapely.transform(g, lambda xy: np.column_stack(TO_84.transform(xy[:, 0], xy[:, 1])))
    return mapping(g)


@pytest.fixture(scope="module")
def left(delft):
    return objects_table(delft, "Building")


def register(tmp_path, left, *, shift_m: float, drop: int = 10, extra: int = 3):
    """A cadastre-like GeoJSON: every Delft building but the first ``drop``, keyed by its BAG id,
    footprints moved ``shift_m`` east, plus ``extra`` buildings nowhere near Delft."""
    rows = left.to_pylist()[drop:]
    feats = [{"type": "Feature", "id": f"kad-{i}", "geometry": _shift(r["geometry"], shift_m),
              "properties": {"bag_id": json.loads(r["attributes"])["identificatiebagpnd"]}} for i, r in enumerate(rows)]
    for j in range(extra):
        feats.append({"type": "Feature", "id": f"far-{j}", "geometry": {"type": "Point", "coordinates": [5.1 + j / 100, 52.1]},
                      "properties": {"bag_id": f"999{j}"}})
    path = tmp_path / "register.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    truth = {f"NL-ZH:BS:Building:kad-{i}": r["entity_code"] for i, r in enumerate(rows)}
    return ingest_geojson(path, entity_type="Building", category="building_structure", region="NL-ZH").table, truth


def test_link_by_declared_identifier(tmp_path, left):
    right, truth = register(tmp_path, left, shift_m=0.0)
    res = link_by_identifier(left, right, left_key="attributes.identificatiebagpnd", right_key="bag_id")
    assert {m.right_code: m.left_code for m in res.matches} == truth and len(truth) == 150
    assert len(res.unmatched_left) == 10 and len(res.unmatched_right) == 3
    out = apply_unified(right, res)
    codes = dict(zip(out.column("entity_code").to_pylist(), out.column("unified_code").to_pylist()))
    assert all(codes[r] == lc for r, lc in truth.items()) and codes["NL-ZH:BS:Building:far-0"] == "NL-ZH:BS:Building:far-0"
    cw = res.crosswalk(region="NL-ZH")
    assert cw.num_rows == 150 and set(cw.column("method").to_pylist()) == {"identifier"}


def test_link_spatially_with_explicit_tolerance(tmp_path, left):
    right, truth = register(tmp_path, left, shift_m=0.4)
    res = link_spatial(left, right, tolerance_m=1.0)
    assert {m.right_code: m.left_code for m in res.matches} == truth
    assert all(m.distance_m == pytest.approx(0.4, abs=0.01) and m.iou > 0.5 for m in res.matches)
    assert len(res.unmatched_right) == 3
    assert link_spatial(left, right, tolerance_m=0.3).matches == []  # 0.4 m apart is not "the same" at 0.3 m
    assert res.params["tolerance_m"] == 1.0


def test_identifier_ambiguity_and_bad_tolerance(tmp_path, left):
    right, _ = register(tmp_path, left, shift_m=0.0)
    dup = right.set_column(right.column_names.index("bag_id"), "bag_id", pa.array(["x"] * right.num_rows))
    with pytest.raises(IngestError) as err:
        link_by_identifier(dup, dup, left_key="bag_id", right_key="bag_id")
    assert err.value.code == "link_ambiguous_identifier"
    for tol in (0, -1, float("nan"), 1e9):
        with pytest.raises(IngestError) as err:
            link_spatial(left, right, tolerance_m=tol)
        assert err.value.code == "link_bad_tolerance"
    with pytest.raises(IngestError) as err:
        link_by_identifier(left, right.drop_columns(["entity_code"]), left_key="source_id", right_key="bag_id")
    assert err.value.code == "link_missing_codes"
