"""Bad input on a DSP route — unknown state transition, wrong process id, another participant's process,
malformed JSON-LD — gets the protocol's DSP error object (4xx; 404 only for an unknown id) and changes
nothing."""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import Session, func, select

from broker.audit.models import AuditEntry
from broker.contracts.models import ContractNegotiation
from broker.transfer.models import TransferProcess
from tests.contracts.helpers import offer_iri
from twinspace.dsp import schemas
from twinspace.dsp.messages import PLAIN_CONTEXT


def _dsp(kind, **fields):
    return {"@context": list(PLAIN_CONTEXT), "@type": kind, **fields}


def _snapshot(engine):
    with Session(engine) as s:
        negs = sorted((n.id, n.state) for n in s.exec(select(ContractNegotiation)).all())
        tps = sorted((t.id, t.state) for t in s.exec(select(TransferProcess)).all())
        return negs, tps


def _expect(response, status, kind, code=None):
    body = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert body["@type"] == kind and schemas.errors(body) == [], body
    if code:
        assert body["code"] == code, body
    return body


@pytest.fixture
def started(world):
    """A FINALIZED negotiation and a STARTED transfer of world.consumer."""
    agreement = world.agreement()
    tp = world.consumer.client.transfer_request(agreement["id"])
    return agreement, tp


def test_negotiation_bad_input_is_a_negotiation_error_and_changes_nothing(world, engine, started):
    agreement = started[0]
    c = world.consumer.client
    pid = agreement["negotiation_id"]
    cpid = c.get(f"/dsp/negotiations/{pid}")["consumerPid"]
    before = _snapshot(engine)
    http, h = c.http, c.headers()
    # unknown transition: ACCEPTED on a FINALIZED negotiation
    body = _expect(http.post(f"/dsp/negotiations/{pid}/events", headers=h, json=_dsp(
        "ContractNegotiationEventMessage", providerPid=pid, consumerPid=cpid, eventType="ACCEPTED")),
        409, "ContractNegotiationError", "invalid_transition")
    assert body["providerPid"] == pid and body["consumerPid"] == cpid
    # wrong process id in the body
    _expect(http.post(f"/dsp/negotiations/{pid}/termination", headers=h, json=_dsp(
        "ContractNegotiationTerminationMessage", providerPid=pid, consumerPid="urn:uuid:other")),
        400, "ContractNegotiationError", "pid_mismatch")
    # unknown process id
    _expect(http.get("/dsp/negotiations/neg_doesnotexist", headers=h), 404, "ContractNegotiationError")
    # another participant's process: as unknown as a missing one
    other = world.consumer2.client
    _expect(other.http.post(f"/dsp/negotiations/{pid}/termination", headers=other.headers(), json=_dsp(
        "ContractNegotiationTerminationMessage", providerPid=pid, consumerPid=cpid)),
        404, "ContractNegotiationError")
    # malformed JSON-LD, not JSON, unknown context, wrong message type
    for raw, code in (({"@context": {"@version": 2.0}, "@type": "X"}, "invalid_json_ld"),
                      (["not", "an", "object"], "invalid_json_ld"),
                      ({"@context": ["https://evil.example/ctx"], "@type": "ContractNegotiationEventMessage"},
                       "invalid_json_ld"),
                      (_dsp("TransferCompletionMessage", providerPid=pid, consumerPid=cpid), "wrong_message_type")):
        _expect(http.post(f"/dsp/negotiations/{pid}/events", headers=h, json=raw), 400, "ContractNegotiationError",
                code)
    _expect(http.post(f"/dsp/negotiations/{pid}/events", headers={**h, "Content-Type": "application/json"},
                      content=b"{not json"), 400, "ContractNegotiationError", "malformed_json")
    # JSON that Python accepts but nothing downstream can sign or hash: still a DSP error object
    for raw in (b'{"@type": "ContractNegotiationEventMessage", "x": NaN}', b'{"x": 1e400}', b'{"x": "\\ud800"}',
                b'{"x": 123456789012345678901234567890}', b"[" * 200 + b"]" * 200):
        _expect(http.post(f"/dsp/negotiations/{pid}/events", headers={**h, "Content-Type": "application/ld+json"},
                          content=raw), 400, "ContractNegotiationError", "malformed_json")
    # no token
    _expect(http.post("/dsp/negotiations/request", json=_dsp("ContractRequestMessage")), 401,
            "ContractNegotiationError")
    assert _snapshot(engine) == before


