"""The DCAT-AP 3.0.1 export: real published assets exported over HTTP as JSON-LD and as Turtle, read
back with rdflib (the two documents are the same graph) and validated with pyshacl against the
official shapes (0 violations); recommended-property warnings listed and bounded; never truncated.
No skip: pyshacl and rdflib are test dependencies."""

from __future__ import annotations

import json
from collections import Counter

import pyshacl
import pytest
from rdflib import Graph, Namespace, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import DCAT, DCTERMS, RDF, SH
from sqlmodel import Session

from broker.catalog import export
from broker.catalog.models import Asset
from tests.catalog.test_catalog import GOV_ONLY, OPEN, _deid, _publish, cast  # noqa: F401 (fixture)
from tests.catalog.test_query import _row
from twinspace import dcat
from twinspace.testing import synthetic

EU = "http://publications.europa.eu/resource/authority/"
TWIN = Namespace(dcat.TWIN_NS)


@pytest.fixture(scope="module")
def shapes(shared_dir):
    base = shared_dir / "conformance" / "dcat-ap"
    required, recommended = Graph(), Graph()
    required.parse(base / "dcat-ap-3.0.1-shapes.ttl")
    required.parse(base / "dcat-ap-3.0.1-range.ttl")
    recommended.parse(base / "dcat-ap-3.0.1-shapes_recommended.ttl")
    return required, recommended


def _results(data: Graph, shacl: Graph) -> list[tuple[str, str, str]]:
    _, report, _ = pyshacl.validate(data, shacl_graph=shacl, inference="none")
    out = []
    for r in report.subjects(RDF.type, SH.ValidationResult):
        out.append((str(report.value(r, SH.resultSeverity)).rsplit("#", 1)[-1],
                    str(report.value(r, SH.resultPath)), str(report.value(r, SH.focusNode))))
    return out


def test_export_is_dcat_ap_3_valid_as_jsonld_and_turtle(cast, tmp_path, shapes):  # noqa: F811
    parking = _deid(tmp_path, synthetic.building_stock(30).drop_columns(["owner_name", "owner_national_id"]))
    a = _publish(cast["prov"], parking, title="Stock", keywords=["buildings"], time_start="2020-01-01T00:00:00Z",
                 time_end="2021-01-01T00:00:00Z", offers=[{"id": "open", "policy_id": "open-data",
                                                          "params": {"license": "CC-BY-4.0"}}])
    other = _deid(tmp_path, synthetic.building_stock(31).drop_columns(["owner_name", "owner_national_id"]),
                  name="other")  # one provider's content hash is never another's
    _publish(cast["prov2"], other, title="No time span", description="", classification="internal",
             offers=GOV_ONLY)
    _publish(cast["prov"], parking, title="Core", classification="core")
    auditor = cast["auditor"].client
    as_json = auditor.http.get("/catalog/dcat", headers=auditor.headers())
    as_ttl = auditor.http.get("/catalog/dcat?format=turtle", headers=auditor.headers())
    negotiated = auditor.http.get("/catalog/dcat", headers={**auditor.headers(), "Accept": "text/turtle"})
    assert as_json.headers["content-type"].startswith("application/ld+json")
    assert as_ttl.headers["content-type"].startswith("text/turtle") and negotiated.text == as_ttl.text
    doc = json.loads(as_json.text)
    assert len(doc["dcat:dataset"]) == 3
    g_json = Graph().parse(data=as_json.text, format="json-ld")
    g_ttl = Graph().parse(data=as_ttl.text, format="turtle")
    assert len(g_ttl) > 200 and isomorphic(g_json, g_ttl)

    required, recommended = shapes
    assert _results(g_ttl, required) == []  # 0 violations against shapes + range
    warnings = _results(g_ttl, recommended)
    assert {sev for sev, _, _ in warnings} <= {"Warning"}
    # the only gaps left are data nobody gave: an asset's extent or time, the catalog's own licence, and
    # the publisher type of an org whose org_type has no ADMS equivalent (here the operator, "other")
    kinds = Counter(path.rsplit("/", 1)[-1] for _, path, _ in warnings)
    assert set(kinds) <= {"spatial", "temporal", "license", "type"} and kinds["license"] <= 1, warnings
    assert {focus for _, path, focus in warnings if path.endswith("/type")} <= {"urn:twinspace:org:twinspace-broker"}
    assert kinds["temporal"] == 2 and kinds["spatial"] == 0, warnings  # two were published without a time span
    print("recommended-shape warnings:", dict(kinds))

    ds = URIRef(dcat.dataset_iri(a["id"], 1))
    dist = g_ttl.value(ds, DCAT.distribution)
    # controlled vocabularies are IRIs from the EU authority tables
    assert g_ttl.value(dist, DCTERMS.format) == URIRef(EU + "file-type/BIN")
    assert g_ttl.value(dist, DCTERMS.license) == URIRef(EU + "licence/CC_BY_4_0")
    assert g_ttl.value(ds, DCTERMS.accessRights) == URIRef(EU + "access-right/PUBLIC")
    assert g_ttl.value(ds, DCAT.theme) == URIRef(EU + "data-theme/TRAN")
    assert str(g_ttl.value(g_ttl.value(dist, URIRef("http://spdx.org/rdf/terms#checksum")),
                           URIRef("http://spdx.org/rdf/terms#checksumValue"))) == a["content_hash"]
    # TwinSpace extensions
    assert g_ttl.value(ds, TWIN.twinCategory) == URIRef(dcat.TWIN_NS + "category-building_structure")
    assert g_ttl.value(ds, TWIN.classificationLevel) == URIRef(dcat.TWIN_NS + "classification-public")
    assert (str(g_ttl.value(ds, TWIN.category)), str(g_ttl.value(ds, TWIN.classification))) == \
        ("building_structure", "public")  # the plain codes, as before
    assert str(g_ttl.value(ds, TWIN.entityCodeScheme)) == dcat.ENTITY_CODE_SCHEME
    restricted = {str(o) for s, o in g_ttl.subject_objects(DCTERMS.accessRights)}
    assert restricted == {EU + "access-right/PUBLIC", EU + "access-right/RESTRICTED", EU + "access-right/NON_PUBLIC"}
    # a consumer's export holds only what it may see
    pub = cast["pub"].client.catalog_dcat()
    assert [d["dct:title"] for d in pub["dcat:dataset"]] == ["Stock"]


