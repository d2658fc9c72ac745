"""Demo steps for contracts: a DSP negotiation signed by both parties and countersigned by the broker,
then a pull from the provider's connector under the agreement (with its signed receipt in the audit
log), and revocation taking effect on the next access — at the broker and at the connector."""

from __future__ import annotations

import io
import json

from rich.table import Table


def step_contract_negotiate(ctx) -> None:
    """Contract negotiation (DSP): request → offer → accept → agree (provider signs) → verify (consumer
    signs) → finalise (broker countersigns); the exported agreement verifies offline."""
    from twinspace.agreements import verify_bundle
    from twinspace.crypto import public_key_b64

    consumer, provider = ctx.client("consumer"), ctx.client("provider2")
    asset = consumer.catalog_get(ctx.state["catalog_assets"]["buildings"])
    offer = f"urn:twinspace:offer:{asset['id']}:v{asset['version']}:{asset['offers'][0]['id']}"
    hidden = {"owner_national_id"}
    columns = [c["name"] for c in asset["columns"] if c["name"] not in hidden][:5]
    table = Table("message", "sent by", "state", title="Contract negotiation (Dataspace Protocol)")
    neg = consumer.contract_request(offer, "research", scenario="parking_guidance")
    pid = neg["providerPid"]
    table.add_row("ContractRequestMessage (purpose research)", "consumer", neg["state"])
    steps = [("ContractOfferMessage (≤100 rows, 5 columns)", "provider",
              lambda: provider.contract_offer(pid, max_rows=100, columns=columns)),
             ("ContractNegotiationEventMessage ACCEPTED", "consumer", lambda: consumer.contract_accept(pid)),
             ("ContractAgreementMessage + provider Ed25519 signature", "provider", lambda: provider.contract_agree(pid)),
             ("ContractAgreementVerificationMessage + consumer signature", "consumer",
              lambda: consumer.contract_verify(pid)),
             ("ContractNegotiationEventMessage FINALIZED → broker countersigns", "provider",
              lambda: provider.contract_finalize(pid))]
    for label, sender, send in steps:
        table.add_row(label, sender, send()["state"])
    ctx.console.print(table)
    agreement = consumer.contract_get(pid)["agreement"]
    bundle = consumer.contract_export(agreement["id"])
    path = ctx.work_dir("consumer") / f"{agreement['id']}.json"  # the consumer's copy
    path.write_text(json.dumps(bundle, indent=2, ensure_ascii=False), encoding="utf-8")
    report = verify_bundle(bundle, trusted_broker_keys=[public_key_b64(ctx.runtime.broker_key.public_key())])
    if not report["valid"]:
        raise RuntimeError(f"the exported agreement does not verify: {report['errors']}")
    ctx.state["agreement"] = agreement
    ctx.console.print(f"Agreement {agreement['id']} on {asset['title']} v{agreement['asset_version']} "
                      f"(sha256 {agreement['document_sha256'][:12]}…), valid until {agreement['not_after']}, "
                      f"obligations {agreement['obligations']}")
    ctx.console.print(f"Exported to {path}; offline check: [bold green]VALID[/] "
                      f"(`twinspace contract verify {path.name} --broker-key …`)")


def step_contract_download(ctx) -> None:
    """Data access under the agreement: the consumer pulls from the provider's connector with a key-bound
    transfer token and a fresh proof per request (CSV three times, Parquet once); the connector takes one
    leased decision per format from the broker, verifies the agreement offline and signs a receipt per
    pull that the broker audits; then the provider revokes, the broker pushes the revocation to the
    connector, and pulls are refused."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from twinspace.client.broker import BrokerError

    consumer, provider = ctx.client("consumer"), ctx.client("provider2")
    agreement = ctx.state["agreement"]
    tp = consumer.transfer_request(agreement["id"])
    endpoint, _ = consumer.data_address(tp)
    rows = pacsv.read_csv(io.BytesIO(consumer.transfer_pull(tp, "csv", acknowledge=True)))
    for _ in range(2):  # the same token again, each time with a fresh proof: the lease serves these too
        consumer.transfer_pull(tp, "csv", acknowledge=True)
    parquet = pq.read_table(io.BytesIO(consumer.transfer_pull(tp, "parquet", acknowledge=True)))
    table = Table("pull", "rows", "columns", title=f"Transfer {tp['providerPid']} ({tp['state']}) from {endpoint}")
    table.add_row("CSV", str(rows.num_rows), ", ".join(rows.column_names))
    table.add_row("Parquet", str(parquet.num_rows), ", ".join(parquet.column_names))
    ctx.console.print(table)
    receipts = ctx.client("auditor").get("/audit/entries", params={"kind": "transfer.receipt",
                                                                   "agreement_id": agreement["id"]})["entries"]
    acks = ctx.client("auditor").get("/audit/entries", params={"kind": "transfer.acknowledged",
                                                               "agreement_id": agreement["id"]})["entries"]
    matched = sum(1 for a in acks if a["entry"]["details"].get("matches"))
    decisions = ctx.client("auditor").get("/audit/entries", params={"kind": "transfer.decision",
                                                                    "agreement_id": agreement["id"]})["entries"]
    leased = [d for d in decisions if d["entry"]["details"].get("lease_seconds")]
    ctx.console.print(f"The connector signed {len(receipts)} receipts (rows, bytes, SHA-256 of what it served); "
                      f"the broker checked them and appended them to the audit log; the consumer countersigned "
                      f"{matched} of them with the SHA-256 of what it received. The broker decided "
                      f"{len(decisions)} times for these {len(receipts)} pulls: {len(leased)} leased decision(s), "
                      f"one per format, each reusable for {leased[0]['entry']['details']['lease_seconds'] if leased else 0} s "
                      f"unless revoked.")
    if len(receipts) != 4 or matched != 4:
        raise RuntimeError(f"expected 4 receipts, all acknowledged; got {len(receipts)}, {matched}")
    stale = consumer.transfer_token(tp["providerPid"])  # issued while the agreement is still active
    provider.contract_revoke(agreement["id"], reason="demo: end of pilot")
    try:
        consumer.transfer_pull(tp, "csv")
    except BrokerError as exc:
        ctx.console.print(f"After revocation the next pull is refused: [red]{exc.status} {exc.code}[/]")
    else:
        raise RuntimeError("a revoked agreement still served data")
    try:
        consumer.transfer_pull(stale, "csv", fresh_token=False)
    except BrokerError as exc:
        ctx.console.print(f"The connector refuses a token issued before the revocation: [red]{exc.status} "
                          f"{exc.code}[/] (the broker pushed the revocation to it before answering the revoke: it "
                          f"dropped its leases and asked afresh)")
    else:
        raise RuntimeError("the connector served a revoked agreement")
