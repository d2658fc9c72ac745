"""Ingest of the real shared samples and bad inputs."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from twinspace.entity_codes import entity_code, is_entity_code
from connectors.errors import IngestError
from connectors.ingest import ingest_csv, ingest_geojson, ingest_ngsi, ingest_taipei_parking
from connectors.tables import get_meta, read_table


@pytest.fixture(scope="module")
def sdm(shared_dir):
    return shared_dir / "data" / "smart-data-models"


def test_every_ngsi_ld_sample_ingests_or_fails_cleanly(sdm):
    files = sorted(sdm.glob("*/example*.jsonld"))
    assert len(files) >= 70
    ok = 0
    for f in files:
        raw = json.loads(f.read_text()) if f.parent.name != "PointOfInterest" or "normalized" in f.name else None
        if raw is None:
            continue
        result = ingest_ngsi(f, region="GB")
        assert result.table.num_rows == 1
        row = result.table.to_pylist()[0]
        assert row["source_id"] == raw["id"]
        assert result.meta["entity_type"] == raw["type"]
        assert is_entity_code(row["entity_code"])
        assert "@context" not in result.table.column_names
        ok += 1
    assert ok == len(files) - 1


def test_invalid_upstream_jsonld_is_a_clear_error(sdm):
    with pytest.raises(IngestError) as info:
        ingest_ngsi(sdm / "PointOfInterest" / "example.jsonld")
    assert info.value.code == "ingest_malformed_json"
    assert "line 43" in info.value.message


def test_normalized_and_key_values_agree(sdm):
    kv = ingest_ngsi(sdm / "Building" / "example.jsonld").table.to_pylist()[0]
    norm = ingest_ngsi(sdm / "Building" / "example-normalized.jsonld").table.to_pylist()[0]
    for key in ("source_id", "floorsAboveGround", "description", "lon", "lat", "dataProvider"):
        assert kv[key] == norm[key]
    assert kv["floorsAboveGround"] == 7
    # the true centroid of the 1x1 square (the mean of its 5 vertices, closing one included, was 100.4)
    assert (kv["lon"], kv["lat"]) == pytest.approx((100.5, 0.5))
    assert kv["area_m2"] == pytest.approx(12_308_778_361, rel=1e-3)  # 1 degree square at the equator


def test_several_files_one_type_and_mixed_types_refused(sdm, tmp_path):
    a = ingest_ngsi([sdm / "Building" / "example.jsonld", sdm / "Building" / "example-normalized.jsonld"])
    assert a.table.num_rows == 2
    with pytest.raises(IngestError) as info:
        ingest_ngsi([sdm / "Building" / "example.jsonld", sdm / "Streetlight" / "example.jsonld"])
    assert info.value.code == "ingest_mixed_types"
    only = ingest_ngsi([sdm / "Building" / "example.jsonld", sdm / "Streetlight" / "example.jsonld"],
                       entity_type="Streetlight")
    assert only.meta["entity_type"] == "Streetlight" and only.meta["twin_category"] == "goods_equipment"


@pytest.mark.parametrize("doc,code", [
    ([{"type": "Building"}], "ingest_malformed_ngsi"),
    ([{"id": "urn:x", "type": "Building", "location": {"type": "Point", "coordinates": [500, 0]}}],
     "ingest_malformed_geometry"),
    (["not an object"], "ingest_malformed_ngsi"),
])
def test_malformed_ngsi(tmp_path, doc, code):
    f = tmp_path / "bad.jsonld"
    f.write_text(json.dumps(doc))
    with pytest.raises(IngestError) as info:
        ingest_ngsi(f)
    assert info.value.code == code


def test_geojson_feature_sample_and_malformed(sdm, tmp_path):
    r = ingest_geojson(sdm / "OffStreetParking" / "example-geojsonfeature.json", region="PT")
    row = r.table.to_pylist()[0]
    assert r.meta["entity_type"] == "OffStreetParking"
    assert row["lon"] == pytest.approx(-8.60961198807)
    assert row["entity_code"] == "PT:BS:OffStreetParking:porto-ParkingLot-23889"
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": 1, "geometry": {"type": "Point", "coordinates": [121.5, 25.0]}, "properties": {"a": 1}},
        {"type": "Feature", "id": 2, "geometry": {"type": "Polygon", "coordinates": [[[121.4, 24.9], [121.6, 24.9],
                                                                                       [121.6, 25.1], [121.4, 24.9]]]},
         "properties": {"a": 2.5}}]}
    f = tmp_path / "ok.geojson"
    f.write_text(json.dumps(fc))
    r = ingest_geojson(f, entity_type="Streetlight")
    assert r.meta["bbox"] == [121.4, 24.9, 121.6, 25.1]
    assert r.table.schema.field("a").type == pa.float64()
    for bad, code in (({"type": "Topology"}, "ingest_malformed_geojson"),
                      ({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Point"}}]},
                       "ingest_malformed_geometry"),
                      ({"type": "FeatureCollection", "features": {}}, "ingest_malformed_geojson")):
        f.write_text(json.dumps(bad))
        with pytest.raises(IngestError) as info:
            ingest_geojson(f)
        assert info.value.code == code
    f.write_bytes(b'{"type": "FeatureCollection", "features": [')
    with pytest.raises(IngestError):
        ingest_geojson(f)


def test_taipei_parking_feed(shared_dir):
    r = ingest_taipei_parking(shared_dir / "data" / "taipei-parking" / "TCMSV_alldesc.json")
    t = r.table
    raw = json.loads((shared_dir / "data" / "taipei-parking" / "TCMSV_alldesc.json").read_text())["data"]["park"]
    assert t.num_rows == len(raw) == 1765
    assert sum(v or 0 for v in t.column("total_car").to_pylist()) == sum(p["totalcar"] for p in raw)
    w, s, e, n = r.meta["bbox"]
    assert 121.4 < w < e < 121.7 and 24.9 < s < n < 25.25  # Taipei City, after TWD97 → WGS84
    codes = t.column("entity_code").to_pylist()
    assert len(set(codes)) == len(codes) and all(c.startswith("TW-TPE:BS:OffStreetParking:") for c in codes)
    assert t.schema.field("handicap_spaces").type == pa.int64()  # strings normalised to numbers


def test_entity_codes_are_stable_and_validated():
    assert entity_code("TW-TPE", "vehicle", "Vehicle", "urn:ngsi-ld:Vehicle:bus 12") == "TW-TPE:VH:Vehicle:bus-12"
    assert entity_code("TW-TPE", "vehicle", "Vehicle", "urn:ngsi-ld:Vehicle:bus 12") == \
        entity_code("TW-TPE", "vehicle", "Vehicle", "urn:ngsi-ld:Vehicle:bus 12")
    with pytest.raises(ValueError):
        entity_code("taipei", "vehicle", "Vehicle", "x")
    with pytest.raises(ValueError):
        entity_code("TW", "car", "Vehicle", "x")


def test_csv_streams_adult_into_ipc(shared_dir, tmp_path):
    out = tmp_path / "adult.arrow"
    seen = []
    r = ingest_csv(shared_dir / "data" / "uci-adult-arx" / "adult.csv", out, delimiter=";", entity_type="Person",
                   category="natural_person", block_size=64 * 1024, on_progress=lambda d, t: seen.append(d))
    assert r.meta["rows"] == 30162
    t = read_table(out)
    assert t.num_rows == 30162 and t.column_names[:2] == ["sex", "age"]
    assert get_meta(t.schema)["twin_category"] == "natural_person"
    assert len(seen) > 5  # streamed in many blocks


def test_csv_bad_inputs(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(IngestError) as info:
        ingest_csv(f)
    assert info.value.code == "ingest_malformed_csv" and "expected 3 columns, got 2" in info.value.message
    f.write_bytes("name,district\n".encode() + "王小明,中山區\n".encode("big5"))
    with pytest.raises(IngestError) as info:
        ingest_csv(f, encoding="utf-8")  # declared wrongly: refused, not garbled
    assert info.value.code == "ingest_bad_encoding" and "line 2" in info.value.message
    assert ingest_csv(f, encoding="big5").table.to_pylist() == [{"name": "王小明", "district": "中山區"}]
    assert ingest_csv(f).table.to_pylist() == [{"name": "王小明", "district": "中山區"}]  # detected
    f.write_text("a,b\n1,2\n")
    with pytest.raises(IngestError) as info:
        ingest_csv(f, require_columns=["a", "zip"])
    assert info.value.code == "ingest_missing_columns" and "zip" in info.value.message
