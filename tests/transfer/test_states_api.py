"""Transfer process states through the DSP endpoints: REQUESTED → STARTED → COMPLETED / SUSPENDED /
TERMINATED, with tokens that die on every exit from STARTED and invalid transitions refused."""

from __future__ import annotations

import pytest

from twinspace.client.broker import BrokerError


def _code(call) -> tuple[int, str]:
    with pytest.raises(BrokerError) as err:
        call()
    return err.value.status, err.value.code


def test_completion_ends_the_transfer_and_its_token(world):
    c = world.consumer.client
    tp = c.transfer_request(world.agreement()["id"])
    assert tp["state"] == "STARTED"
    assert len(c.transfer_pull(tp, "json")) > 2
    done = c.transfer_message(tp["providerPid"], "completion")
    assert done["state"] == "COMPLETED" and c.transfer_get(tp["providerPid"])["state"] == "COMPLETED"
    assert _code(lambda: c.transfer_pull(tp, "csv")) == (409, "transfer_not_started")
    assert _code(lambda: c.transfer_token(tp["providerPid"]))[0] == 409
    # COMPLETED is terminal: no resume, no suspension, no second completion
    for kind in ("start", "suspension", "completion"):
        assert _code(lambda: c.transfer_message(tp["providerPid"], kind)) == (409, "invalid_transition"), kind


def test_provider_terminates_and_suspension_is_resumable_by_either_party(world):
    c, p = world.consumer.client, world.provider.client
    agreement = world.agreement()
    tp = c.transfer_request(agreement["id"])
    pid = tp["providerPid"]
    assert p.transfer_message(pid, "suspension", code="maintenance")["state"] == "SUSPENDED"
    assert _code(lambda: c.transfer_pull(tp, "csv")) == (409, "transfer_not_started")
    assert _code(lambda: c.transfer_message(pid, "completion")) == (409, "invalid_transition")
    p.transfer_message(pid, "start")
    assert c.transfer_get(pid)["state"] == "STARTED"
    assert len(c.transfer_pull(c.transfer_token(pid), "json")) > 2
    assert p.transfer_message(pid, "termination", code="contract ended")["state"] == "TERMINATED"
    assert _code(lambda: c.transfer_token(pid))[0] == 409
    for kind in ("start", "suspension", "completion", "termination"):
        assert _code(lambda: p.transfer_message(pid, kind)) == (409, "invalid_transition"), kind
    # another participant cannot move someone else's transfer
    tp2 = c.transfer_request(agreement["id"])
    thief = world.consumer2.client
    response = thief.http.post(f"/dsp/transfers/{tp2['providerPid']}/termination", headers=thief.headers(),
                               json=thief._dsp("TransferTerminationMessage", providerPid=tp2["providerPid"],
                                               consumerPid=tp2["consumerPid"]))
    assert response.status_code == 404 and response.json()["code"] == "transfer_not_found"
    assert c.transfer_get(tp2["providerPid"])["state"] == "STARTED"
