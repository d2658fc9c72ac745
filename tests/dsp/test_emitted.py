"""Every DSP message and object TwinSpace emits in an end-to-end run validates against the DSP 2025-1
schemas: collected from real flows (a broker-hosted consumer through the SDK, and a consumer with a
callbackAddress that receives the provider's messages), not hand-written samples."""

from __future__ import annotations

import uuid

import pytest

from broker.contracts import callbacks
from tests.contracts.helpers import offer_iri, publish
from twinspace import agreements
from twinspace.dsp import jsonld, schemas
from twinspace.dsp.contexts import TWIN_NS
from twinspace.dsp.messages import PLAIN_CONTEXT
from twinspace.odrl import policy as odrl_policy

CALLBACK = "http://consumer.test/dsp"


@pytest.fixture
def outbox(monkeypatch, settings):
    sent: list[tuple[str, dict]] = []
    settings.dsp_peer_hosts = ["consumer.test"]
    monkeypatch.setattr(callbacks, "SENDER", lambda url, body, headers: sent.append((url, body)))
    return sent


def _dsp(kind: str, **fields):
    return {"@context": list(PLAIN_CONTEXT), "@type": kind, **fields}


def hub_flow(world):
    """A broker-hosted consumer and provider through the SDK: catalog, negotiation, transfer states."""
    c, p = world.consumer.client, world.provider.client
    c.get("/.well-known/dspace-version")
    c.contract_catalog()
    c.post("/dsp/catalog/request?limit=1", json=_dsp("CatalogRequestMessage",
                                                     filter=[{"dct:identifier": world.asset["id"]}]))
    c.get(f"/dsp/catalog/datasets/urn:twinspace:asset:{world.asset['id']}:v1")
    neg = c.contract_request(offer_iri(world.asset), "research")
    pid = neg["providerPid"]
    p.contract_offer(pid, max_rows=10)
    c.contract_accept(pid)
    p.contract_agree(pid)
    c.contract_verify(pid)
    p.contract_finalize(pid)
    agreement_id = c.contract_get(pid)["agreement"]["id"]
    tp = c.transfer_request(agreement_id)
    c.transfer_pull(tp)
    tid = tp["providerPid"]
    c.transfer_message(tid, "suspension", code="pause")
    c.transfer_message(tid, "start")
    c.transfer_message(tid, "completion")
    tp2 = c.transfer_request(agreement_id)
    c.transfer_message(tp2["providerPid"], "termination", code="done")
    c.transfer_get(tid)
    c.get(f"/dsp/negotiations/{pid}")
    return agreement_id


def callback_flow(world, outbox):
    """A consumer that gives a callbackAddress: the provider's offer, agreement, FINALIZED event and
    transfer messages go to it."""
    consumer, p = world.consumer2, world.provider.client
    h = consumer.client.headers()
    http = consumer.client.http
    offer = consumer.client._catalog_offer(offer_iri(world.asset))
    cpid = f"urn:uuid:{uuid.uuid4()}"
    neg = http.post("/dsp/negotiations/request", headers=h, json=_dsp(
        "ContractRequestMessage", consumerPid=cpid, offer=offer, callbackAddress=CALLBACK,
        **{TWIN_NS + "purpose": "research"})).json()  # the TwinSpace purpose, written without our context
    pid = neg["providerPid"]
    p.contract_offer(pid, max_rows=5)
    assert http.post(f"/dsp/negotiations/{pid}/events", headers=h, json=_dsp(
        "ContractNegotiationEventMessage", providerPid=pid, consumerPid=cpid, eventType="ACCEPTED")).status_code == 200
    p.contract_agree(pid)
    agreement_msg = next(body for url, body in outbox if body["@type"] == "ContractAgreementMessage")
    signed = agreement_msg[TWIN_NS + "signedAgreement"]["@value"]["document"]
    signature = agreements.sign_document(consumer.private_key, signed, role="consumer", org_id=consumer.org_id)
    r = http.post(f"/dsp/negotiations/{pid}/agreement/verification", headers=h, json={
        **_dsp("ContractAgreementVerificationMessage", providerPid=pid, consumerPid=cpid),
        TWIN_NS + "signature": {"@type": "@json", "@value": signature}})
    assert r.status_code == 200, r.text
    p.contract_finalize(pid)
    agreement_id = signed["id"]
    odrl_id = agreement_msg["agreement"]["@id"]  # what a plain DSP consumer knows the agreement by
    assert odrl_id == f"urn:twinspace:agreement:{agreement_id}"
    tcpid = f"urn:uuid:{uuid.uuid4()}"
    tp = http.post("/dsp/transfers/request", headers=h, json=_dsp(
        "TransferRequestMessage", consumerPid=tcpid, agreementId=odrl_id, format="HttpData-PULL",
        callbackAddress=CALLBACK)).json()
    p.transfer_message(tp["providerPid"], "suspension", code="maintenance")
    push = http.post("/dsp/transfers/request", headers=h, json=_dsp(
        "TransferRequestMessage", consumerPid=f"urn:uuid:{uuid.uuid4()}", agreementId=agreement_id,
        format="HttpData-PUSH", callbackAddress=CALLBACK, dataAddress={
            "@type": "DataAddress", "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
            "endpoint": "http://consumer.test/sink",
            "endpointProperties": [{"@type": "EndpointProperty", "name": "authorization", "value": "secret"}]}))
    assert push.status_code == 201, push.text
    p.contract_revoke(agreement_id, reason="end of project")  # terminates live transfers, tells the consumer
    neg2 = http.post("/dsp/negotiations/request", headers=h, json=_dsp(
        "ContractRequestMessage", consumerPid=f"urn:uuid:{uuid.uuid4()}", offer=offer,
        callbackAddress=CALLBACK)).json()
    p.contract_terminate(neg2["providerPid"], code="declined", reason="not now")
    return agreement_id


