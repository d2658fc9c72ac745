"""Ingest of files as they come from the field: CSV dialects and encodings, Smart Data Models
samples (every one, JSON and their flattened CSV form), true geometry, hostile JSON."""

from __future__ import annotations

import json

import pytest
from shapely.geometry import shape

from connectors.errors import IngestError
from connectors.ingest import detect_format, ingest_csv, ingest_geojson, ingest_ngsi

SKIP_KEYS = {"id", "type", "@context", "location"}
# Refused on purpose, with the reason the test checks (see smart-data-models/README.md).
REFUSED = {("PointOfInterest", "example.jsonld"): ("ingest_malformed_json", "line 43 column 3")}


@pytest.fixture(scope="module")
def sdm(shared_dir):
    return shared_dir / "data" / "smart-data-models"


def _plain(doc: dict) -> dict:
    """Key-values view of an NGSI-LD / NGSI-v2 normalized entity (attribute -> value)."""
    out = {}
    for k, v in doc.items():
        if isinstance(v, dict) and v.get("type") in ("Property", "GeoProperty", "Relationship") or (
                isinstance(v, dict) and "value" in v and set(v) <= {"type", "value", "metadata"}):
            v = v.get("value", v.get("object"))
        out[k] = v
    return out


def test_every_smart_data_models_sample_ingests_or_is_refused_with_a_reason(sdm):
    files = sorted(sdm.glob("*/example*.json*"))
    assert len(files) >= 150
    refused = {}
    for f in files:
        try:
            result = (ingest_geojson if detect_format(f) == "geojson" else ingest_ngsi)(f, region="GB")
        except IngestError as exc:
            refused[(f.parent.name, f.name)] = (exc.code, exc.message)
            continue
        raw = json.loads(f.read_text(encoding="utf-8"))
        if raw.get("type") == "Feature":
            raw = {"id": raw["id"], **raw["properties"], "location": raw["geometry"]}
        raw = _plain(raw)
        row = result.table.to_pylist()[0]
        assert result.table.num_rows == 1, f
        assert row["source_id"] == raw["id"] and result.meta["entity_type"] == raw["type"], f
        assert set(raw) - SKIP_KEYS <= set(result.table.column_names), f
        geo = raw.get("location")
        if isinstance(geo, dict) and "value" in geo:
            geo = geo["value"]
        if geo:
            c = shape(geo).centroid
            assert (row["lon"], row["lat"]) == pytest.approx((c.x, c.y)), f
            w, s, e, n = result.meta["bbox"]
            assert w - 1e-9 <= row["lon"] <= e + 1e-9 and s - 1e-9 <= row["lat"] <= n + 1e-9, f
        else:
            assert "lon" not in result.table.column_names, f
    assert set(refused) == set(REFUSED), refused
    for key, (code, where) in REFUSED.items():
        assert refused[key][0] == code and where in refused[key][1]


def _flatten(v, prefix=""):
    """The Smart Data Models CSV export convention: ``a__b__0_`` for ``{"a": {"b": [x]}}``."""
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _flatten(x, f"{prefix}{k}__")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from _flatten(x, f"{prefix}{i}__")
    else:
        yield prefix[:-2] + "_", v


def _cell(v) -> str:
    return "" if v is None else "true" if v is True else "false" if v is False else str(v)


def test_smart_data_models_flattened_csv_exports_rebuild_the_entity(sdm, tmp_path):
    """Quoted headers, `", "` separators and `id_` names: once garbled silently, now the same
    columns and location as the JSON example."""
    q = lambda s: '"' + s.replace('"', '""') + '"'  # noqa: E731
    n = 0
    for f in sorted(sdm.glob("*/example.json")):
        doc = json.loads(f.read_text(encoding="utf-8"))
        pairs = list(_flatten(doc))
        out = tmp_path / f"{f.parent.name}.csv"
        out.write_text(", ".join(q(k) for k, _ in pairs) + "\n" + ", ".join(q(_cell(v)) for _, v in pairs) + "\n",
                       encoding="utf-8")
        got = ingest_csv(out, region="GB")
        ref = ingest_ngsi(f, region="GB")
        assert got.meta["source_format"] == "csv-smart-data-models"
        assert got.meta["entity_type"] == doc["type"]
        row, want = got.table.to_pylist()[0], ref.table.to_pylist()[0]
        assert row["source_id"] == doc["id"] and row["entity_code"] == want["entity_code"]
        empty = {k for k, v in doc.items() if v in ("", None, [], {})}  # CSV cannot tell "" from missing
        assert set(got.table.column_names) == set(ref.table.column_names) - empty, f
        if "lon" in want:
            assert (row["lon"], row["lat"]) == pytest.approx((want["lon"], want["lat"]))
        n += 1
    assert n == 38