def test_transfer_bad_input_is_a_transfer_error_and_changes_nothing(world, engine, started):
    agreement, tp = started
    c = world.consumer.client
    tid, cpid = tp["providerPid"], tp["consumerPid"]
    http, h = c.http, c.headers()
    before = _snapshot(engine)
    # a consumer cannot start a transfer that is already STARTED (unknown transition)
    _expect(http.post(f"/dsp/transfers/{tid}/start", headers=h, json=_dsp(
        "TransferStartMessage", providerPid=tid, consumerPid=cpid)), 409, "TransferError", "invalid_transition")
    _expect(http.post(f"/dsp/transfers/{tid}/completion", headers=h, json=_dsp(
        "TransferCompletionMessage", providerPid=tid, consumerPid="urn:uuid:wrong")), 400, "TransferError",
        "pid_mismatch")
    _expect(http.get("/dsp/transfers/tp_missing", headers=h), 404, "TransferError")
    thief = world.consumer2.client
    _expect(thief.http.post(f"/dsp/transfers/{tid}/termination", headers=thief.headers(), json=_dsp(
        "TransferTerminationMessage", providerPid=tid, consumerPid=cpid)), 404, "TransferError")
    _expect(http.post(f"/dsp/transfers/{tid}/suspension", headers=h, json={"@context": 5}), 400, "TransferError",
            "invalid_json_ld")
    _expect(http.post("/dsp/transfers/request", headers=h, json=_dsp(
        "TransferRequestMessage", consumerPid=f"urn:uuid:{uuid.uuid4()}", agreementId=agreement["id"],
        format="FTP-PULL", callbackAddress="urn:twinspace:broker-hosted")), 400, "TransferError",
        "unsupported_format")
    _expect(http.post("/dsp/transfers/request", headers=h, json=_dsp(
        "TransferRequestMessage", consumerPid=f"urn:uuid:{uuid.uuid4()}", agreementId=agreement["id"],
        format="HttpData-PULL", callbackAddress="http://not-allowed.example/cb")), 400, "TransferError",
        "callback_host_not_allowed")
    _expect(http.post("/dsp/transfers/request", headers=h, json=_dsp(
        "TransferRequestMessage", consumerPid=f"urn:uuid:{uuid.uuid4()}", agreementId="agr_unknown",
        format="HttpData-PULL", callbackAddress="urn:twinspace:broker-hosted")), 404, "TransferError")
    assert _snapshot(engine) == before


def test_catalog_bad_input_is_a_catalog_error(world):
    c = world.consumer.client
    _expect(c.http.post("/dsp/catalog/request", headers=c.headers(), json=_dsp(
        "CatalogRequestMessage", filter=[{"dct:nonsense": "x"}])), 400, "CatalogError", "unsupported_filter")
    _expect(c.http.get("/dsp/catalog/datasets/urn:twinspace:asset:ast_missing:v1", headers=c.headers()), 404,
            "CatalogError")
    _expect(c.http.post("/dsp/catalog/request", json=_dsp("CatalogRequestMessage")), 401, "CatalogError")


def test_refusals_are_audited(world, engine):
    c = world.consumer.client
    with Session(engine) as s:
        n0 = s.exec(select(func.count()).select_from(AuditEntry)).one()
    c.http.get("/dsp/negotiations/neg_missing", headers=c.headers())
    with Session(engine) as s:
        kinds = [e.kind for e in s.exec(select(AuditEntry).offset(n0)).all()]
    assert "request.refused" in kinds
    assert offer_iri(world.asset)  # the world is set up
