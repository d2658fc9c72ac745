"""Demo step (the last one): the auditor verifies the whole audit log without trusting the broker."""

from __future__ import annotations

import base64

import time

from rich.table import Table

from broker.audit.anchor import get_anchorer
from twinspace.audit.chain import read_anchor_events
from twinspace.audit.bundle import write_bundle
from twinspace.audit.verify import verify_log


def step_audit_verify(ctx) -> None:
    """Audit: sign a checkpoint, anchor it on the in-process chain, export and verify the whole log."""
    auditor = ctx.participants.get("auditor")
    if auditor is None:
        auditor = ctx.add_participant("auditor", name="City Audit Office", role="auditor", org_type="audit_office")
    headers = auditor.client.headers()
    http = ctx.http

    checkpoint = http.post("/audit/checkpoints", headers=headers)
    checkpoint.raise_for_status()
    anchorer = get_anchorer(ctx.runtime)
    if not anchorer.enabled:  # the demo anchors on the embedded py-evm chain (settings: audit_anchoring=embedded)
        anchorer.mode = "embedded"
    t0 = time.perf_counter()
    anchored = http.post("/audit/anchors", headers=headers)
    anchor_ms = (time.perf_counter() - t0) * 1000
    anchored.raise_for_status()

    # What the auditor fetches: the key (also known out of band), the export, the checkpoints and,
    # from their own view of the chain, the Anchored events.
    vkey = http.get("/audit/key", headers=headers).json()["vkey"]
    export = http.get("/audit/export", headers=headers)
    export.raise_for_status()
    http.post("/audit/checkpoints", headers=headers).raise_for_status()  # covers the export event too
    notes = [c["note"] for c in http.get("/audit/checkpoints", headers=headers,
                                         params={"limit": 1000}).json()["checkpoints"]]
    chain = anchorer.chain()
    anchors = read_anchor_events(chain.w3, chain.address)
    report = verify_log(export.content.splitlines(), notes, vkey, anchors=anchors)
    if not report.ok:
        raise RuntimeError(f"audit verification failed: {report.first_bad.message}")

    bundle = write_bundle(ctx.state.get("audit_bundle_dir", ctx.settings.data_dir / "audit-bundle"), export.content,
                          notes, vkey, anchors, chain={"chain_id": chain.chain_id, "contract": chain.address})

    from twinspace.audit.receipts import check_receipts

    receipts = check_receipts(export.content.splitlines())
    if not receipts.ok:
        raise RuntimeError(f"data-plane receipts do not check: {receipts.problems[:3]}")
    a = report.latest_anchor
    table = Table(show_header=False, title="Audit log verified by the auditor (no trust in the broker)")
    table.add_row("entries verified", str(report.entries))
    table.add_row("tree root", base64.b64encode(report.root_hash).decode())
    table.add_row("signed checkpoints", f"{report.checkpoints_verified} (newest: size {report.latest_checkpoint}), "
                                        f"{report.consistency_checked} consistency proofs")
    table.add_row("anchor", f"size {a.tree_size} in block {a.block_number} of chain {chain.chain_id}, contract "
                            f"{chain.address} ({anchor_ms:.0f} ms)" if a else "none")
    table.add_row("connector receipts", f"{receipts.receipts} signed by the providers' keys, each matched to the "
                                        f"broker's decision; {receipts.acknowledged} countersigned by the consumer")
    table.add_row("log key", vkey)
    table.add_row("audit bundle", f"{bundle} — verify it offline with the light install: "
                                  f"twinspace audit verify --bundle {bundle}")
    ctx.console.print(table)
    for w in report.warnings:
        ctx.console.print(f"[dim]note: {w}[/]")
    ctx.state["audit"] = {"entries": report.entries, "root": base64.b64encode(report.root_hash).decode(),
                          "anchored_size": a.tree_size if a else None}
