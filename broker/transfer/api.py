"""Transfer routes (thin): DSP transfer process endpoints (DSP error objects on failure), the list of
transfers, a token refresh (the consumer's DataAddress) and the broker-hosted data plane."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, require_roles
from twinspace.dsp.states import TransferState as TS
from broker.contracts.dsp import DspRoute, ld, message_body
from broker.transfer import dataplane, download, process, remote_api, service
from twinspace.dsp.messages import parse

router = APIRouter(tags=["transfer"])
dsp_router = APIRouter(tags=["dsp"], route_class=DspRoute)
body = Depends(message_body)
LD = "application/ld+json"


def _ld(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=LD)


# --------------------------------------------------------------------------- DSP transfer process protocol
@dsp_router.post("/dsp/transfers/request", status_code=201)
def dsp_transfer_request(request: Request, background: BackgroundTasks, raw: Any = body,
                         principal: Principal = require_roles("consumer"),
                         session: Session = db_session) -> JSONResponse:
    """TransferRequestMessage → 201 TransferProcess (REQUESTED). The provider starts it afterwards
    (TransferStartMessage to the callbackAddress; broker-hosted consumers read it here)."""
    runtime = get_runtime(request)
    msg = parse(raw, "TransferRequestMessage")
    tp = service.create(session, runtime.settings, principal, msg)
    if runtime.settings.dsp_transfer_autostart:
        background.add_task(process.autostart, runtime.engine, runtime.settings, runtime.broker_key, tp.id, principal)
    return ld(service.dsp_view(tp), 201)


@dsp_router.get("/dsp/transfers/{pid}")
def dsp_transfer_get(pid: str, principal: Principal = require_roles(*ALL_ROLES),
                     session: Session = db_session) -> JSONResponse:
    return ld(service.dsp_view(service.get_transfer(session, pid, principal)))


@dsp_router.post("/dsp/transfers/{pid}/start")
def dsp_transfer_start(pid: str, request: Request, raw: Any = body,
                       principal: Principal = require_roles("consumer", "provider"),
                       session: Session = db_session) -> JSONResponse:
    """TransferStartMessage: the provider starts a REQUESTED transfer; either party resumes a SUSPENDED one."""
    runtime = get_runtime(request)
    msg = parse(raw, "TransferStartMessage")
    return ld(service.start_message_from(session, runtime.settings, runtime.broker_key, principal, pid, msg))


@dsp_router.post("/dsp/transfers/{pid}/suspension")
def dsp_transfer_suspend(pid: str, raw: Any = body, principal: Principal = require_roles("consumer", "provider"),
                         session: Session = db_session) -> JSONResponse:
    msg = parse(raw, "TransferSuspensionMessage")
    return ld(service.dsp_view(service.change_state(session, principal, pid, TS.SUSPENDED, msg)))


@dsp_router.post("/dsp/transfers/{pid}/completion")
def dsp_transfer_complete(pid: str, raw: Any = body, principal: Principal = require_roles("consumer", "provider"),
                          session: Session = db_session) -> JSONResponse:
    msg = parse(raw, "TransferCompletionMessage")
    return ld(service.dsp_view(service.change_state(session, principal, pid, TS.COMPLETED, msg)))


@dsp_router.post("/dsp/transfers/{pid}/termination")
def dsp_transfer_terminate(pid: str, raw: Any = body,
                           principal: Principal = require_roles("consumer", "provider", "operator"),
                           session: Session = db_session) -> JSONResponse:
    msg = parse(raw, "TransferTerminationMessage")
    return ld(service.dsp_view(service.change_state(session, principal, pid, TS.TERMINATED, msg)))


router.include_router(dsp_router)
router.include_router(remote_api.router)


@router.get("/transfers")
def list_transfers(limit: int = Query(100, ge=1, le=1000), principal: Principal = require_roles(*ALL_ROLES),
                   session: Session = db_session) -> dict[str, Any]:
    return {"items": [service.view(tp) for tp in service.list_transfers(session, principal, limit)]}


@router.post("/transfers/{pid}/token")
def transfer_token(pid: str, request: Request, principal: Principal = require_roles("consumer"),
                   session: Session = db_session) -> JSONResponse:
    """A fresh transfer token (TransferStartMessage shape) for a STARTED transfer."""
    runtime = get_runtime(request)
    return _ld(service.new_token(session, runtime.settings, runtime.broker_key, principal, pid))


def _served(engine, pull: service.Pull, chunks):
    """Stream and, once done, audit the bytes served and their SHA-256 (outside the request transaction)."""
    from broker.audit import log_event

    digest, size, complete = hashlib.sha256(), 0, False
    try:
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            yield chunk
        complete = True
    finally:
        log_event(engine, "transfer.served", actor=pull.consumer_id, outcome="ok" if complete else "error",
                  asset_id=pull.asset_id, agreement_id=pull.agreement_id,
                  details={"transfer_id": pull.transfer_id, "format": pull.fmt, "rows": pull.table.num_rows,
                           "bytes": size, "sha256": digest.hexdigest(), "complete": complete,
                           "asset_content_hash": pull.content_hash})


@router.get("/dataplane/transfers/{pid}")
async def dataplane_pull(pid: str, request: Request, format: str = Query("csv", max_length=16),
                         columns: str | None = Query(None, max_length=20_000,
                                                     description="Comma-separated subset of the permitted columns"),
                         transfer_token: str | None = Header(None, alias="TwinSpace-Transfer-Token"),
                         pop: str | None = Header(None, alias="TwinSpace-PoP"),
                         principal: Principal = require_roles("consumer"),
                         session: Session = db_session):
    """Pull the de-identified data under a STARTED transfer (CSV, JSON or Parquet, streamed)."""
    runtime = get_runtime(request)
    wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    pull = await run_in_threadpool(service.pull, session, runtime, principal, pid, token=transfer_token, proof=pop,
                                   method=request.method, path=request.url.path, fmt=format, columns=wanted)
    # Usage counters and the transfer.pull entry are durable before the first byte leaves, and the
    # transaction is not held open (its locks released) while the body streams.
    await run_in_threadpool(session.commit)
    headers = {"X-TwinSpace-Agreement": pull.agreement_id, "X-TwinSpace-Rows": str(pull.table.num_rows),
               "X-TwinSpace-Asset-Version": str(pull.asset_version), "X-TwinSpace-Content-Hash": pull.content_hash,
               "Cache-Control": "no-store"}
    return StreamingResponse(_served(runtime.engine, pull, dataplane.encode(pull.table, format)),
                             media_type=dataplane.MEDIA_TYPES[format], headers=headers)


@router.get("/contracts/agreements/{agreement_id}/data")
def agreement_data(agreement_id: str, request: Request, format: str = Query("csv", pattern="^(csv|json)$"),
                   principal: Principal = require_roles("consumer"),
                   session: Session = db_session) -> StreamingResponse:
    """The management API's download under an agreement (the DSP transfer process is the other way)."""
    media_type, chunks, summary = download.pull_data(session, get_runtime(request).settings, principal,
                                                     agreement_id, format)
    return StreamingResponse(iter(chunks), media_type=media_type,
                             headers={"X-Content-SHA256": summary["sha256"], "X-Row-Count": str(summary["rows"]),
                                      "Cache-Control": "no-store"})
