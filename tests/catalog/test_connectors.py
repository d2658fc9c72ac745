"""The connector registry and publishing from a verified connector: ownership proofs, one organisation
per endpoint, the signed manifest, content owned by one provider."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select

from broker.audit.models import AuditEntry
from connectors.publish import prepare
from tests.contracts.helpers import OFFERS, table_bytes
from twinspace.client.broker import BrokerClient, BrokerError
from twinspace.crypto import generate_key
from twinspace.testing.connector import ConnectorHarness


def _meta(data: bytes, endpoint: str, **patch):
    meta = prepare(data, title="Buildings", classification="public", domain="planning", offers=OFFERS,
                   twin_category="building_structure", entity_type="Building")
    return {**meta, "data_endpoint": endpoint, **patch}


def test_register_lists_and_refreshes(make_org, runtime):
    prov, prov2, auditor = make_org("provider"), make_org("provider"), make_org("auditor")
    conn = prov.connector()  # started and registered (POST /connectors)
    again = prov.client.connector_register(conn.endpoint + "/")  # another spelling: the same endpoint, refreshed
    assert again["endpoint"] == conn.endpoint and again["org_id"] == prov.org_id and again["id"].startswith("cn_")
    assert [c["endpoint"] for c in prov.client.connectors()] == [conn.endpoint]
    assert prov2.client.connectors() == []
    assert [c["org_id"] for c in auditor.client.connectors()] == [prov.org_id]
    with Session(runtime.engine) as s:
        events = [e for e in s.exec(select(AuditEntry)).all() if e.kind == "connector.registered"]
    assert [json.loads(e.body)["details"]["refreshed"] for e in events] == [False, True]


def test_an_endpoint_belongs_to_one_organisation(make_org):
    prov, prov2 = make_org("provider"), make_org("provider")
    conn = prov.connector()
    with pytest.raises(BrokerError) as info:
        prov2.client.connector_register(conn.endpoint)
    assert info.value.status == 409 and info.value.code == "endpoint_owned_elsewhere"


def test_ownership_proof_with_a_key_not_of_the_org_is_refused(make_org, settings, client, runtime, tmp_path):
    prov = make_org("provider")
    stranger = generate_key()  # not registered for the provider
    link = BrokerClient(client, prov.org_id, prov.private_key, audience=settings.issuer)
    with ConnectorHarness(prov.org_id, stranger, broker=link, broker_issuer=settings.issuer,
                          broker_public_key=runtime.broker_key.public_key(), data_dir=tmp_path / "rogue") as rogue:
        with pytest.raises(BrokerError) as info:
            prov.client.connector_register(rogue.endpoint)
        assert info.value.status == 403 and info.value.code == "ownership_not_proven"
    assert prov.client.connectors() == []


def test_consumers_cannot_register_and_unreachable_connectors_are_one_uniform_502(make_org):
    prov, consumer = make_org("provider"), make_org("consumer")
    with pytest.raises(BrokerError) as info:
        consumer.client.connector_register("http://127.0.0.1:9")
    assert info.value.status == 403
    answers = []
    for endpoint in ("http://127.0.0.1:9", "http://10.0.0.1:8080", "http://no-such-host.invalid"):
        with pytest.raises(BrokerError) as info:
            prov.client.connector_register(endpoint)
        answers.append((info.value.status, info.value.code, info.value.problem["detail"]))
    assert len(set(answers)) == 1 and answers[0][:2] == (502, "connector_unreachable")
    with pytest.raises(BrokerError) as info:
        prov.client.connector_register("ftp://x")
    assert info.value.status == 400


def test_publish_needs_a_verified_connector_of_the_provider(make_org):
    prov, prov2 = make_org("provider"), make_org("provider")
    data = table_bytes()
    conn = prov.connector()
    conn.put(data)
    with pytest.raises(BrokerError) as info:  # someone else's connector
        prov2.client.catalog_publish(_meta(data, conn.endpoint))
    assert info.value.status == 403 and info.value.code == "connector_not_verified"
    with pytest.raises(BrokerError) as info:  # never registered
        prov.client.catalog_publish(_meta(data, "http://127.0.0.1:9"))
    assert info.value.code == "connector_not_verified"
    with pytest.raises(ValueError):
        prov.client.catalog_publish({k: v for k, v in _meta(data, conn.endpoint).items() if k != "data_endpoint"})
    asset = prov.client.catalog_publish(_meta(data, conn.endpoint + "/"))
    assert asset["data_endpoint"] == conn.endpoint and asset["storage"] == "connector"


def test_content_published_by_another_provider_is_refused(make_org):
    prov, prov2 = make_org("provider"), make_org("provider")
    data = table_bytes()
    prov.client.catalog_publish(_meta(data, ""), data)  # HostingClient: placed at prov's connector
    conn2 = prov2.connector()
    conn2.put(data)
    with pytest.raises(BrokerError) as info:
        prov2.client.catalog_publish(_meta(data, conn2.endpoint))
    assert info.value.status == 409 and info.value.code == "content_owned_elsewhere"


@pytest.mark.parametrize("patch,code", [({"row_count": 59}, "row_count_mismatch"),
                                         ({"columns": [{"name": "building_id", "type": "string"}]}, "schema_mismatch"),
                                         ({"content_hash": "ab" * 32}, "manifest_not_found")])
def test_metadata_that_disagrees_with_the_manifest_is_refused(make_org, patch, code):
    prov = make_org("provider")
    data = table_bytes()
    conn = prov.connector()
    conn.put(data)
    with pytest.raises(BrokerError) as info:
        prov.client.catalog_publish(_meta(data, conn.endpoint, **patch))
    assert info.value.status == 422 and info.value.code == code
    assert prov.client.catalog_search()["total"] == 0


def test_manifest_signed_by_a_stranger_is_refused(make_org, settings, client, runtime, tmp_path, monkeypatch):
    """A registered endpoint whose manifest (not ownership proof) is signed by another key."""
    from broker.catalog import netguard
    from twinspace.dataplane import MANIFEST, sign_message

    prov = make_org("provider")
    data = table_bytes()
    conn = prov.connector()
    conn.put(data)
    meta = _meta(data, conn.endpoint)
    real = netguard.request

    def forged(settings_, method, endpoint, path, **kw):
        response = real(settings_, method, endpoint, path, **kw)
        if path.endswith("/manifest"):
            import httpx

            token = sign_message(generate_key(), MANIFEST, issuer=prov.org_id, audience=settings.issuer, claims={
                "endpoint": conn.endpoint, "org": prov.org_id, "sha256": meta["content_hash"],
                "rows": meta["row_count"], "bytes": len(data), "columns": meta["columns"]})
            return httpx.Response(200, json={"manifest": token})
        return response

    monkeypatch.setattr(netguard, "request", forged)
    with pytest.raises(BrokerError) as info:
        prov.client.catalog_publish(meta)
    assert info.value.status == 422 and info.value.code == "manifest_invalid"
