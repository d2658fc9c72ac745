"""Done-when: provider publishes, consumer negotiates (DSP), both sign, the broker countersigns, the
consumer downloads exactly the permitted rows/columns from the provider's connector; the provider revokes;
the next download fails (at the broker, and at the connector for a token issued before)."""

from __future__ import annotations

import io
import json
import time

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sqlmodel import Session, select

from broker.audit.models import AuditEntry
from twinspace.agreements import verify_bundle
from twinspace.crypto import public_key_b64
from twinspace.client.broker import BrokerError


def test_negotiate_sign_download_revoke(world, runtime):
    c, p = world.consumer.client, world.provider.client
    neg = c.contract_request(f"urn:twinspace:offer:{world.asset['id']}:v1:research", "research")
    pid = neg["providerPid"]
    assert neg["@type"] == "ContractNegotiation" and neg["state"] == "REQUESTED"
    assert p.contract_offer(pid, max_rows=25, columns=["district", "floor_area", "building_id"])["state"] == "OFFERED"
    assert c.contract_accept(pid)["state"] == "ACCEPTED"
    assert p.contract_agree(pid)["state"] == "AGREED"
    assert c.contract_verify(pid)["state"] == "VERIFIED"
    assert p.contract_finalize(pid)["state"] == "FINALIZED"
    agreement = c.contract_get(pid)["agreement"]
    assert agreement["status"] == "FINALIZED"
    assert [s["role"] for s in agreement["signatures"]] == ["provider", "consumer"]
    doc = agreement["document"]
    assert doc["asset"] == {"id": world.asset["id"], "version": 1, "content_hash": world.asset["content_hash"],
                            "offer_id": "research"}
    assert doc["obligations"] == {"max_rows": 25, "columns": ["building_id", "district", "floor_area"]}
    assert doc["policy"]["id"] == "purpose-restricted" and doc["purpose"] == "research"

    bundle = c.contract_export(agreement["id"])
    report = verify_bundle(bundle, trusted_broker_keys=[public_key_b64(runtime.broker_key.public_key())])
    assert report["valid"], report["errors"]

    tp = c.transfer_request(agreement["id"])
    assert tp["state"] == "STARTED" and tp["@type"] == "TransferProcess"
    rows = pacsv.read_csv(io.BytesIO(c.transfer_pull(tp, "csv")))
    assert rows.num_rows == 25 and rows.column_names == ["building_id", "district", "floor_area"]
    assert rows.column("building_id").to_pylist()[:2] == ["B0000", "B0001"]
    as_json = json.loads(c.transfer_pull(tp, "json"))
    assert len(as_json) == 25 and set(as_json[0]) == {"building_id", "district", "floor_area"}
    pq_table = pq.read_table(io.BytesIO(c.transfer_pull(tp, "parquet", columns=["district"])))
    assert pq_table.num_rows == 25 and pq_table.column_names == ["district"]

    assert c.data_address(tp)[0].startswith(world.provider.connector().endpoint + "/")
    early = c.transfer_token(tp["providerPid"])  # unused until after the revocation

    p.contract_revoke(agreement["id"], reason="end of pilot")
    with pytest.raises(BrokerError) as err:
        c.transfer_pull(tp, "csv")
    assert err.value.status == 410 and err.value.code == "agreement_revoked"
    with pytest.raises(BrokerError) as err:
        c.transfer_pull(early, "csv", fresh_token=False)
    assert (err.value.status, err.value.code) == (403, "access_denied")
    assert c.transfer_get(tp["providerPid"])["state"] == "TERMINATED"
    with pytest.raises(BrokerError) as err:
        c.transfer_request(agreement["id"])
    assert err.value.status == 410 and err.value.code == "agreement_revoked"

    def kinds():
        with Session(runtime.engine) as s:
            return [e.kind for e in s.exec(select(AuditEntry).where(AuditEntry.agreement_id == agreement["id"]))]

    deadline = time.time() + 5
    while kinds().count("transfer.receipt") < 3 and time.time() < deadline:  # receipts follow the bodies
        time.sleep(0.05)
    found = kinds()
    for kind in ("contract.agreed", "contract.signed", "contract.verified", "contract.finalized",
                 "contract.countersigned", "transfer.requested", "transfer.started", "transfer.token_issued",
                 "transfer.decision", "transfer.receipt", "contract.revoked"):
        assert kind in found, kind
    # 3 allowed (one per format; each leased), 2 denied: the client's kept token (then it asked the broker
    # for a new one: 410) and the early one
    assert found.count("transfer.receipt") == 3 and found.count("transfer.decision") == 5
