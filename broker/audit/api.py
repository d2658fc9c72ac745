"""Audit routes. Reading entries is for the auditor role only (separation of duties: the operator
runs the broker but does not browse who did what); checkpoints, proofs, the log key and the
anchoring status are for auditors and operators (they contain hashes, no event content); a
receipt for an entry is available to auditors, operators and the organisation that is the
entry's actor.
"""

from __future__ import annotations

import base64

from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, require_roles
from broker.audit import log_event, service
from broker.audit.anchor import AuditDaemon, ChainUnavailable, effective_mode, get_anchorer
from twinspace.audit.chain import read_anchor_events
from twinspace.errors import Forbidden
from broker.runtime import Runtime


@asynccontextmanager
async def lifespan(app):
    """Sign checkpoints (and anchor them, when enabled) in the background while the app runs."""
    runtime = getattr(app.state, "runtime", None)
    daemon = AuditDaemon(runtime) if runtime is not None else None
    if daemon is not None:
        daemon.start()
    try:
        yield
    finally:
        if daemon is not None:
            daemon.stop()


router = APIRouter(prefix="/audit", tags=["audit"], lifespan=lifespan)

AUDITOR = ("auditor",)
OVERSIGHT = ("auditor", "operator")


def _filter(org: str | None = Query(None, description="Actor org id (or org_id in the details)"),
            kind: str | None = Query(None, description="Event kind; a trailing * matches a prefix, e.g. auth.*"),
            asset_id: str | None = None, agreement_id: str | None = None,
            outcome: str | None = Query(None, description="ok, deny, error, …"),
            since: datetime | None = None, until: datetime | None = None,
            after_seq: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)) -> service.EntryFilter:
    return service.EntryFilter(org=org, kind=kind, asset_id=asset_id, agreement_id=agreement_id, outcome=outcome,
                               since=since, until=until, after_seq=after_seq, limit=limit)


@router.get("/entries")
def list_entries(f: service.EntryFilter = Depends(_filter), session: Session = db_session,
                 _: Principal = require_roles(*AUDITOR)) -> dict[str, Any]:
    entries = service.query_entries(session, f)
    return {"entries": [service.entry_json(e) for e in entries],
            "next_after_seq": entries[-1].seq if len(entries) == f.limit else None}


@router.get("/entries/{seq}")
def get_entry(seq: int, session: Session = db_session,
              _: Principal = require_roles(*AUDITOR)) -> dict[str, Any]:
    return service.entry_json(service.get_entry(session, seq))


@router.get("/export", response_class=StreamingResponse)
def export(f: service.EntryFilter = Depends(_filter), runtime: Runtime = Depends(get_runtime),
           principal: Principal = require_roles(*AUDITOR)) -> StreamingResponse:
    """JSONL: one exact canonical entry per line (the Merkle leaves), in sequence order. ``limit`` is ignored."""
    log_event(runtime.engine, "audit.exported", actor=principal.org_id,
              details={"filter": {k: (v.isoformat() if isinstance(v, datetime) else v)
                                  for k, v in f.__dict__.items() if v and k != "limit"}})
    return StreamingResponse(service.export_lines(runtime.engine, f), media_type="application/jsonl")


@router.get("/entries/{seq}/receipt")
def receipt(seq: int, session: Session = db_session, runtime: Runtime = Depends(get_runtime),
            principal: Principal = require_roles(*ALL_ROLES)) -> dict[str, Any]:
    """Offline receipt: the entry, its inclusion proof and the signed checkpoint it verifies against."""
    entry = service.get_entry(session, seq)
    if principal.role not in OVERSIGHT and entry.actor != principal.org_id:
        raise Forbidden("Receipts are for auditors, operators and the entry's own organisation.",
                        code="not_your_entry")
    return service.make_receipt(runtime, session, seq)