@pytest.mark.parametrize("name,data,dialect,rows", [
    ("bom", "\ufeffname,age\nA,1\nB,2\n".encode(), "utf-8-sig with BOM, comma-separated",
     [{"name": "A", "age": 1}, {"name": "B", "age": 2}]),
    ("semicolons", b"name;age\nA;1\n", "utf-8, semicolon-separated", [{"name": "A", "age": 1}]),
    ("tabs", b"name\tage\nA\t1\n", "utf-8, tab-separated", [{"name": "A", "age": 1}]),
    ("quotes and spaces", b'"name", "age", "note"\n"A, b", "1", "say ""hi"""\n',
     "utf-8, comma-separated, spaces after separators", [{"name": "A, b", "age": 1, "note": 'say "hi"'}]),
    ("gbk", "名称,区\n王小明,中山区\n李四,大安区\n".encode("gbk"), "gbk, comma-separated",
     [{"名称": "王小明", "区": "中山区"}, {"名称": "李四", "区": "大安区"}]),
    ("big5", "名稱,區\n王小明,中山區\n李四,大安區\n".encode("big5"), "cp950, comma-separated",
     [{"名稱": "王小明", "區": "中山區"}, {"名稱": "李四", "區": "大安區"}]),
    ("gbk semicolons spaces", "名称; 值\n王; 1\n".encode("gbk"), "gbk, semicolon-separated, spaces after separators",
     [{"名称": "王", "值": 1}]),
])
def test_csv_dialects_and_encodings_are_detected(tmp_path, name, data, dialect, rows):
    f = tmp_path / "in.csv"
    f.write_bytes(data)
    r = ingest_csv(f)
    assert r.meta["csv_dialect"] == dialect
    assert r.table.to_pylist() == rows


@pytest.mark.parametrize("data,options,code,where", [
    (b"a,b,c\n1,2,3\n4,5\n", {}, "ingest_malformed_csv", "line 3: expected 3 columns, got 2"),
    ("a;b;c\n1;2;3\n区;5\n".encode("gbk"), {}, "ingest_malformed_csv", "line 3: expected 3 columns, got 2"),
    (b"a,b\n1,2\n3,x\n", {"column_types": {"b": "int64"}}, "ingest_malformed_csv", "line 3, column 'b'"),
    (b'a,b\n1,"never closed\n2,3\n', {}, "ingest_malformed_csv", "line 2, column 'b': a quoted field is never"),
    (b"a,b\n" + b"x,1\n" * 10 + b"\xff\xfe,2\n", {}, "ingest_bad_encoding", "line 12 column 1: byte 0xff"),
    ("a,b\n王,1\n".encode("big5"), {"encoding": "utf-8"}, "ingest_bad_encoding", "line 2"),
    (b"a,b\n1,2\n", {"encoding": "klingon"}, "ingest_bad_encoding", "unknown encoding 'klingon'"),
    (b"a,a\n1,2\n", {}, "ingest_malformed_csv", "a appear more than once"),
    (b"", {}, "ingest_empty", "empty"),
])
def test_csv_that_cannot_be_parsed_names_line_and_column(tmp_path, data, options, code, where):
    f = tmp_path / "bad.csv"
    f.write_bytes(data)
    with pytest.raises(IngestError) as info:
        ingest_csv(f, **options)
    assert info.value.code == code and where in info.value.message, info.value.message


def test_csv_encoding_error_beyond_the_sample_names_the_line(tmp_path):
    f = tmp_path / "big.csv"
    f.write_bytes(b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(20000)) + b"9,\xff\n")
    with pytest.raises(IngestError) as info:
        ingest_csv(f, block_size=1 << 16)
    assert info.value.code == "ingest_bad_encoding" and "line 20002, column 'name'" in info.value.message
    g = tmp_path / "big-gbk.csv"
    g.write_bytes("名,值\n".encode("gbk") + "王,1\n".encode("gbk") * 30000 + b"\x81\n")
    with pytest.raises(IngestError) as info:
        ingest_csv(g, block_size=1 << 16)
    assert info.value.code == "ingest_bad_encoding" and "line 30002" in info.value.message


