"""A TwinSpace consumer negotiates and transfers from a TwinSpace provider over DSP only: two brokers
(two apps, two databases, two broker keys) that share nothing but DSP messages over HTTP (ASGI
transports in-process). Broker A runs the consumer role; broker B is the provider. The rows are served by
the provider's connector, which talks to its own broker (B) only; a provider at A has a connector of its
own that trusts A only."""

from __future__ import annotations

import io
import json
import time
from urllib.parse import urlsplit

import httpx
import pyarrow.csv as pacsv
import pytest
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.contracts import callbacks, peer
from broker.identity.onboarding import create_org_with_key
from broker.runtime import Runtime
from broker.settings import Settings
from tests.conftest import HostingClient
from tests.contracts.helpers import offer_iri, publish
from twinspace import agreements
from twinspace.agreements import verify_bundle
from twinspace.client.broker import BrokerClient
from twinspace.crypto import public_key_b64
from twinspace.dsp import schemas
from twinspace.testing.connector import ConnectorHarness
from twinspace.transfer_tokens import make_pop

A_DSP, B_DSP = "http://broker-a.test/dsp", "http://broker-b.test/dsp"


class Broker:
    def __init__(self, tmp_path, name: str, dsp_url: str):
        self.tmp_path, self.name = tmp_path, name
        self.settings = Settings(data_dir=tmp_path / name, database_url=None, redis_url=None, issuer=f"broker-{name}",
                                 dsp_base_url=dsp_url, dsp_peer_hosts=["broker-a.test", "broker-b.test"],
                                 connector_allow_networks=["127.0.0.0/8"])
        self.runtime = Runtime.start(self.settings)
        self.client = TestClient(create_app(self.settings, runtime=self.runtime))
        self.client.__enter__()
        self.connectors: list[ConnectorHarness] = []

    def org(self, role: str, name: str, **kw):
        new = create_org_with_key(self.runtime.engine, name=name, role=role,
                                  key_dir=self.settings.data_dir / "keys", **kw)
        return new, BrokerClient(self.client, new.org_id, new.private_key, audience=self.settings.issuer)

    def provider(self, name: str, **kw):
        """A provider of this broker with its own connector (signed in to this broker, trusting its key only),
        registered here; its client's ``catalog_publish(meta, data)`` places the data at that connector."""
        new, _ = self.org("provider", name, **kw)
        link = BrokerClient(self.client, new.org_id, new.private_key, audience=self.settings.issuer)
        harness = ConnectorHarness(new.org_id, new.private_key, broker=link, broker_issuer=self.settings.issuer,
                                   broker_public_key=self.runtime.broker_key.public_key(),
                                   data_dir=self.tmp_path / f"connector-{self.name}-{new.org_id}").start()
        self.connectors.append(harness)
        client = HostingClient(self.client, new.org_id, new.private_key, audience=self.settings.issuer,
                               connector_factory=lambda: harness)
        client.connector_register(harness.endpoint)
        return new, client, harness

    def events(self, kind: str) -> list[dict]:
        from sqlmodel import Session, select

        from broker.audit.models import AuditEntry

        with Session(self.runtime.engine) as s:
            return [json.loads(e.body) for e in s.exec(select(AuditEntry).where(AuditEntry.kind == kind))]

    def close(self):
        for harness in self.connectors:
            harness.stop()
        self.client.__exit__(None, None, None)
        self.runtime.engine.dispose()


@pytest.fixture
def brokers(tmp_path, monkeypatch):
    a, b = Broker(tmp_path, "a", A_DSP), Broker(tmp_path, "b", B_DSP)
    by_host = {"broker-a.test": a.client, "broker-b.test": b.client}
    wire: list[tuple[str, dict]] = []

    def transport(method, url, body, headers):
        """Every DSP message between the brokers goes through here (and only DSP messages)."""
        parts = urlsplit(url)
        assert parts.path.startswith("/dsp/"), url
        if body is not None:
            wire.append((url, body))
        response = by_host[parts.hostname].request(method, parts.path, json=body, headers=headers)
        return response.status_code, response.json() if response.content else None

    monkeypatch.setattr(peer, "TRANSPORT", transport)
    monkeypatch.setattr(callbacks, "SENDER", lambda url, body, headers: transport("POST", url, body, headers))
    yield a, b, wire
    a.close()
    b.close()


def _same_key_brokers(a, b):
    """The consumer registers the same key at both brokers (its identity is its key)."""
    consumer_at_a, consumer_a = a.org("consumer", "City Lab", org_type="enterprise")
    from sqlmodel import Session

    from broker.identity.models import Org, OrgKey

    with Session(a.runtime.engine) as s:
        org, key = s.get(Org, consumer_at_a.org_id), s.get(OrgKey, consumer_at_a.kid)
        org_data = {c: getattr(org, c) for c in org.__table__.columns.keys()}
        key_data = {c: getattr(key, c) for c in key.__table__.columns.keys()}
    with Session(b.runtime.engine) as s:
        s.add(Org(**org_data))
        s.add(OrgKey(**key_data))
        s.commit()
    consumer_b = BrokerClient(b.client, consumer_at_a.org_id, consumer_at_a.private_key, audience=b.settings.issuer)
    return consumer_at_a, consumer_a, consumer_b


