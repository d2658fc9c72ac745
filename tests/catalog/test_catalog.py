"""Catalog API end to end: publish through the connector SDK, visibility per role, versions, withdraw,
atomicity, DCAT export and audit events. The rows stay in the provider's connector (the broker keeps
metadata and the connector's signed manifest only)."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlmodel import Session, select

from broker.audit.models import AuditEntry
from broker.catalog import service
from broker.catalog.models import Asset
from twinspace.testing import synthetic
from connectors.deid import deidentify
from connectors.deid.config import parse_config
from connectors.errors import PrivacyError
from connectors.ingest import ingest_ngsi, ingest_taipei_parking
from connectors.publish import prepare, publish_file
from twinspace.client.broker import BrokerError
from connectors.tables import read_table, write_table
from tests.connectors.helpers import plain_k, plain_l

OPEN = [{"id": "open", "policy_id": "open-data", "params": {}}]
GOV_ONLY = [{"id": "gov", "policy_id": "purpose-restricted",
             "params": {"audience": {"org_types": ["government_agency"]}}}]


def _deid(tmp_path, table, cfg=None, secrets=None, name="t"):
    src = tmp_path / f"{name}.arrow"
    write_table(src, table)
    return deidentify(src, parse_config(cfg or {}), tmp_path / f"{name}.deid.arrow", secrets=secrets)


def _publish(org, res, **kw):
    kw.setdefault("title", "An asset")
    kw.setdefault("classification", "public")
    kw.setdefault("domain", "transport")
    kw.setdefault("offers", OPEN)
    return publish_file(org.client, res.path, report=res.report, connector=org.connector(), **kw)


PERSON_CFG = {"quasi_identifiers": ["age", "sex", "district"], "sensitive_attributes": ["diagnosis"],
              "privacy": {"k": 5, "l": 2, "max_suppression": 0.1},
              "columns": {"name": {"technique": "drop"}, "phone": {"technique": "drop"},
                          "national_id": {"technique": "pseudonym"}, "source_id": {"technique": "pseudonym"},
                          "birth_date": {"technique": "date", "granularity": "year"},
                          "age": {"technique": "range", "width": 10},
                          "lon": {"technique": "drop"}, "lat": {"technique": "drop"}}}
SECRETS = {"national_id": b"n" * 32, "source_id": b"s" * 32}


@pytest.fixture
def cast(make_org):
    return {
        "prov": make_org("provider", org_type="government_agency"),
        "prov2": make_org("provider", org_type="enterprise"),
        "pub": make_org("consumer", org_type="enterprise"),
        "internal": make_org("consumer", org_type="enterprise", attributes={"clearance": "internal"}),
        "gov": make_org("consumer", org_type="government_agency", attributes={"clearance": "sensitive"}),
        "auditor": make_org("auditor", org_type="audit_office"),
    }


def test_publish_real_samples_and_person_table_then_search_by_role(cast, shared_dir, tmp_path, runtime):
    sdm = shared_dir / "data" / "smart-data-models"
    parking = _deid(tmp_path, ingest_taipei_parking(shared_dir / "data" / "taipei-parking" / "TCMSV_alldesc.json").table,
                    {"columns": {"telephone": {"technique": "drop"}}}, name="parking")
    a_park = _publish(cast["prov"], parking, title="Taipei parking lots", keywords=["parking"])
    buildings = _deid(tmp_path, ingest_ngsi([sdm / "Building" / "example.jsonld"], region="GB").table, name="bld")
    a_bld = _publish(cast["prov"], buildings, title="Building sample", classification="internal", domain="planning")
    persons = _deid(tmp_path, synthetic.persons(1500), PERSON_CFG, SECRETS, name="persons")
    a_per = _publish(cast["prov2"], persons, title="Residents (de-identified)", classification="sensitive",
                     domain="health", offers=GOV_ONLY)
    assert a_per["deid_report"]["achieved"]["k"] >= 5 and a_per["twin_category"] == "natural_person"
    assert a_park["row_count"] == 1765 and a_park["bbox"][0] > 121

    def titles(org, **filters):
        return sorted(a["title"] for a in org.client.catalog_search(**filters)["items"])

    assert titles(cast["pub"]) == ["Taipei parking lots"]
    assert titles(cast["internal"]) == ["Building sample", "Taipei parking lots"]
    # sensitive clearance + a government audience for the residents' offer
    assert titles(cast["gov"]) == ["Building sample", "Residents (de-identified)", "Taipei parking lots"]
    assert titles(cast["auditor"]) == ["Building sample", "Residents (de-identified)", "Taipei parking lots"]
    # a provider sees its own assets plus what its (default public) clearance admits
    assert titles(cast["prov2"]) == ["Residents (de-identified)", "Taipei parking lots"]
    # filters
    assert titles(cast["gov"], q="PARKING") == ["Taipei parking lots"]
    assert titles(cast["gov"], twin_category="natural_person") == ["Residents (de-identified)"]
    assert titles(cast["gov"], entity_type="Building", domain="planning") == ["Building sample"]
    assert titles(cast["gov"], provider=cast["prov2"].org_id) == ["Residents (de-identified)"]
    assert titles(cast["gov"], classification="internal") == ["Building sample"]
    assert titles(cast["gov"], bbox=[121.5, 25.0, 121.55, 25.05]) == ["Residents (de-identified)", "Taipei parking lots"]
    assert titles(cast["gov"], bbox=[99.5, -0.5, 100.2, 0.2]) == ["Building sample"]
    assert titles(cast["gov"], bbox=[0, 0, 1, 1]) == []
    page = cast["gov"].client.catalog_search(limit=2, offset=2)
    assert page["total"] == 3 and len(page["items"]) == 1
    # metadata by id obeys the same rule; the catalog never returns rows
    with pytest.raises(BrokerError) as info:
        cast["pub"].client.catalog_get(a_per["id"])
    assert info.value.status == 404
    got = cast["gov"].client.catalog_get(a_per["id"])
    assert "rows" not in got and got["content_hash"] == a_per["content_hash"]
    # the connector serves exactly what was de-identified, and it satisfies k/l by independent count
    table = cast["prov2"].connector().config.store.table(a_per["content_hash"])
    rows = table.to_pylist()
    with Session(runtime.engine) as s:
        assert plain_k(rows, ["age", "sex", "district"]) >= 5 and plain_l(rows, ["age", "sex", "district"], "diagnosis") >= 2
        assert table.equals(read_table(persons.path))
        kinds = [e.kind for e in s.exec(select(AuditEntry)).all()]
    assert kinds.count("catalog.publish") == 3 and "catalog.search" in kinds


def test_time_overlap_filter(cast, tmp_path):
    res = _deid(tmp_path, synthetic.building_stock(50).drop_columns(["owner_name", "owner_national_id"]))
    _publish(cast["prov"], res, title="2020s", time_start="2020-01-01T00:00:00Z", time_end="2024-12-31T00:00:00Z")
    _publish(cast["prov"], res, title="1990s", time_start="1990-01-01T00:00:00Z", time_end="1999-12-31T00:00:00Z")
    search = cast["pub"].client.catalog_search
    assert [a["title"] for a in search(time_from="2023-06-01T00:00:00Z")["items"]] == ["2020s"]
    assert [a["title"] for a in search(time_to="1995-01-01T00:00:00Z")["items"]] == ["1990s"]
    assert sorted(a["title"] for a in search(time_from="1995-01-01T00:00:00Z", time_to="2021-01-01T00:00:00Z")["items"]) \
        == ["1990s", "2020s"]


def test_versions_withdraw_and_ownership(cast, tmp_path, runtime):
    res = _deid(tmp_path, synthetic.building_stock(40).drop_columns(["owner_name", "owner_national_id"]))
    a = _publish(cast["prov"], res)
    res2 = _deid(tmp_path, synthetic.building_stock(45).drop_columns(["owner_name", "owner_national_id"]), name="v2")
    with pytest.raises(BrokerError) as info:  # someone else's asset
        _publish(cast["prov2"], res2, asset_id=a["id"])
    assert info.value.status == 403 and info.value.code == "not_asset_owner"
    v2 = _publish(cast["prov"], res2, asset_id=a["id"])
    assert (v2["id"], v2["version"], v2["row_count"]) == (a["id"], 2, 45)
    items = cast["pub"].client.catalog_search()["items"]
    assert [(i["id"], i["version"]) for i in items] == [(a["id"], 2)]
    with Session(runtime.engine) as s:
        assert service.get_asset(s, a["id"]).version == 2
        assert service.get_asset(s, a["id"], 1).status == "superseded"
        assert service.get_asset(s, a["id"], 1).row_count == 40
        view = service.asset_policy_view(service.get_asset(s, a["id"]))
    assert set(view) >= {"id", "version", "provider_id", "classification", "domain", "twin_category", "entity_type",
                         "bbox", "time_start", "time_end", "offers", "content_hash"}
    with pytest.raises(BrokerError) as info:
        cast["prov2"].client.catalog_withdraw(a["id"])
    assert info.value.status == 403
    cast["prov"].client.catalog_withdraw(a["id"], "retired")
    assert cast["pub"].client.catalog_search()["items"] == []
    assert cast["prov"].client.catalog_search()["items"][0]["status"] == "withdrawn"  # owner still sees it
    with pytest.raises(BrokerError) as info:
        _publish(cast["prov"], res2, asset_id=a["id"])
    assert info.value.status == 410


def test_roles_and_validation(cast, tmp_path, client):
    res = _deid(tmp_path, synthetic.building_stock(20).drop_columns(["owner_name", "owner_national_id"]))
    with pytest.raises(BrokerError) as info:  # consumers cannot publish
        _publish(cast["pub"], res)
    assert info.value.status == 403
    data = res.path.read_bytes()
    meta = prepare(data, report=res.report, title="x", classification="public", domain="transport", offers=OPEN)
    org = cast["prov"].client
    for patch, status, code in (
            ({"content_hash": "0" * 64}, 422, "manifest_not_found"),
            ({"row_count": 19}, 422, "row_count_mismatch"),
            ({"columns": meta["columns"][:-1]}, 422, "schema_mismatch"),
            ({"offers": [{"id": "a", "policy_id": "p", "params": {"audience": {"bogus": 1}}}]}, 422, None),
            ({"offers": OPEN + OPEN}, 422, None),
            ({"classification": "secret"}, 422, None),
            ({"bbox": [10, 10, 0, 0]}, 422, None),
            ({"surprise": 1}, 422, None)):
        with pytest.raises(BrokerError) as info:
            org.catalog_publish({**meta, **patch}, data)
        assert info.value.status == status, patch
        if code:
            assert info.value.code == code
    assert client.get("/catalog/assets").status_code == 401
    assert org.catalog_search()["total"] == 0  # nothing half-published


def test_privacy_refusals_local_and_at_the_broker(cast, tmp_path, runtime):
    persons = synthetic.persons(400)
    bad = _deid(tmp_path, persons, {**PERSON_CFG, "privacy": {"k": 60, "l": 2}}, SECRETS, name="bad")
    assert not bad.meets_policy
    cast["prov"].connector()  # started and registered before the broker link is cut
    sent = []
    real_post = cast["prov"].client.post
    cast["prov"].client.post = lambda path, **kw: sent.append(path)  # would-be network call
    with pytest.raises(PrivacyError, match="k-anonymity"):
        _publish(cast["prov"], bad)
    assert sent == []  # nothing left the machine
    with pytest.raises(PrivacyError):  # person-level data without a report
        publish_file(cast["prov"].client, bad.path, report=None, connector=cast["prov"].connector(), title="x",
                     classification="public",
                     domain="health", offers=OPEN)
    assert sent == []
    cast["prov"].client.post = real_post
    # a lying report (claims k=60 met, but its achieved k says otherwise) is caught by the broker
    lie = json.loads(json.dumps(bad.report))
    lie["meets_policy"] = True
    data = bad.path.read_bytes()
    meta = prepare(data, report=None, twin_category="other", title="x", classification="public", domain="health",
                   offers=OPEN)
    meta.update(twin_category="natural_person", deid_report=lie,
                deid_report_hash=hashlib.sha256(__import__("twinspace.canonical", fromlist=["x"]).canonical_json(lie)).hexdigest())
    with pytest.raises(BrokerError) as info:
        cast["prov"].client.catalog_publish(meta, data)
    assert info.value.code == "privacy_model_not_met"
    with Session(runtime.engine) as s:
        assert s.exec(select(Asset)).all() == []
        assert not [e for e in s.exec(select(AuditEntry)).all() if e.kind == "catalog.publish"]


def test_dcat_export(cast, tmp_path):
    res = _deid(tmp_path, synthetic.building_stock(30).drop_columns(["owner_name", "owner_national_id"]))
    a = _publish(cast["prov"], res, title="Stock", keywords=["b"], time_start="2020-01-01T00:00:00Z",
                 time_end="2021-01-01T00:00:00Z")
    _publish(cast["prov"], res, title="Hidden", classification="core")
    doc = cast["pub"].client.catalog_dcat()
    assert doc["@type"] == "dcat:Catalog" and "dcat" in doc["@context"] and "odrl" in doc["@context"]
    (ds,) = doc["dcat:dataset"]
    assert ds["@type"] == "dcat:Dataset" and ds["dct:identifier"] == a["id"] and ds["dct:title"] == "Stock"
    (offer,) = ds["odrl:hasPolicy"]
    assert offer["@type"] == "odrl:Offer" and offer["twin:policyId"] == "open-data"
    assert offer["odrl:target"]["@id"] == ds["@id"]
    assert ds["dct:spatial"]["dcat:bbox"]["@value"].startswith("POLYGON((")
    assert ds["dct:temporal"]["dcat:startDate"]["@value"].startswith("2020-01-01")
    (dist,) = ds["dcat:distribution"]  # DCAT-AP: the checksum belongs to the distribution
    assert dist["spdx:checksum"]["spdx:checksumValue"]["@value"] == a["content_hash"]
    assert len(cast["auditor"].client.catalog_dcat()["dcat:dataset"]) == 2
