"""Pipe networks: the FIWARE Smart Data Models water-network samples in three NGSI forms, and a
GeoJSON line network derived in the test; lengths checked with pyproj directly."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from pyproj import Geod

from connectors.errors import IngestError
from connectors.tables import get_meta
from connectors.twins.geojson_network import network_from_geojson
from connectors.twins.network import load_entities, network_from_entities, network_from_topology

GEOD = Geod(ellps="WGS84")
PARTS = ["Junction", "Reservoir", "Tank", "Pipe", "Pump"]


def sdm(data, form, types=PARTS):
    return [data / "smart-data-models" / t / form for t in types]


def test_key_values_samples(data):
    net = network_from_entities(load_entities(sdm(data, "example.json")), region="FI")
    s = net.summary()
    pipe = json.loads((data / "smart-data-models/Pipe/example.json").read_text())
    junction = json.loads((data / "smart-data-models/Junction/example.json").read_text())
    reservoir = json.loads((data / "smart-data-models/Reservoir/example.json").read_text())
    assert s["nodes"] == 3 and s["links"] == 2
    assert s["node_types"] == {"Junction": 1, "Reservoir": 1, "Tank": 1} and s["link_types"] == {"Pipe": 1, "Pump": 1}
    assert s["components"] == 2 and s["component_sizes"] == [2, 1]
    (j_lon, j_lat), (r_lon, r_lat) = junction["location"]["coordinates"], reservoir["location"]["coordinates"]
    assert s["pipe_length_m"] == pytest.approx(GEOD.inv(j_lon, j_lat, r_lon, r_lat)[2], abs=1e-6)
    assert s["declared_pipe_length_m"] == pipe["length"]
    assert s["length_by_diameter_m"] == {f"{pipe['diameter']:g}": s["pipe_length_m"]}
    assert s["isolated_nodes"] == ["FI:GE:Tank:1863179e-3968-4493-9167-ee21f880cc02"]
    assert s["dead_ends"] == []  # the junction has the pipe and the pump


def test_ngsi_ld_samples_with_vertices_and_valve(data):
    net = network_from_entities(load_entities(sdm(data, "example-normalized.jsonld", PARTS + ["Valve"])), region="FI")
    s = net.summary()
    assert s["links"] == 3 and s["link_types"] == {"Pipe": 1, "Pump": 1, "Valve": 1}
    pipe = json.loads((data / "smart-data-models/Pipe/example-normalized.jsonld").read_text())
    j = json.loads((data / "smart-data-models/Junction/example-normalized.jsonld").read_text())["location"]["value"]
    r = json.loads((data / "smart-data-models/Reservoir/example-normalized.jsonld").read_text())["location"]["value"]
    pts = [j["coordinates"], *pipe["vertices"]["value"]["coordinates"], r["coordinates"]]
    expected = sum(GEOD.inv(a[0], a[1], b[0], b[1])[2] for a, b in zip(pts, pts[1:]))
    assert s["pipe_length_m"] == pytest.approx(expected, abs=1e-3)
    assert s["declared_pipe_length_m"] == pipe["length"]["value"]
    assert s["length_by_material_m"] == {"unknown": pytest.approx(expected, abs=1e-3)}
    # the same network in NGSI-v2 normalized form
    v2 = network_from_entities(load_entities(sdm(data, "example-normalized.json", PARTS + ["Valve"])), region="FI")
    assert v2.summary()["links"] == 3 and v2.summary()["components"] == 2


def test_dangling_references_name_the_element(data):
    # The key-values Valve sample really has a typo in startsAt ("63fe7d79.0d4c" for "63fe7d79-0d4c").
    ents = load_entities(sdm(data, "example.json", PARTS + ["Valve"]))
    with pytest.raises(IngestError) as err:
        network_from_entities(ents, region="FI")
    assert err.value.code == "network_dangling_reference"
    assert "Valve '87fe7d79-0d4c-4da9-b7d0-3340efa0656awytsd'" in err.value.message and "startsAt" in err.value.message
    # The WaterNetwork sample lists members (Tank T1, Pipe P1, ...) that the samples do not contain.
    for form in ("example.json", "example-normalized.jsonld"):
        ents = load_entities(sdm(data, form) + sdm(data, form, ["WaterNetwork"]))
        with pytest.raises(IngestError) as err:
            network_from_entities(ents, region="FI")
        assert err.value.code == "network_dangling_reference" and "urn:ngsi-ld:Tank:T1" in err.value.message
    ents = load_entities(sdm(data, "example.json", ["Junction", "Pipe"]))
    with pytest.raises(IngestError, match="endsAt"):
        network_from_entities(ents, region="FI")


def test_duplicate_and_foreign_elements_refused(data):
    ents = load_entities(sdm(data, "example.json", ["Junction", "Junction"]))
    with pytest.raises(IngestError) as err:
        network_from_entities(ents, region="FI")
    assert err.value.code == "network_duplicate_id"
    ents = load_entities(sdm(data, "example.json", ["Junction", "Streetlight"]))
    with pytest.raises(IngestError) as err:
        network_from_entities(ents, region="FI")
    assert err.value.code == "network_unknown_element" and "Streetlight" in err.value.message


def _line_network(offset_deg: float = 0.0) -> dict:
    """Eight pipes in Taipei: a loop A-B-C-D-A, a spur D-E-F and two branches; one endpoint is off by
    ``offset_deg`` in longitude (about 0.2 m for 2e-6 degrees at 25°N)."""
    A, B, C, D = (121.5000, 25.0400), (121.5020, 25.0400), (121.5020, 25.0420), (121.5000, 25.0420)
    E, F, G, H = (121.4990, 25.0430), (121.4980, 25.0440), (121.5030, 25.0400), (121.5020, 25.0390)
    mid = (121.5010, 25.0401)
    lines = [("p1", [A, mid, B], "ductile iron", 300), ("p2", [B, C], "ductile iron", 300),
             ("p3", [C, D], "PVC", 150), ("p4", [D, A], "PVC", 150), ("p5", [D, E], "PE", 110),
             ("p6", [(E[0] + offset_deg, E[1]), F], "PE", 110), ("p7", [B, G], "steel", 200), ("p8", [B, H], "", None)]
    feats = [{"type": "Feature", "id": pid, "geometry": {"type": "LineString", "coordinates": [list(p) for p in pts]},
              "properties": {"material": mat, "diameter": dia}} for pid, pts, mat, dia in lines]
    feats.append({"type": "Feature", "id": "R1", "geometry": {"type": "Point", "coordinates": list(A)},
                  "properties": {"type": "Reservoir"}})
    return {"type": "FeatureCollection", "features": feats}


def test_geojson_line_network_lengths_and_topology():
    doc = _line_network(offset_deg=2e-6)
    net = network_from_geojson(doc, region="TW-TPE", snap_m=0.5)
    s = net.summary()
    by_mat: dict[str, float] = {}
    for f in doc["features"]:
        if f["geometry"]["type"] == "LineString":
            xs, ys = zip(*f["geometry"]["coordinates"])
            by_mat[f["properties"]["material"] or "unknown"] = by_mat.get(f["properties"]["material"] or "unknown", 0) + \
                GEOD.line_length(xs, ys)
    assert s["pipe_length_m"] == pytest.approx(sum(by_mat.values()), abs=1e-3)
    assert s["length_by_material_m"] == {k: pytest.approx(v, abs=1e-3) for k, v in sorted(by_mat.items())}
    assert s["nodes"] == 8 and s["links"] == 8 and s["components"] == 1  # A(R1) B C D E F G H
    assert len(s["dead_ends"]) == 3  # F, G, H (the reservoir at A has degree 2 anyway)
    assert s["node_types"] == {"Junction": 7, "Reservoir": 1}
    assert s["length_by_diameter_m"]["unknown"] == pytest.approx(GEOD.line_length([121.5020, 121.5020], [25.0400, 25.0390]), abs=1e-3)
    # with a tolerance below the 0.2 m gap, the spur's end stays apart: one more node and component
    tight = network_from_geojson(doc, region="TW-TPE", snap_m=0.1).summary()
    assert tight["nodes"] == 9 and tight["components"] == 2 and len(tight["dead_ends"]) == 5


def test_geojson_declared_ends_and_bad_input():
    doc = _line_network()
    for f in doc["features"]:
        f["properties"]["from"], f["properties"]["to"] = "R1", "R1"
    net = network_from_geojson(doc, region="TW-TPE", from_property="from", to_property="to")
    assert net.summary()["nodes"] == 1 and net.summary()["links"] == 8
    doc["features"][0]["properties"]["to"] = "R9"
    with pytest.raises(IngestError) as err:
        network_from_geojson(doc, region="TW-TPE", from_property="from", to_property="to")
    assert err.value.code == "network_dangling_reference" and "(p1)" in err.value.message and "R9" in err.value.message
    with pytest.raises(IngestError, match="Polygon is neither"):
        network_from_geojson({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {
            "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}, "properties": {}}]}, region="TW")
    with pytest.raises(IngestError, match="tolerance"):
        network_from_geojson(_line_network(), region="TW", snap_m=-1)


def test_topology_table_is_an_asset(data):
    net = network_from_entities(load_entities(sdm(data, "example-normalized.jsonld", PARTS + ["Valve"])), region="FI")
    t = net.topology_table()
    meta = get_meta(t.schema)
    assert meta["entity_type"] == "WaterNetwork" and meta["twin_category"] == "goods_equipment" and meta["rows"] == 6
    rows = t.to_pylist()
    nodes = {r["entity_code"] for r in rows if r["kind"] == "node"}
    links = [r for r in rows if r["kind"] == "link"]
    assert len(nodes) == 3 and len(links) == 3
    assert all(r["from_code"] in nodes and r["to_code"] in nodes for r in links)
    assert meta["bbox"][0] <= 24.30623 <= meta["bbox"][2]
    # the topology asset alone rebuilds the same graph (a consumer needs no raw entities)
    assert network_from_topology(t).summary() == net.summary()
    broken = t.filter(pa.array([not (r["kind"] == "node" and r["element_type"] == "Junction") for r in rows]))
    with pytest.raises(IngestError) as err:
        network_from_topology(broken)
    assert err.value.code == "network_dangling_reference"


def test_geojson_network_in_a_projected_crs_with_local_property_names():
    """A municipal export: RD New metres, the legacy GeoJSON ``crs`` member, Dutch upper-case names."""
    from pyproj import Transformer

    to_rd = Transformer.from_crs("EPSG:4326", "EPSG:28992", always_xy=True)
    wgs = _line_network()
    feats = []
    for f in wgs["features"]:
        g = f["geometry"]
        coords = ([list(to_rd.transform(*p)) for p in g["coordinates"]] if g["type"] == "LineString"
                  else list(to_rd.transform(*g["coordinates"])))
        props = {("MATERIAAL" if k == "material" else "DN" if k == "diameter" else k): v for k, v in f["properties"].items()}
        feats.append({**f, "geometry": {"type": g["type"], "coordinates": coords}, "properties": props})
    rd = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::28992"}},
          "features": feats}
    a, b = network_from_geojson(wgs, region="TW-TPE").summary(), network_from_geojson(rd, region="TW-TPE").summary()
    assert b["pipe_length_m"] == pytest.approx(a["pipe_length_m"], abs=1e-3)
    assert b["length_by_material_m"].keys() == a["length_by_material_m"].keys()
    assert b["length_by_diameter_m"].keys() == a["length_by_diameter_m"].keys() and b["components"] == a["components"]
    with pytest.raises(IngestError) as err:  # the same file without its crs member is not WGS84
        network_from_geojson({**rd, "crs": None}, region="TW-TPE")
    assert err.value.code == "ingest_malformed_geometry" and "WGS84" in err.value.message
    assert network_from_geojson({**rd, "crs": None}, region="TW-TPE", crs="EPSG:28992").summary()["links"] == 8


def test_water_network_container_with_resolvable_members(data):
    """A WaterNetwork whose members are all in the input is accepted (a variant of the sample's list)."""
    ents = load_entities(sdm(data, "example.json"))
    container = json.loads((data / "smart-data-models/WaterNetwork/example.json").read_text())
    container["isComposedOf"] = [f"urn:ngsi-ld:{e['type']}:{e['id']}" for e in ents]
    net = network_from_entities(ents + [container], region="FI")
    assert net.containers == ["urn:ngsi-ld:WaterNetwork:01"] and net.summary()["links"] == 2
