"""CityJSON 2.0 ingest on the real Delft and Rotterdam models; figures checked against plain
computations on the raw JSON (shoelace areas, z-ranges, attribute values, pyproj corners)."""

from __future__ import annotations

import copy
import json
from collections import Counter

import numpy as np
import pytest
from pyproj import Transformer

from twinspace.entity_codes import CODE_RE, entity_code
from connectors.errors import IngestError
from connectors.tables import get_meta
from connectors.twins.cityjson import TYPE_CATEGORY, objects_table, read_cityjson


def raw(data, name):
    return json.loads((data / "cityjson" / name).read_text(encoding="utf-8"))


def real_vertices(doc):
    return np.asarray(doc["vertices"], dtype=float) * doc["transform"]["scale"] + doc["transform"]["translate"]


def shoelace(xy):
    x, y = xy[:, 0], xy[:, 1]
    return abs(0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def test_delft_objects_types_categories_and_codes(data, delft):
    doc = raw(data, "delft.city.json")
    assert Counter(o.type for o in delft.objects) == Counter(o["type"] for o in doc["CityObjects"].values())
    assert len(delft.objects) == 570
    cats = {o.type: o.category for o in delft.objects}
    assert cats == {"Building": "building_structure", "Road": "building_structure", "Bridge": "building_structure",
                    "PlantCover": "natural_entity", "LandUse": "natural_entity", "WaterBody": "natural_entity",
                    "GenericCityObject": "other"}
    for o in delft.objects:
        assert CODE_RE.match(o.code)
        assert o.code == entity_code("NL-ZH", TYPE_CATEGORY[o.type], o.type, o.id)
        assert o.attributes == doc["CityObjects"][o.id].get("attributes", {})
        assert o.lod == "1"
    assert len({o.code for o in delft.objects}) == 570
    assert delft.crs == "EPSG:28992" and delft.version == "2.0"


def test_delft_footprint_areas_match_the_roof_faces(data, delft):
    # LoD1 blocks: the horizontal faces at the top are the footprint (these solids have no floor faces)
    doc = raw(data, "delft.city.json")
    v = real_vertices(doc)
    total = 0.0
    for o in delft.of_type("Building"):
        g = doc["CityObjects"][o.id]["geometry"][0]
        zmax = max(v[i, 2] for shell in g["boundaries"] for s in shell for r in s for i in r)
        area = sum(shoelace(v[s[0], :2]) for shell in g["boundaries"] for s in shell
                   if np.ptp(v[s[0], 2]) < 1e-9 and abs(v[s[0][0], 2] - zmax) < 1e-9)
        assert o.area_m2 == pytest.approx(area, rel=1e-3)  # geodesic vs RD-planar: RD scale error ~1e-4
        assert o.valid
        total += area
    assert sum(o.area_m2 for o in delft.of_type("Building")) == pytest.approx(total, rel=1e-3)
    assert total == pytest.approx(8654.03, abs=0.1)


def test_delft_heights_centroids_and_extent(data, delft):
    doc = raw(data, "delft.city.json")
    for o in delft.of_type("Building"):
        assert o.height == (float(doc["CityObjects"][o.id]["attributes"]["measuredHeight"]), "measuredHeight")
    to84 = Transformer.from_crs("EPSG:28992", "EPSG:4326", always_xy=True)
    x0, y0, _, x1, y1, _ = doc["metadata"]["geographicalExtent"]
    lons, lats = to84.transform([x0, x1, x0, x1], [y0, y0, y1, y1])
    w, s, e, n = delft.bbox
    assert min(lons) - 1e-4 <= w < e <= max(lons) + 1e-4 and min(lats) - 1e-4 <= s < n <= max(lats) + 1e-4
    for o in delft.objects:
        assert w <= o.lon <= e and s <= o.lat <= n


def test_rotterdam_needs_a_declared_crs(data):
    with pytest.raises(IngestError) as err:
        read_cityjson(data / "cityjson" / "rotterdam_subset.city.json", region="NL-ZH")
    assert err.value.code == "cityjson_missing_crs" and "rotterdam_subset.city.json" in err.value.message


def test_rotterdam_lod2_ground_surfaces_and_heights(data, rotterdam):
    doc = raw(data, "rotterdam_subset.city.json")
    v = real_vertices(doc)
    assert len(rotterdam.objects) == 16 and {o.lod for o in rotterdam.objects} == {"2"}
    for o in rotterdam.objects:
        g = doc["CityObjects"][o.id]["geometry"][0]
        kinds = [s["type"] for s in g["semantics"]["surfaces"]]
        ground = [surf for surf, val in zip(g["boundaries"], g["semantics"]["values"]) if kinds[val] == "GroundSurface"]
        assert ground
        assert o.area_m2 == pytest.approx(sum(shoelace(v[s[0], :2]) for s in ground), rel=1e-3)
        zs = v[[i for surf in g["boundaries"] for r in surf for i in r], 2]
        assert o.height == (pytest.approx(zs.max() - zs.min(), abs=1e-3), "geometry z-range")
        assert o.code.startswith("NL-ZH:BS:Building:") and "{" not in o.code
        assert 4.4 < o.lon < 4.5 and 51.9 < o.lat < 51.92  # Rotterdam centre


def test_objects_table_one_type_with_catalog_facts(delft):
    t = objects_table(delft, "Building", district_attribute="bronhouder")
    meta = get_meta(t.schema)
    assert t.num_rows == 160 and meta["entity_type"] == "Building" and meta["twin_category"] == "building_structure"
    assert meta["crs"] == "EPSG:28992" and meta["cityjson_version"] == "2.0"
    w, s, e, n = meta["bbox"]
    assert all(w <= x <= e and s <= y <= n for x, y in zip(t.column("lon").to_pylist(), t.column("lat").to_pylist()))
    assert set(t.column("district").to_pylist()) == {"G0503"}
    assert str(t.schema.field("storeys").type) == "int64"
    assert json.loads(t.column("geometry")[0].as_py())["type"] in ("Polygon", "MultiPolygon")
    with pytest.raises(IngestError, match="no Tunnel objects"):
        objects_table(delft, "Tunnel")


@pytest.fixture(scope="module")
def delft_doc(data):
    return raw(data, "delft.city.json")


def _first(doc, city_type):
    return next(k for k, o in doc["CityObjects"].items() if o["type"] == city_type)


@pytest.mark.parametrize("version", ["1.1", "1.0", "3.0", None, 2.0])
def test_unknown_version_refused(delft_doc, version):
    doc = copy.deepcopy(delft_doc)
    doc["version"] = version
    with pytest.raises(IngestError) as err:
        read_cityjson(doc, region="NL-ZH", name="delft-variant.json")
    assert err.value.code == "cityjson_unsupported_version" and "delft-variant.json" in err.value.message


def test_broken_vertex_index_names_the_object(delft_doc):
    doc = copy.deepcopy(delft_doc)
    key = _first(doc, "Road")
    doc["CityObjects"][key]["geometry"][0]["boundaries"][0][0][1] = len(doc["vertices"])
    with pytest.raises(IngestError) as err:
        read_cityjson(doc, region="NL-ZH")
    assert err.value.code == "cityjson_bad_vertex_index"
    assert key in err.value.message and "geometry #0 (MultiSurface)" in err.value.message
    doc["CityObjects"][key]["geometry"][0]["boundaries"][0][0][1] = -1
    with pytest.raises(IngestError, match="out of range"):
        read_cityjson(doc, region="NL-ZH")
    doc["CityObjects"][key]["geometry"][0]["boundaries"][0][0] = 7  # a ring that is not an array
    with pytest.raises(IngestError) as err:
        read_cityjson(doc, region="NL-ZH")
    assert err.value.code == "cityjson_malformed_geometry" and key in err.value.message


def test_non_integer_vertices_and_bad_region(delft_doc):
    doc = copy.deepcopy(delft_doc)
    doc["vertices"][5] = [1.5, 2, 3]
    with pytest.raises(IngestError) as err:
        read_cityjson(doc, region="NL-ZH")
    assert err.value.code == "cityjson_malformed" and "integers" in err.value.message
    doc["vertices"][5] = [1, 2]
    with pytest.raises(IngestError, match="integers"):
        read_cityjson(doc, region="NL-ZH")
    with pytest.raises(IngestError) as err:
        read_cityjson(delft_doc, region="Netherlands")
    assert err.value.code == "ingest_bad_region"


def test_missing_crs_and_dangling_children(delft_doc):
    doc = copy.deepcopy(delft_doc)
    del doc["metadata"]["referenceSystem"]
    with pytest.raises(IngestError) as err:
        read_cityjson(doc, region="NL-ZH")
    assert err.value.code == "cityjson_missing_crs"
    assert read_cityjson(doc, region="NL-ZH", crs="EPSG:7415").crs == "EPSG:28992"
    key = _first(doc, "Building")
    doc["CityObjects"][key]["children"] = ["no-such-part"]
    with pytest.raises(IngestError) as err:
        read_cityjson(doc, region="NL-ZH", crs="EPSG:28992")
    assert err.value.code == "cityjson_dangling_reference" and key in err.value.message
    with pytest.raises(IngestError) as err:
        read_cityjson({**delft_doc, "metadata": {"referenceSystem": "EPSG:999999"}}, region="NL-ZH")
    assert err.value.code == "cityjson_bad_crs"
    with pytest.raises(IngestError) as err:  # RD metres read as degrees: nowhere on Earth
        read_cityjson({**delft_doc, "metadata": {"referenceSystem": "EPSG:4326"}}, region="NL-ZH")
    assert err.value.code == "cityjson_bad_crs" and "CityObject" in err.value.message


def test_parts_templates_and_extensions():
    """A Building modelled only by BuildingParts, a tree as a GeometryInstance, an extension type."""
    doc = {"type": "CityJSON", "version": "2.0", "transform": {"scale": [0.01, 0.01, 0.01], "translate": [121000, 2770000, 0]},
           "metadata": {"referenceSystem": "https://www.opengis.net/def/crs/EPSG/0/3826"},
           "vertices": [[0, 0, 0], [1000, 0, 0], [1000, 1000, 0], [0, 1000, 0], [0, 0, 900], [1000, 0, 900],
                        [1000, 1000, 900], [0, 1000, 900], [5000, 5000, 0]],
           "geometry-templates": {"templates": [{"type": "MultiSurface", "lod": "1",
                                                 "boundaries": [[[0, 1, 2, 3]]]}],
                                  "vertices-templates": [[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]]},
           "CityObjects": {
               "B1": {"type": "Building", "children": ["B1-p1"], "attributes": {"storeysAboveGround": 3,
                                                                                "yearOfConstruction": 1987}},
               "B1-p1": {"type": "BuildingPart", "parents": ["B1"], "geometry": [{
                   "type": "Solid", "lod": "1.2", "boundaries": [[[[0, 3, 2, 1]], [[4, 5, 6, 7]], [[0, 1, 5, 4]],
                                                                   [[1, 2, 6, 5]], [[2, 3, 7, 6]], [[3, 0, 4, 7]]]],
                   "semantics": {"surfaces": [{"type": "GroundSurface"}, {"type": "RoofSurface"}, {"type": "WallSurface"}],
                                 "values": [[0, 1, 2, 2, 2, 2]]}}]},
               "T1": {"type": "SolitaryVegetationObject", "geometry": [{
                   "type": "GeometryInstance", "template": 0, "boundaries": [8],
                   "transformationMatrix": [2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]}]},
               "N1": {"type": "+NoiseBarrier", "geometry": []}}}
    m = read_cityjson(doc, region="TW-TPE")
    by = {o.id: o for o in m.objects}
    assert by["B1-p1"].area_m2 == pytest.approx(100.0, rel=1e-3)  # 10 m x 10 m in TWD97 metres
    assert by["B1"].area_m2 == by["B1-p1"].area_m2 and by["B1"].height == (9.0, "geometry z-range")
    assert by["T1"].area_m2 == pytest.approx(16.0, rel=1e-3) and by["T1"].category == "natural_entity"
    assert by["N1"].code == "TW-TPE:OT:NoiseBarrier:N1" and by["N1"].footprint is None
    t = objects_table(m, "Building")
    assert t.column("storeys").to_pylist() == [3] and t.column("year_of_construction").to_pylist() == [1987]
    bad = copy.deepcopy(doc)
    bad["CityObjects"]["T1"]["geometry"][0]["template"] = 4
    with pytest.raises(IngestError, match="T1.*template 4"):
        read_cityjson(bad, region="TW-TPE")


def _to_sequence(doc, city_type="Building"):
    """Delft as a CityJSON Text Sequence: a header, then one CityJSONFeature per object with its own
    (re-indexed) vertices — the form 3D BAG and cjio export."""
    header = {k: v for k, v in doc.items() if k not in ("CityObjects", "vertices")}
    lines = [json.dumps({**header, "CityObjects": {}, "vertices": []})]
    for key, co in doc["CityObjects"].items():
        if co["type"] != city_type:
            continue
        local: dict[int, int] = {}

        def remap(node):
            if isinstance(node, int):
                return local.setdefault(node, len(local))
            return [remap(c) for c in node]

        geoms = [{**g, "boundaries": remap(g["boundaries"])} for g in co["geometry"]]
        verts = [doc["vertices"][i] for i, _ in sorted(local.items(), key=lambda kv: kv[1])]
        lines.append(json.dumps({"type": "CityJSONFeature", "id": key, "CityObjects": {key: {**co, "geometry": geoms}},
                                 "vertices": verts}))
    return "\n".join(lines) + "\n"


def test_cityjson_text_sequence(tmp_path, delft_doc, delft):
    path = tmp_path / "delft.city.jsonl"
    path.write_text(_to_sequence(delft_doc))
    seq = read_cityjson(path, region="NL-ZH")
    whole = {o.id: o for o in delft.of_type("Building")}
    assert len(seq.objects) == 160
    for o in seq.objects:
        assert o.area_m2 == whole[o.id].area_m2 and o.height == whole[o.id].height and o.code == whole[o.id].code
    lines = path.read_text().splitlines()
    feat = json.loads(lines[3])
    feat["CityObjects"][feat["id"]]["geometry"][0]["boundaries"][0][0][0][0] = len(feat["vertices"])
    lines[3] = json.dumps(feat)
    path.write_text("\n".join(lines))
    with pytest.raises(IngestError) as err:
        read_cityjson(path, region="NL-ZH")
    assert err.value.code == "cityjson_bad_vertex_index" and "line 4" in err.value.message and feat["id"] in err.value.message