@pytest.mark.parametrize("encode", [lambda s: s.encode(), lambda s: s.replace(",", ", ").encode("gbk")])
def test_csv_progress_counts_bytes_read(tmp_path, encode):
    f = tmp_path / "p.csv"
    f.write_bytes(encode("名,值\n" + "".join(f"王{i},{i}\n" for i in range(300000))))
    seen: list[tuple[int, int]] = []
    r = ingest_csv(f, block_size=1 << 16, on_progress=lambda d, t: seen.append((d, t)))
    assert r.meta["rows"] == 300000
    total = f.stat().st_size
    done = [d for d, _ in seen]
    assert all(t == total for _, t in seen) and done == sorted(done)
    assert done[0] < total and done[-1] == total  # it moves, and ends at 100%


def test_csv_location_columns_give_the_extent(tmp_path):
    f = tmp_path / "pts.csv"
    f.write_text("id,Longitude,Latitude\na,121.5,25.0\nb,121.6,25.1\n")
    r = ingest_csv(f, id_column="id", region="TW-TPE")
    assert r.meta["bbox"] == [121.5, 25.0, 121.6, 25.1]
    f.write_text("id,lon,lat\na,302730.7,2777139.5\n")  # TWD97 metres, not degrees
    with pytest.raises(IngestError) as info:
        ingest_csv(f)
    assert info.value.code == "ingest_malformed_geometry"


def test_geometry_is_true_centroid_area_and_validity(tmp_path):
    # An L-shaped polygon: its vertex mean lies elsewhere than its centroid.
    ell = [[[0, 0], [0.02, 0], [0.02, 0.01], [0.01, 0.01], [0.01, 0.03], [0, 0.03], [0, 0]]]
    bowtie = [[[0, 0], [0.01, 0.01], [0.01, 0], [0, 0.01], [0, 0]]]
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "ell", "geometry": {"type": "Polygon", "coordinates": ell}, "properties": {}},
        {"type": "Feature", "id": "bow", "geometry": {"type": "Polygon", "coordinates": bowtie}, "properties": {}},
        {"type": "Feature", "id": "line", "geometry": {"type": "LineString", "coordinates": [[0, 0], [0.03, 0]]},
         "properties": {}}]}
    f = tmp_path / "shapes.geojson"
    f.write_text(json.dumps(fc))
    r = ingest_geojson(f, entity_type="Garden")
    rows = {x["source_id"]: x for x in r.table.to_pylist()}
    c = shape(fc["features"][0]["geometry"]).centroid
    assert (rows["ell"]["lon"], rows["ell"]["lat"]) == pytest.approx((c.x, c.y))
    assert rows["ell"]["lon"] != pytest.approx(sum(p[0] for p in ell[0]) / len(ell[0]))
    assert rows["ell"]["area_m2"] == pytest.approx(0.0004 * 111_320 * 110_574, rel=5e-3)  # 4e-4 square degrees
    assert rows["line"]["lon"] == pytest.approx(0.015) and rows["line"]["area_m2"] is None
    assert [w for w in r.warnings if "Self-intersection" in w and w.startswith("feature #1")]
    for geom, what in (({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]}, "at least 4 positions"),
                       ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}, "closed ring"),
                       ({"type": "LineString", "coordinates": [[0, 0]]}, "at least 2 positions"),
                       ({"type": "Point", "coordinates": ["a", 1]}, "array of 2 or 3 numbers")):
        f.write_text(json.dumps({"type": "Feature", "id": 1, "geometry": geom, "properties": {}}))
        with pytest.raises(IngestError) as info:
            ingest_geojson(f)
        assert info.value.code == "ingest_malformed_geometry" and what in info.value.message


def test_hostile_json_is_a_clear_error(tmp_path):
    f = tmp_path / "deep.geojson"
    f.write_text('{"type": "FeatureCollection", "features": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(IngestError) as info:
        ingest_geojson(f)
    assert info.value.code == "ingest_too_deep" and "line 1" in info.value.message
    f.write_bytes(b'{"id": "urn:x",\n "type": "Building", "name": "caf\xe9"}')
    with pytest.raises(IngestError) as info:
        ingest_ngsi(f)
    assert info.value.code == "ingest_bad_encoding" and "line 2" in info.value.message and "0xe9" in info.value.message
    f.write_text('{"s": "[[[[[[", "id": "urn:x", "type": "Building"}')  # brackets inside strings do not count
    assert ingest_ngsi(f).table.num_rows == 1
