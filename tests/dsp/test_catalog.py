"""DSP catalog protocol: version document, Catalog with participantId and ODRL offers, the dataset
endpoint, catalog request filtering and pagination (Link headers)."""

from __future__ import annotations

from tests.contracts.helpers import publish, table_bytes
from twinspace.dsp import schemas
from twinspace.dsp.messages import PLAIN_CONTEXT


def _request(**fields):
    return {"@context": list(PLAIN_CONTEXT), "@type": "CatalogRequestMessage", **fields}


def test_version_document_is_public_and_valid(client):
    r = client.get("/.well-known/dspace-version")
    assert r.status_code == 200 and schemas.errors(r.json(), "VersionResponse") == []
    assert r.json()["protocolVersions"][0] == {"version": "2025-1", "path": "/dsp", "binding": "HTTPS"}


def test_catalog_pages_filters_and_datasets(world, settings):
    settings.dsp_participant_id = "did:web:twinspace.example"
    c = world.consumer.client
    for i in range(2):
        publish(world.provider, table_bytes(offset=100 * (i + 1)))
    http, h = c.http, c.headers()
    full = http.post("/dsp/catalog/request", headers=h, json=_request()).json()
    assert schemas.errors(full, "Catalog") == []
    assert full["participantId"] == "did:web:twinspace.example" and len(full["dataset"]) == 3
    assert all(o["@type"] == "Offer" and o["permission"] for ds in full["dataset"] for o in ds["hasPolicy"])

    first = http.post("/dsp/catalog/request?limit=2", headers=h, json=_request())
    assert len(first.json()["dataset"]) == 2 and 'rel="next"' in first.headers["link"]
    next_url = first.headers["link"].split(">")[0].lstrip("<")
    second = http.post(next_url, headers=h, json=_request())
    assert len(second.json()["dataset"]) == 1 and 'rel="previous"' in second.headers["link"]
    assert {d["@id"] for d in first.json()["dataset"]} | {d["@id"] for d in second.json()["dataset"]} == {
        d["@id"] for d in full["dataset"]}

    only = http.post("/dsp/catalog/request", headers=h, json=_request(
        filter=[{"dct:identifier": world.asset["id"]}])).json()
    assert [d["dct:identifier"] for d in only["dataset"]] == [world.asset["id"]]
    by_iri = http.post("/dsp/catalog/request", headers=h, json=_request(
        filter=[{"@id": f"urn:twinspace:asset:{world.asset['id']}:v1"}])).json()
    assert [d["@id"] for d in by_iri["dataset"]] == [f"urn:twinspace:asset:{world.asset['id']}:v1"]
    none = http.post("/dsp/catalog/request", headers=h, json=_request(filter=[{"dcat:keyword": "no-such-thing"}]))
    assert none.status_code == 200 and "dataset" not in none.json() and schemas.errors(none.json()) == []

    ds = http.get(f"/dsp/catalog/datasets/urn:twinspace:asset:{world.asset['id']}:v1", headers=h).json()
    assert schemas.errors(ds, "Dataset") == [] and ds["@id"].endswith(":v1")
    assert http.get(f"/dsp/catalog/datasets/{world.asset['id']}", headers=h).json()["@id"] == ds["@id"]
