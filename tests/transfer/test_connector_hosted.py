"""Connector-hosted assets: the table stays on the provider's machine (``twinspace connector serve``)
and the broker proxies each pull to it, checking the bytes against the published content hash."""

from __future__ import annotations

import io
import time
import uuid

import httpx
import jwt
import pyarrow.csv as pacsv
import pytest
from sqlmodel import Session, select

from broker.catalog.models import Asset, AssetBlob
from connectors.publish import prepare
from twinspace.client.broker import BrokerError, negotiate
from connectors.serve import create_connector_app
from tests.contracts.helpers import OFFERS, table_bytes
from tests.serving import serve_app


@pytest.fixture
def hosted(world, runtime, tmp_path):
    """The provider serves one de-identified file from its own directory and publishes it by reference."""
    served = tmp_path / "provider-files"
    served.mkdir()
    data = table_bytes()
    (served / "buildings.arrow").write_bytes(data)
    app = create_connector_app(served, runtime.broker_key.public_key(), broker_issuer=runtime.settings.issuer)
    with serve_app(app) as url:
        meta = prepare(data, title="Buildings (connector-hosted)", classification="public", domain="planning",
                       offers=OFFERS, twin_category="building_structure", entity_type="Building")
        asset = world.provider.client.catalog_publish({**meta, "data_endpoint": url}, data)
        yield {"url": url, "dir": served, "data": data, "asset": asset, "meta": meta}


def _agreement(world, asset):
    return negotiate(world.consumer.client, world.provider.client,
                     f"urn:twinspace:offer:{asset['id']}:v1:research", "research")


def test_publish_by_reference_stores_no_data_and_pulls_go_through_the_connector(world, hosted, engine):
    asset = hosted["asset"]
    assert asset["storage"] == "connector" and "data_endpoint" not in asset  # the URL is not advertised
    with Session(engine) as s:
        assert s.get(AssetBlob, (asset["id"], 1)) is None
        assert s.get(Asset, (asset["id"], 1)).data_endpoint == hosted["url"]
    agreement = _agreement(world, asset)
    tp = world.consumer.client.transfer_request(agreement["id"])
    rows = pacsv.read_csv(io.BytesIO(world.consumer.client.transfer_pull(tp, "csv")))
    assert rows.num_rows == 40  # the offer's max_rows obligation, applied by the broker
    assert rows.column("building_id").to_pylist()[:3] == ["B0000", "B0001", "B0002"]