@router.get("/key")
def log_key(runtime: Runtime = Depends(get_runtime), _: Principal = require_roles(*OVERSIGHT)) -> dict[str, Any]:
    """The log's verifier key (C2SP vkey). Auditors should obtain it out of band too and compare."""
    return {"origin": service.log_origin(runtime.settings), "vkey": service.log_vkey(runtime),
            "broker_kid": runtime.broker_kid, "anchoring": effective_mode(runtime.settings)}


@router.get("/checkpoints")
def checkpoints(after: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000),
                session: Session = db_session, _: Principal = require_roles(*OVERSIGHT)) -> dict[str, Any]:
    return {"checkpoints": [service.checkpoint_json(c) for c in service.list_checkpoints(session, after=after,
                                                                                          limit=limit)]}


@router.get("/checkpoints/latest")
def latest(runtime: Runtime = Depends(get_runtime), _: Principal = require_roles(*OVERSIGHT)) -> dict[str, Any]:
    """The newest signed checkpoint (signed now if the log grew since the last one)."""
    return service.checkpoint_json(service.current_checkpoint(runtime))


@router.post("/checkpoints")
def sign_now(runtime: Runtime = Depends(get_runtime), _: Principal = require_roles(*OVERSIGHT)) -> dict[str, Any]:
    return service.checkpoint_json(service.current_checkpoint(runtime))


@router.get("/checkpoints/{tree_size}")
def checkpoint(tree_size: int, session: Session = db_session,
               _: Principal = require_roles(*OVERSIGHT)) -> dict[str, Any]:
    return service.checkpoint_json(service.get_checkpoint(session, tree_size))


@router.get("/proofs/inclusion")
def inclusion(seq: int, tree_size: int | None = None, session: Session = db_session,
              runtime: Runtime = Depends(get_runtime), _: Principal = require_roles(*OVERSIGHT)) -> dict[str, Any]:
    """Inclusion proof of entry ``seq`` (leaf seq-1) in the tree of ``tree_size`` (default: newest checkpoint)."""
    return service.inclusion_proof(runtime, session, seq, tree_size)


@router.get("/proofs/consistency")
def consistency(first: int, second: int | None = None, session: Session = db_session,
                runtime: Runtime = Depends(get_runtime), _: Principal = require_roles(*OVERSIGHT)) -> dict[str, Any]:
    return service.consistency_proof(runtime, session, first, second)


@router.get("/status")
def status(runtime: Runtime = Depends(get_runtime), session: Session = db_session,
           _: Principal = require_roles(*OVERSIGHT)) -> dict[str, Any]:
    """Log size, newest checkpoint and the anchoring status with its lag."""
    cp = service.latest_checkpoint(session)
    return {"log_size": service.log_size(session), "latest_checkpoint": cp.tree_size if cp else 0,
            "anchoring": get_anchorer(runtime).status()}


@router.post("/anchors")
def anchor_now(runtime: Runtime = Depends(get_runtime), _: Principal = require_roles(*OVERSIGHT)) -> dict[str, Any]:
    """Anchor the newest checkpoint now (503 chain_unavailable when the node is down; nothing is lost)."""
    return get_anchorer(runtime).anchor_latest()


@router.get("/anchors")
def anchors(runtime: Runtime = Depends(get_runtime), _: Principal = require_roles(*OVERSIGHT)) -> dict[str, Any]:
    """``Anchored`` events as the chain node reports them."""
    anchorer = get_anchorer(runtime)
    try:
        chain = anchorer.chain()
        events = read_anchor_events(chain.w3, chain.address)
    except ChainUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - a down node is a clear 503, never a crash
        raise ChainUnavailable(f"Cannot read anchors from the chain node ({type(exc).__name__}).") from None
    return {"chain_id": chain.chain_id, "contract": chain.address,
            "anchors": [{"tree_size": a.tree_size, "root_hash": base64.b64encode(a.root_hash).decode(),
                         "block_number": a.block_number,
                         "tx_hash": a.tx_hash} for a in events]}