def test_every_emitted_message_is_schema_valid(world, recorder, outbox):
    hub_flow(world)
    callback_flow(world, outbox)
    emitted = recorder.sent + [(f"callback {url}", body) for url, body in outbox]
    checked, failures, kinds = 0, [], set()
    for where, doc in emitted:
        kind = doc.get("@type") if isinstance(doc, dict) else None
        if kind is None and isinstance(doc, dict) and "protocolVersions" in doc:
            kind = "VersionResponse"
        assert kind in schemas.SCHEMA_FOR_TYPE, f"{where}: no DSP type in {str(doc)[:200]}"
        problems = schemas.errors(doc, kind)
        if problems:
            failures.append((where, kind, problems[:3]))
        checked += 1
        kinds.add(kind)
    assert not failures, failures
    expected = {"VersionResponse", "CatalogRequestMessage", "Catalog", "Dataset", "ContractRequestMessage",
                "ContractNegotiation", "ContractOfferMessage", "ContractNegotiationEventMessage",
                "ContractAgreementMessage", "ContractAgreementVerificationMessage",
                "ContractNegotiationTerminationMessage", "TransferRequestMessage", "TransferProcess",
                "TransferStartMessage", "TransferSuspensionMessage", "TransferCompletionMessage",
                "TransferTerminationMessage"}
    assert expected <= kinds, expected - kinds
    assert checked >= 40, checked
    print(f"validated {checked} emitted DSP documents of {len(kinds)} types")
    # the callbacks are the DSP consumer paths
    paths = {url.split("/dsp", 1)[1].rsplit("/", 1)[-1] for url, _ in outbox}
    assert {"offers", "agreement", "events", "termination", "start", "suspension"} <= paths


def test_signed_agreement_is_an_odrl_agreement_that_loses_no_key(world):
    agreement = world.agreement()
    doc = agreement["document"]
    assert odrl_policy.problems(doc, kind="Agreement") == []
    assert doc["target"].startswith("urn:twinspace:asset:") and doc["assigner"].startswith("urn:twinspace:org:")
    assert doc["assignee"] == f"urn:twinspace:org:{world.consumer.org_id}"
    written, kept = jsonld.expanded_keys(doc)
    assert written and written <= kept, written - kept
    view = agreements.odrl_view(doc)
    assert schemas.errors(view, "Agreement") == []
    # the Rego parameters the policy engine reads are the ODRL terms of the signed document
    assert agreements.policy_params_of(doc, {}) == doc["policy"]["params"]


def test_odrl_terms_are_in_the_vocabulary_or_the_profile(world):
    """Every ``odrl:`` term TwinSpace writes in offers and agreements is defined in ODRL 2.2; the rest
    are TwinSpace profile terms."""
    import re
    from pathlib import Path

    vocab = (Path(__file__).parent / "data" / "ODRL22.ttl").read_text()
    defined = set(re.findall(r"^:(\w+)\s", vocab, re.MULTILINE)) | set(re.findall(r"^odrl:(\w+)\s", vocab,
                                                                                   re.MULTILINE))
    publish(world.provider, asset_id=None, offers=[
        {"id": "agg", "policy_id": "aggregation-only", "params": {"epsilon_per_query": 0.5, "min_cohort": 10}},
        {"id": "geo", "policy_id": "geo-restricted", "params": {"bbox": [121.4, 25.0, 121.6, 25.2],
                                                                 "not_after": 1893456000, "max_accesses": 5}}])
    catalog = world.consumer.client.contract_catalog()
    used: set[str] = set()
    for ds in catalog["dataset"]:
        for offer in ds["hasPolicy"]:
            for value in _terms(offer):
                if value.startswith("http://www.w3.org/ns/odrl/2/"):
                    used.add(value.rsplit("/", 1)[1])
                elif value.startswith("odrl:"):
                    used.add(value[5:])
                elif value in ("use",) or value in ("eq", "lt", "lteq", "gteq", "isAnyOf", "isPartOf"):
                    used.add(value)
                else:
                    assert value.startswith(TWIN_NS), value
    assert {"purpose", "dateTime", "count", "spatial", "aggregate", "anonymize", "read"} <= used
    assert used <= defined, used - defined


def _terms(offer):
    for kind in ("permission", "prohibition"):
        for rule in offer.get(kind) or []:
            yield rule["action"]
            for c in rule.get("constraint") or []:
                yield c["leftOperand"]
                yield c["operator"]
            for duty in rule.get("duty") or []:
                yield duty["action"]
                for c in duty.get("constraint") or []:
                    yield c["leftOperand"]
                    yield c["operator"]
