"""Entity profiles: Taipei parking figures summed straight from the raw feed, Delft/Rotterdam
building figures from the raw geometry and attributes, the SDM network, and the k-threshold rule
(primary and complementary suppression) checked by a property test."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings, strategies as st

from connectors.errors import PrivacyError, PublishError
from connectors.tables import get_meta
from connectors.twins.cityjson import objects_table
from connectors.twins.network import load_entities, network_from_entities
from connectors.twins.profiles import building_profile, network_profile, parking_profile, suppress

RAW_FIELDS = {"car": "totalcar", "motorcycle": "totalmotor", "bicycle": "totalbike", "bus": "totalbus",
              "large_motorcycle": "totallargemotor", "ev_charging": "ChargingStation",
              "accessible": "Handicap_First", "pregnancy_child": "Pregnancy_First"}


@pytest.fixture(scope="module")
def raw_parks(data):
    return json.loads((data / "taipei-parking" / "TCMSV_alldesc.json").read_text(encoding="utf-8"))["data"]["park"]


def n(v):
    return int(float(v)) if v not in (None, "") else 0


def test_parking_totals_match_the_raw_feed(parking, raw_parks):
    p = parking_profile(parking, k=10)
    assert p.entities == len(raw_parks) == 1765
    for cls, fld in RAW_FIELDS.items():
        assert p.value("total", "all", f"spaces_{cls}") == sum(n(r.get(fld)) for r in raw_parks), cls
    assert p.figures["spaces_car"] == 178_284  # as the data README measured
    assert p.value("total", "all", "car_parks_with_ev_charging") == sum(1 for r in raw_parks if n(r.get("ChargingStation")) > 0)
    by_district = defaultdict(lambda: Counter())
    for r in raw_parks:
        by_district[r["area"]]["parks"] += 1
        for cls, fld in RAW_FIELDS.items():
            by_district[r["area"]][cls] += n(r.get(fld))
    assert p.groups("district") == sorted(by_district)
    for d, c in by_district.items():
        assert p.value("district", d, "entities") == c["parks"]
        assert p.value("district", d, "spaces_car") == c["car"]
        assert p.value("district", d, "spaces_ev_charging") == c["ev_charging"]
        assert p.value("district", d, "spaces_accessible") == c["accessible"]
    assert p.code_prefix == "TW-TPE:BS:OffStreetParking" and p.deid["groups_suppressed"]["district"] == 0


def test_small_districts_are_suppressed_and_not_named(parking, raw_parks):
    sizes = Counter(r["area"] for r in raw_parks)
    k = 150
    p = parking_profile(parking, k=k)
    assert p.groups("district") == sorted(d for d, c in sizes.items() if c >= k)
    table_text = json.dumps(p.table().to_pylist(), ensure_ascii=False)
    for d, c in sizes.items():
        if c < k:
            assert d not in table_text
    # exactly one district below k (萬華區, 81 car parks): the next smallest (南港區, 83) goes too, or the
    # total minus the eleven released districts would give 萬華區 back
    assert sorted(sizes.values())[:2] == [81, 83]
    p = parking_profile(parking, k=82)
    assert "萬華區" not in p.groups("district") and "南港區" not in p.groups("district")
    assert len(p.groups("district")) == 10 and p.deid["groups_suppressed"]["district"] == 2
    # one car park has no operator type: it is a group of its own (of 1), suppressed with the next
    # smallest, so the total minus the released operator types does not give that car park back
    assert "(not recorded)" not in parking_profile(parking, k=10).groups("operator_type")
    released = sum(parking_profile(parking, k=10).value("operator_type", g, "entities")
                   for g in parking_profile(parking, k=10).groups("operator_type"))
    assert len(raw_parks) - released >= 10 or len(raw_parks) - released == 0
    with pytest.raises(PrivacyError) as err:
        parking_profile(parking, k=2000)
    assert err.value.code == "cohort_too_small"


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=3), st.integers(0, 40), max_size=8), st.integers(1, 30))
def test_suppression_rule_property(sizes, k):
    hidden = suppress(sizes, k)
    assert {g for g, c in sizes.items() if c < k} <= hidden  # primary
    shown = set(sizes) - hidden
    if hidden and shown:  # complementary: what differencing reveals is a sum of >= 2 groups and >= k entities
        assert len(hidden) >= 2 and sum(sizes[g] for g in hidden) >= k


def _shoelace_top(doc, key):
    import numpy as np

    v = np.asarray(doc["vertices"], float) * doc["transform"]["scale"] + doc["transform"]["translate"]
    g = doc["CityObjects"][key]["geometry"][0]
    zmax = max(v[i, 2] for sh in g["boundaries"] for s in sh for r in s for i in r)
    a = 0.0
    for sh in g["boundaries"]:
        for s in sh:
            r = v[s[0]]
            if np.ptp(r[:, 2]) < 1e-9 and abs(r[0, 2] - zmax) < 1e-9:
                a += abs(0.5 * np.sum(r[:, 0] * np.roll(r[:, 1], -1) - np.roll(r[:, 0], -1) * r[:, 1]))
    return a


def test_delft_building_profile(data, delft):
    doc = json.loads((data / "cityjson" / "delft.city.json").read_text())
    keys = [k for k, o in doc["CityObjects"].items() if o["type"] == "Building"]
    heights = [doc["CityObjects"][k]["attributes"]["measuredHeight"] for k in keys]
    p = building_profile(objects_table(delft, "Building", district_attribute="bronhouder"), k=10)
    assert p.entities == len(keys) == 160
    assert p.value("total", "all", "footprint_area_m2_total") == pytest.approx(sum(_shoelace_top(doc, k) for k in keys), rel=1e-3)
    assert p.value("total", "all", "height_m_mean") == pytest.approx(sum(heights) / len(heights), abs=1e-3)
    bands = Counter("0-3 m" if h < 3 else "3-6 m" if h < 6 else "6-10 m" if h < 10 else "10-15 m" if h < 15 else "x"
                    for h in heights)
    released = {g: p.value("height_band", g, "entities") for g in p.groups("height_band")}
    assert released == {g: c for g, c in bands.items() if c >= 10}  # all bands hold >= 10 buildings here
    assert p.groups("storeys") == ["(not recorded)"]  # the BGT extract records no storeys
    assert p.value("storeys", "(not recorded)", "entities") == 160
    assert p.value("district", "G0503", "entities") == 160  # bronhouder G0503: the municipality of Delft
    assert p.code_prefix == "NL-ZH:BS:Building"
    decl = get_meta(p.table().schema)["profile"]
    assert decl["method"]["name"] == "twinspace.buildings_profile" and decl["deidentification"]["k"] == 10
    assert decl["source"]["rows"] == 160 and len(decl["source"]["content_sha256"]) == 64


def test_rotterdam_building_profile_k_rule(rotterdam):
    t = objects_table(rotterdam, "Building")
    p = building_profile(t, k=5)
    assert p.entities == 16 and p.groups("lod") == ["2"]
    with pytest.raises(PrivacyError):
        building_profile(t, k=17)
    released = sum(p.value("height_band", g, "entities") for g in p.groups("height_band"))
    assert released in (0, 16) or 16 - released >= 5  # what is hidden is never a cohort below k


def test_network_profile(data):
    files = [data / "smart-data-models" / t / "example-normalized.jsonld"
             for t in ("Junction", "Reservoir", "Tank", "Pipe", "Pump", "Valve")]
    net = network_from_entities(load_entities(files), region="FI")
    p = network_profile(net, k=1)
    s = net.summary()
    assert p.value("total", "all", "pipe_length_m") == s["pipe_length_m"] and p.value("total", "all", "components") == 2
    assert p.value("link_type", "Valve", "entities") == 1 and p.entity_type == "WaterNetwork"
    with pytest.raises(PrivacyError):
        network_profile(net, k=10)  # six elements: below the default threshold


def test_profile_binding_and_bad_input(parking, delft):
    p = parking_profile(parking)
    with pytest.raises(PublishError) as err:
        p.with_source({"id": "ast_x", "version": 1, "content_hash": "0" * 64})
    assert err.value.code == "profile_source_mismatch"
    bound = p.with_source({"id": "ast_x", "version": 2, "content_hash": p.source["content_sha256"]})
    assert get_meta(bound.table().schema)["profile"]["source"]["asset_id"] == "ast_x"
    with pytest.raises(PublishError, match="missing column"):
        parking_profile(objects_table(delft, "Building"))


def test_storeys_material_and_construction_year_where_present(delft):
    """The BGT extract records none of these, so a variant of the table sets them (derived here)."""
    import pyarrow as pa

    t = objects_table(delft, "Building")
    n_rows = t.num_rows
    storeys = [None if i % 10 == 0 else 1 + i % 3 for i in range(n_rows)]
    material = [["brick", "concrete", "timber"][i % 3] if i % 4 else None for i in range(n_rows)]
    year = [1855 if i < 5 else 1900 + (i * 7) % 120 for i in range(n_rows)]  # five 1850s: below k
    t = t.set_column(t.column_names.index("storeys"), "storeys", pa.array(storeys, pa.int64()))
    t = t.set_column(t.column_names.index("material"), "material", pa.array(material, pa.string()))
    t = t.set_column(t.column_names.index("year_of_construction"), "year_of_construction", pa.array(year, pa.int64()))
    p = building_profile(t, k=10)
    expected = Counter("(not recorded)" if s is None else str(s) for s in storeys)
    assert {g: p.value("storeys", g, "entities") for g in p.groups("storeys")} == expected
    expected = Counter("(not recorded)" if m is None else m for m in material)
    assert {g: p.value("material", g, "entities") for g in p.groups("material")} == expected
    decades = Counter(f"{y // 10 * 10}s" for y in year)
    released = {g: p.value("construction_decade", g, "entities") for g in p.groups("construction_decade")}
    assert released and all(decades[g] == c and c >= 10 for g, c in released.items())
    hidden = set(decades) - set(released)
    assert {g for g, c in decades.items() if c < 10} <= hidden
    assert len(hidden) >= 2 and sum(decades[g] for g in hidden) >= 10  # 1850s and the next smallest decade