def test_the_connector_serves_only_to_the_broker_and_only_the_named_file(world, hosted, runtime):
    url, sha = hosted["url"], hosted["asset"]["content_hash"]
    assert httpx.get(f"{url}/data/{sha}").status_code == 401
    now = int(time.time())
    claims = {"iss": runtime.settings.issuer, "aud": "twinspace-connector", "sha256": sha, "iat": now,
              "exp": now + 60, "jti": uuid.uuid4().hex}
    forged = jwt.encode(claims, world.consumer.private_key, algorithm="EdDSA")
    assert httpx.get(f"{url}/data/{sha}", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    other = jwt.encode({**claims, "sha256": "0" * 64}, runtime.broker_key, algorithm="EdDSA")
    assert httpx.get(f"{url}/data/{sha}", headers={"Authorization": f"Bearer {other}"}).status_code == 403
    good = jwt.encode(claims, runtime.broker_key, algorithm="EdDSA")
    r = httpx.get(f"{url}/data/{sha}", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200 and r.content == hosted["data"]
    missing = jwt.encode({**claims, "sha256": "1" * 64}, runtime.broker_key, algorithm="EdDSA")
    assert httpx.get(f"{url}/data/{'1' * 64}", headers={"Authorization": f"Bearer {missing}"}).status_code == 404


def test_changed_file_on_the_connector_is_refused_and_nothing_is_served(world, hosted, engine):
    agreement = _agreement(world, hosted["asset"])
    tp = world.consumer.client.transfer_request(agreement["id"])
    # The provider (or an intruder on its machine) swaps the file behind the signed agreement.
    (hosted["dir"] / "buildings.arrow").write_bytes(table_bytes(offset=500))
    with pytest.raises(BrokerError) as err:
        world.consumer.client.transfer_pull(tp, "csv")
    assert err.value.status == 503 and err.value.code == "connector_data_mismatch"
    assert "B0500" not in str(err.value.problem)


def test_connector_down_is_a_clear_refusal(world, hosted, runtime, engine):
    agreement = _agreement(world, hosted["asset"])
    tp = world.consumer.client.transfer_request(agreement["id"])
    with Session(engine) as s:  # point the asset at a port where nothing listens
        asset = s.get(Asset, (hosted["asset"]["id"], 1))
        asset.data_endpoint = "http://127.0.0.1:1"
        s.add(asset)
        s.commit()
    with pytest.raises(BrokerError) as err:
        world.consumer.client.transfer_pull(tp, "csv")
    assert err.value.status == 503 and err.value.code == "connector_unavailable"


def test_publish_by_reference_checks_the_served_file_and_is_atomic(world, hosted, engine):
    provider = world.provider.client
    other = table_bytes(offset=100)
    meta = prepare(other, title="Not served", classification="public", domain="planning", offers=OFFERS,
                   twin_category="building_structure", entity_type="Building")
    with Session(engine) as s:
        before = len(s.exec(select(Asset)).all())
    with pytest.raises(BrokerError) as err:  # the connector has no file with this hash
        provider.catalog_publish({**meta, "data_endpoint": hosted["url"]}, other)
    assert err.value.status == 503 and err.value.code == "connector_refused"
    with pytest.raises(BrokerError) as err:  # both places, or neither
        provider.post("/catalog/assets", json={**meta, "data_endpoint": hosted["url"], "upload_id": "u"})
    assert err.value.status == 422
    with pytest.raises(BrokerError) as err:
        provider.post("/catalog/assets", json={**meta, "data_endpoint": "file:///etc/passwd"})
    assert err.value.status == 422
    with Session(engine) as s:
        assert len(s.exec(select(Asset)).all()) == before


def test_new_version_can_move_between_broker_and_connector_hosting(world, hosted, engine):
    from tests.contracts.helpers import publish

    v2 = publish(world.provider, table_bytes(n=30), asset_id=hosted["asset"]["id"])
    assert v2["version"] == 2 and v2["storage"] == "broker" and v2["row_count"] == 30
    with Session(engine) as s:
        assert s.get(AssetBlob, (v2["id"], 2)) is not None and s.get(Asset, (v2["id"], 2)).data_endpoint is None


def test_connector_hosts_outside_the_allow_list_are_never_fetched(world, runtime, tmp_path):
    """With TWINSPACE_CONNECTOR_HOSTS set, a provider cannot make the broker fetch from another host."""
    served = tmp_path / "files"
    served.mkdir()
    data = table_bytes()
    (served / "b.arrow").write_bytes(data)
    app = create_connector_app(served, runtime.broker_key.public_key(), broker_issuer=runtime.settings.issuer)
    runtime.settings.connector_hosts = ["connector.example.org", ".agency.example"]
    with serve_app(app) as url:
        meta = prepare(data, title="Elsewhere", classification="public", domain="planning", offers=OFFERS,
                       twin_category="building_structure", entity_type="Building")
        with pytest.raises(BrokerError) as err:
            world.provider.client.catalog_publish({**meta, "data_endpoint": url}, data)
    assert (err.value.status, err.value.code) == (403, "connector_host_not_allowed")
    from broker.catalog.connector_source import check_host

    check_host("https://files.agency.example/x", runtime.settings)  # a subdomain of an allowed suffix
    check_host("https://connector.example.org", runtime.settings)
    with pytest.raises(Exception):
        check_host("https://connector.example.org.evil.test", runtime.settings)