def test_consumer_on_one_broker_negotiates_and_transfers_from_another_over_dsp_only(brokers):
    a, b, wire = brokers
    _provider_org, provider, connector_b = b.provider("Provider B", org_type="government_agency")
    _other_org, _other, connector_a = a.provider("Provider A")  # a connector of broker A's own provider
    consumer, consumer_a, consumer_b = _same_key_brokers(a, b)
    asset = publish(type("P", (), {"client": provider})())
    assert asset["data_endpoint"] == connector_b.endpoint
    token_at_b = consumer_b.token()
    dataset = b.client.get(f"/dsp/catalog/datasets/urn:twinspace:asset:{asset['id']}:v1",
                           headers={"Authorization": f"Bearer {token_at_b}"}).json()
    offer = {**next(o for o in dataset["hasPolicy"] if o["@id"] == offer_iri(asset)), "target": dataset["@id"]}

    rn = consumer_a.post("/contracts/remote/negotiations", json={
        "provider": B_DSP, "offer": offer, "purpose": "research", "token": token_at_b})
    nid, pid = rn["id"], rn["providerPid"]
    provider.contract_offer(pid, max_rows=7)
    consumer_a.post("/contracts/remote/accept", params={"negotiation_id": nid}, json={"token": token_at_b})
    provider.contract_agree(pid)
    document = consumer_a.get(f"/contracts/remote/negotiations/{nid}")["signed_agreement"]["document"]
    signature = agreements.sign_document(consumer.private_key, document, role="consumer", org_id=consumer.org_id)
    assert consumer_a.post("/contracts/remote/verify", params={"negotiation_id": nid}, json={
        "token": token_at_b, "kid": signature["kid"], "signature": signature["signature"]})["state"] == "VERIFIED"
    provider.contract_finalize(pid)
    rn = consumer_a.get(f"/contracts/remote/negotiations/{nid}")
    assert rn["state"] == "FINALIZED" and rn["countersignature"]["payload"]["agreement_id"] == document["id"]
    # B's agreement is the TwinSpace one: both parties signed, B countersigned, verifiable offline.
    bundle = consumer_b.contract_export(document["id"])
    report = verify_bundle(bundle, trusted_broker_keys=[public_key_b64(b.runtime.broker_key.public_key())])
    assert report["valid"], report["errors"]

    # Transfer over DSP: A requests, B starts it and calls A back with the DataAddress.
    rt = consumer_a.post("/transfers/remote", json={"negotiation_id": nid, "token": token_at_b})
    rt = consumer_a.get(f"/transfers/remote/{rt['id']}")
    assert rt["state"] == "STARTED" and rt["providerPid"].startswith("tp_")
    address = rt["dataAddress"]
    assert address["@type"] == "DataAddress" and schemas.errors(address, "DataAddress") == []
    # The consumer pulls from B's provider's connector with the token bound to its key; that connector asks
    # B (its own broker) for the decision and sends B the receipt. Broker A sees neither.
    endpoint = address["endpoint"]
    assert endpoint == f"{connector_b.endpoint}/dataplane/transfers/{rt['providerPid']}"
    token = consumer_b.data_address({"dataAddress": address})[1]
    # the token relayed to A's provider's connector (it trusts broker A, and is another audience): refused
    relayed = f"{connector_a.endpoint}/dataplane/transfers/{rt['providerPid']}"
    pop = make_pop(consumer.private_key, method="GET", path=urlsplit(relayed).path, token=token)
    answer = httpx.get(relayed, headers={"TwinSpace-Transfer-Token": token, "TwinSpace-PoP": pop})
    assert (answer.status_code, answer.json()["code"]) == (401, "invalid_transfer_token")  # not signed by A
    rows = pacsv.read_csv(io.BytesIO(consumer_b.transfer_pull({"dataAddress": address}))).num_rows
    assert rows == 7
    deadline = time.time() + 5
    while not b.events("transfer.receipt") and time.time() < deadline:
        time.sleep(0.05)
    [receipt] = b.events("transfer.receipt")
    assert receipt["details"]["claims"]["rows"] == 7 and receipt["actor"] == _provider_org.org_id
    assert [d["details"]["allow"] for d in b.events("transfer.decision")] == [True]
    assert a.events("transfer.receipt") == [] and a.events("transfer.decision") == []
    tid = rt["id"]
    assert consumer_a.post("/transfers/remote-change/suspension", params={"transfer_id": tid},
                           json={"token": token_at_b, "code": "pause"})["state"] == "SUSPENDED"
    assert consumer_b.transfer_get(rt["providerPid"])["state"] == "SUSPENDED"
    assert consumer_a.post("/transfers/remote-change/start", params={"transfer_id": tid},
                           json={"token": token_at_b})["state"] == "STARTED"
    assert consumer_a.post("/transfers/remote-change/completion", params={"transfer_id": tid},
                           json={"token": token_at_b})["state"] == "COMPLETED"
    assert consumer_b.transfer_get(rt["providerPid"])["state"] == "COMPLETED"
    # B's provider ends another transfer: A hears of it by callback.
    rt2 = consumer_a.post("/transfers/remote", json={"negotiation_id": nid, "token": token_at_b})
    provider.transfer_message(consumer_a.get(f"/transfers/remote/{rt2['id']}")["providerPid"], "termination",
                              code="maintenance")
    assert consumer_a.get(f"/transfers/remote/{rt2['id']}")["state"] == "TERMINATED"

    # Only DSP messages crossed, each schema-valid.
    kinds = [body["@type"] for _, body in wire]
    assert {"ContractRequestMessage", "ContractOfferMessage", "ContractNegotiationEventMessage",
            "ContractAgreementMessage", "ContractAgreementVerificationMessage", "TransferRequestMessage",
            "TransferStartMessage", "TransferSuspensionMessage", "TransferCompletionMessage",
            "TransferTerminationMessage"} <= set(kinds)
    assert [(url, schemas.errors(body)) for url, body in wire if schemas.errors(body)] == []
