"""The DSP state machines: the transition tables, and the API refusing out-of-order messages."""

from __future__ import annotations

import pytest

from twinspace.dsp.messages import CONTEXT
from twinspace.dsp.states import (NEGOTIATION_TRANSITIONS, TRANSFER_TRANSITIONS, NegotiationState,
                                     TransferState, check_negotiation, check_transfer)
from twinspace.errors import Conflict
from twinspace.client.broker import BrokerError
from tests.contracts.helpers import offer_iri

N = NegotiationState
HAPPY = [None, N.REQUESTED, N.OFFERED, N.ACCEPTED, N.AGREED, N.VERIFIED, N.FINALIZED]


def test_negotiation_table_happy_path_and_termination():
    for cur, nxt in zip(HAPPY, HAPPY[1:]):
        assert check_negotiation(cur.value if cur else None, nxt.value) is nxt
    for state in N:
        allowed = NEGOTIATION_TRANSITIONS[state]
        if state in (N.FINALIZED, N.TERMINATED):
            assert allowed == frozenset()
        else:
            assert N.TERMINATED in allowed
    assert check_negotiation("OFFERED", "REQUESTED") is N.REQUESTED  # counter-request
    assert check_negotiation("REQUESTED", "AGREED") is N.AGREED  # provider agrees to the request directly


@pytest.mark.parametrize("cur,target", [(None, "OFFERED"), ("REQUESTED", "ACCEPTED"), ("REQUESTED", "VERIFIED"),
                                        ("OFFERED", "AGREED"), ("ACCEPTED", "FINALIZED"), ("AGREED", "FINALIZED"),
                                        ("FINALIZED", "TERMINATED"), ("TERMINATED", "REQUESTED"),
                                        ("VERIFIED", "AGREED")])
def test_invalid_negotiation_transitions(cur, target):
    with pytest.raises(Conflict) as err:
        check_negotiation(cur, target)
    assert err.value.code == "invalid_transition"


def test_transfer_table():
    T = TransferState
    assert check_transfer(None, "REQUESTED") is T.REQUESTED
    assert check_transfer("REQUESTED", "STARTED") is T.STARTED
    assert check_transfer("STARTED", "SUSPENDED") is T.SUSPENDED
    assert check_transfer("SUSPENDED", "STARTED") is T.STARTED
    assert check_transfer("STARTED", "COMPLETED") is T.COMPLETED
    for terminal in (T.COMPLETED, T.TERMINATED):
        assert TRANSFER_TRANSITIONS[terminal] == frozenset()
    for cur, target in (("REQUESTED", "COMPLETED"), ("COMPLETED", "STARTED"), ("SUSPENDED", "COMPLETED"),
                        ("TERMINATED", "STARTED")):
        with pytest.raises(Conflict):
            check_transfer(cur, target)


def test_api_refuses_out_of_order_and_wrong_party_messages(world):
    c, p = world.consumer.client, world.provider.client
    neg = c.contract_request(offer_iri(world.asset), "research")
    pid = neg["providerPid"]
    with pytest.raises(BrokerError) as err:
        c.contract_accept(pid)  # nothing offered yet
    assert (err.value.status, err.value.code) == (409, "invalid_transition")
    with pytest.raises(BrokerError) as err:
        p.contract_finalize(pid)
    assert err.value.code == "invalid_transition"
    with pytest.raises(BrokerError) as err:
        c.contract_event(pid, "FINALIZED")  # only the provider finalises
    assert (err.value.status, err.value.code) == (403, "wrong_party")
    with pytest.raises(BrokerError) as err:  # consumers do not send offers
        c.post(f"/dsp/negotiations/{pid}/offers", json={"@context": CONTEXT, "@type": "ContractOfferMessage",
                                                         "providerPid": pid, "consumerPid": neg["consumerPid"],
                                                         "offer": c._catalog_offer(offer_iri(world.asset))})
    assert (err.value.status, err.value.code) == (403, "wrong_role")
    # another provider is not a party
    with pytest.raises(BrokerError) as err:
        world.provider2.client.contract_offer(pid)
    assert err.value.status == 404
    # the offer, a counter-request back to REQUESTED, then termination ends everything
    p.contract_offer(pid, max_rows=5)
    again = c.post(f"/dsp/negotiations/{pid}/request", json={
        "@context": CONTEXT, "@type": "ContractRequestMessage", "consumerPid": neg["consumerPid"],
        "providerPid": pid, "offer": c._catalog_offer(offer_iri(world.asset)), "twin:purpose": "traffic_planning"})
    assert again["state"] == "REQUESTED" and again["twin:negotiation"]["purpose"] == "traffic_planning"
    assert c.contract_terminate(pid, code="changed_mind")["state"] == "TERMINATED"
    with pytest.raises(BrokerError) as err:
        p.contract_offer(pid)
    assert err.value.code == "invalid_transition"


def test_dsp_messages_are_validated(world):
    """Bodies are read as JSON-LD, then the DSP schema, then the model: each failure is a DSP error
    object (ContractNegotiationError) with a 4xx status."""
    c = world.consumer.client
    good = {"@context": CONTEXT, "@type": "ContractRequestMessage", "consumerPid": "urn:uuid:1",
            "offer": c._catalog_offer(offer_iri(world.asset)), "callbackAddress": "urn:twinspace:broker-hosted",
            "twin:purpose": "research"}
    for bad, code in (({**good, "@context": ["https://example.org/other"]}, "invalid_json_ld"),
                      ({**good, "@type": "ContractOfferMessage"}, "wrong_message_type"),
                      ({k: v for k, v in good.items() if k != "callbackAddress"}, "schema_violation"),
                      ({**good, "offer": {"@id": offer_iri(world.asset)}}, "schema_violation"),
                      ({**good, "consumerPid": "has spaces"}, "invalid_message")):
        with pytest.raises(BrokerError) as err:
            c.post("/dsp/negotiations/request", json=bad)
        assert (err.value.status, err.value.code) == (400, code)
        assert err.value.problem["@type"] == "ContractNegotiationError"
    with pytest.raises(BrokerError) as err:
        c.post("/dsp/negotiations/request", json={**good, "offer": {**good["offer"],
                                                                   "@id": "urn:twinspace:offer:ast_nope:v1:x"}})
    assert (err.value.status, err.value.code) == (404, "offer_not_found")
    neg = c.post("/dsp/negotiations/request", json=good)
    assert neg["state"] == "REQUESTED" and neg["@context"] == CONTEXT
    with pytest.raises(BrokerError) as err:
        c.post("/dsp/negotiations/request", json=good)
    assert err.value.code == "consumer_pid_in_use"
    catalog = c.post("/dsp/catalog/request", json={"@context": CONTEXT, "@type": "CatalogRequestMessage"})
    offers = [o["@id"] for ds in catalog["dataset"] for o in ds["hasPolicy"]]
    assert offer_iri(world.asset) in offers
