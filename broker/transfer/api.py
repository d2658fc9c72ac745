"""Transfer routes (thin): DSP transfer process endpoints, a token refresh and the data plane."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, require_roles
from twinspace.dsp.states import TransferState as TS
from broker.transfer import dataplane, download, service
from twinspace.dsp.transfer_messages import (TransferCompletionMessage, TransferRequestMessage, TransferStartMessage,
                                      TransferSuspensionMessage, TransferTerminationMessage)

router = APIRouter(tags=["transfer"])
LD = "application/ld+json"


def _ld(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=LD)


@router.post("/dsp/transfers/request", status_code=201)
def dsp_transfer_request(msg: TransferRequestMessage, request: Request, principal: Principal = require_roles("consumer"),
                         session: Session = db_session) -> JSONResponse:
    """TransferRequestMessage → TransferProcess (STARTED) with the provider's TransferStartMessage."""
    runtime = get_runtime(request)
    tp, start = service.request_transfer(session, runtime.settings, runtime.broker_key, principal, msg)
    return _ld({**service.view(tp), "twin:startMessage": start}, 201)


@router.get("/dsp/transfers/{pid}")
def dsp_transfer_get(pid: str, principal: Principal = require_roles(*ALL_ROLES),
                     session: Session = db_session) -> JSONResponse:
    return _ld(service.view(service.get_transfer(session, pid, principal)))


@router.post("/dsp/transfers/{pid}/start")
def dsp_transfer_start(pid: str, msg: TransferStartMessage, request: Request,
                       principal: Principal = require_roles("consumer", "provider"),
                       session: Session = db_session) -> JSONResponse:
    runtime = get_runtime(request)
    return _ld(service.resume(session, runtime.settings, runtime.broker_key, principal, pid, msg))


@router.post("/dsp/transfers/{pid}/suspension")
def dsp_transfer_suspend(pid: str, msg: TransferSuspensionMessage, principal: Principal = require_roles("consumer", "provider"),
                         session: Session = db_session) -> JSONResponse:
    return _ld(service.view(service.change_state(session, principal, pid, TS.SUSPENDED, msg)))


@router.post("/dsp/transfers/{pid}/completion")
def dsp_transfer_complete(pid: str, msg: TransferCompletionMessage, principal: Principal = require_roles("consumer", "provider"),
                          session: Session = db_session) -> JSONResponse:
    return _ld(service.view(service.change_state(session, principal, pid, TS.COMPLETED, msg)))


@router.post("/dsp/transfers/{pid}/termination")
def dsp_transfer_terminate(pid: str, msg: TransferTerminationMessage,
                           principal: Principal = require_roles("consumer", "provider", "operator"),
                           session: Session = db_session) -> JSONResponse:
    return _ld(service.view(service.change_state(session, principal, pid, TS.TERMINATED, msg)))


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