def test_bad_format_is_a_problem(cast):  # noqa: F811
    c = cast["pub"].client
    resp = c.http.get("/catalog/dcat?format=rdfxml", headers=c.headers())
    assert resp.status_code == 422 and resp.headers["content-type"].startswith("application/problem+json")


def test_export_streams_every_page_and_is_never_truncated(runtime):
    from broker.identity.models import Org

    with Session(runtime.engine) as s:
        s.add(Org(id="org_p", name="Provider P", role="provider", org_type="enterprise"))
        s.commit()
        for i in range(23):
            s.add(Asset(**_row(i, provider="org_p", classification="public", status="active", is_latest=True,
                               audiences=[None])[0]))
        s.commit()

    class Auditor:
        org_id, role, org_type, attributes = "org_a", "auditor", "audit_office", {}

    for fmt in ("jsonld", "turtle"):
        body = b"".join(export.stream(runtime.engine, principal=Auditor(), base_url="http://broker.test",
                                      fmt=fmt, operator="twinspace-broker", page_size=4)).decode()
        g = Graph().parse(data=body, format="json-ld" if fmt == "jsonld" else "turtle")
        assert len(set(g.objects(URIRef("urn:twinspace:catalog"), DCAT.dataset))) == 23, fmt


def test_turtle_writer_escapes_what_a_provider_may_type():
    view = {"id": "ast_x", "version": 3, "provider_id": "org_p", "title": 'Quotes " \' back\\slash\nnew\tline 臺北 😀',
            "description": '"""triple"""', "keywords": ["a\u0007b", "é"], "twin_category": "vehicle",
            "entity_type": "Vehicle", "region": "TW-TPE", "classification": "internal", "domain": "unknown_domain",
            "bbox": [-1.5, -2.25, 3.0, 4.0], "time_start": "2020-01-01T00:00:00+00:00", "time_end": None,
            "columns": [{"name": "speed", "type": "double", "unit": "km/h"}], "row_count": 0,
            "content_hash": "ab" * 32, "byte_size": 10, "deid_report_hash": None, "created_at": None,
            "offers": [{"id": "o", "policy_id": "p", "params": {"audience": {"org_ids": ["x"]}, "n": 1.5}}]}
    header = dcat.catalog_node(base_url="http://b", catalog_id="urn:twinspace:catalog", title="T", description="D",
                               publisher=dcat.agent("op", "Operator", "other"), operator_id="op", issued=None,
                               modified=None, bbox=None)
    nodes = [dcat.dataset_node(view, base_url="http://b", publisher=dcat.agent("org_p", 'P "org"', "enterprise"))]
    ttl = "".join(dcat.turtle_chunks(header, nodes))
    js = "".join(dcat.jsonld_chunks(header, nodes))
    g_ttl, g_json = Graph().parse(data=ttl, format="turtle"), Graph().parse(data=js, format="json-ld")
    assert isomorphic(g_ttl, g_json)
    ds = URIRef(dcat.dataset_iri("ast_x", 3))
    assert str(g_ttl.value(ds, DCTERMS.title)) == view["title"]
    assert g_ttl.value(ds, DCTERMS.accessRights) == URIRef(EU + "access-right/RESTRICTED")
    assert g_ttl.value(ds, DCAT.theme) == URIRef(EU + "data-theme/REGI")
    assert str(g_ttl.value(ds, TWIN.entityCodePrefix)) == "TW-TPE:VH:Vehicle:"
    with pytest.raises(ValueError):
        dcat._iri("http://x/a b")  # never writes a broken IRI
