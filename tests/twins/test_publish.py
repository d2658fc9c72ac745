"""Profiles and twin assets published through the one publish path to a real (in-process) broker:
the catalog entry carries the twin category, the unified-code prefix, its own offers and the
declaration of its source; a refused profile leaves no half pair behind."""

from __future__ import annotations

import hashlib

import pytest

from connectors.errors import PrivacyError
from connectors.tables import get_meta, read_table, write_table
from connectors.twins.cityjson import objects_table
from connectors.twins.network import load_entities, network_from_entities
from connectors.twins.profiles import building_profile, network_profile, parking_profile
from connectors.twins.publish import load_source, publish_profile, publish_with_profile
from twinspace.client.broker import BrokerError

OPEN = [{"id": "open", "policy_id": "open-data", "params": {}}]


def _source_kwargs(title, domain="transport"):
    return {"title": title, "classification": "public", "domain": domain, "offers": OPEN}


def test_parking_asset_and_profile(tmp_path, make_org, parking):
    prov = make_org("provider", org_type="government_agency")
    path = tmp_path / "parking.arrow"
    write_table(path, parking.drop_columns(["telephone"]))
    table, sha = load_source(path)
    profile = parking_profile(table, source_hash=sha)
    offers = [{"id": "research", "policy_id": "purpose-restricted", "params": {"purposes": ["research"]}}]
    asset, prof = publish_with_profile(
        prov.client, path, profile, tmp_path, connector=prov.connector(), source=_source_kwargs("Taipei public parking lots"),
        profile_meta={"title": "Taipei parking profile", "classification": "public", "domain": "transport",
                      "offers": offers})
    assert asset["content_hash"] == sha and asset["row_count"] == 1765
    got = prov.client.catalog_get(prof["id"])
    assert got["twin_category"] == "building_structure" and got["entity_type"] == "OffStreetParking"
    assert "code:TW-TPE:BS:OffStreetParking" in got["keywords"] and "entity-profile" in got["keywords"]
    assert [o["policy_id"] for o in got["offers"]] == ["purpose-restricted"]
    assert f"asset {asset['id']} v{asset['version']}" in got["description"] and "k=10" in got["description"]
    # the published bytes are the profile table whose metadata declares the source it derives from
    written = next(tmp_path.glob(f"profile-parking-{asset['id']}-v1.arrow"))
    assert hashlib.sha256(written.read_bytes()).hexdigest() == got["content_hash"]
    decl = get_meta(read_table(written).schema)["profile"]
    assert decl["source"] == {"asset_id": asset["id"], "version": 1, "content_sha256": sha, "rows": 1765}
    assert decl["deidentification"]["rule"] == "k-threshold" and decl["code_prefix"] == "TW-TPE:BS:OffStreetParking"
    dcat = prov.client.catalog_dcat()
    ds = next(d for d in dcat["dcat:dataset"] if d["dct:identifier"] == prof["id"])
    assert ds["twin:twinCategory"]["@id"].endswith("category-building_structure")
    assert "code:TW-TPE:BS:OffStreetParking" in ds["dcat:keyword"]
    assert [p["twin:policyId"] for p in ds["odrl:hasPolicy"]] == ["purpose-restricted"]


def test_delft_buildings_and_network_topology(tmp_path, make_org, delft, data):
    prov = make_org("provider", org_type="government_agency")
    path = tmp_path / "delft-buildings.arrow"
    write_table(path, objects_table(delft, "Building", district_attribute="bronhouder"))
    table, sha = load_source(path)
    asset, prof = publish_with_profile(
        prov.client, path, building_profile(table, source_hash=sha), tmp_path,
        connector=prov.connector(), source=_source_kwargs("Delft buildings (CityJSON LoD1)", "planning"),
        profile_meta={"title": "Delft building profile", "classification": "public", "domain": "planning",
                      "offers": OPEN})
    got = prov.client.catalog_get(asset["id"])
    assert got["row_count"] == 160 and got["bbox"] == get_meta(table.schema)["bbox"]
    assert prov.client.catalog_get(prof["id"])["entity_type"] == "Building"
    # the network topology as an asset of its own, and its profile
    files = [data / "smart-data-models" / t / "example-normalized.jsonld"
             for t in ("Junction", "Reservoir", "Tank", "Pipe", "Pump", "Valve")]
    net = network_from_entities(load_entities(files), region="FI")
    topo = tmp_path / "network.arrow"
    write_table(topo, net.topology_table())
    ttable, tsha = load_source(topo)
    t_asset, t_prof = publish_with_profile(
        prov.client, topo, network_profile(net, k=1, topology=ttable, source_hash=tsha), tmp_path,
        connector=prov.connector(), source=_source_kwargs("SDM water network topology", "water"),
        profile_meta={"title": "Water network profile", "classification": "public", "domain": "water",
                      "offers": OPEN})
    assert t_asset["row_count"] == 6 and prov.client.catalog_get(t_prof["id"])["entity_type"] == "WaterNetwork"


def test_refused_profile_withdraws_its_source(tmp_path, make_org, parking):
    prov = make_org("provider", org_type="government_agency")
    path = tmp_path / "parking.arrow"
    write_table(path, parking.drop_columns(["telephone"]))
    table, sha = load_source(path)
    bad_offers = [{"id": "x", "policy_id": "no-such-policy", "params": {}}]  # only the broker knows it is unknown
    with pytest.raises(BrokerError):
        publish_with_profile(prov.client, path, parking_profile(table, source_hash=sha), tmp_path,
                             connector=prov.connector(), source=_source_kwargs("Taipei parking"),
                             profile_meta={"title": "p", "classification": "public", "domain": "transport",
                                           "offers": bad_offers})
    mine = [a for a in prov.client.catalog_search()["items"] if a["provider_id"] == prov.org_id]
    assert len(mine) == 1 and mine[0]["status"] == "withdrawn"  # no half pair stays in the catalog
    with pytest.raises(PrivacyError):  # below k: refused before anything is sent
        publish_with_profile(prov.client, path, parking_profile(table.slice(0, 5), k=6, source_hash=sha), tmp_path,
                             connector=prov.connector(), source=_source_kwargs("Taipei parking"), profile_meta={
                                 "title": "p", "classification": "public", "domain": "transport", "offers": OPEN})
    with pytest.raises(Exception) as err:
        publish_profile(prov.client, parking_profile(table), tmp_path, title="p", classification="public",
                        domain="transport", offers=OPEN, connector=prov.connector())
    assert getattr(err.value, "code", "") == "profile_unbound"
