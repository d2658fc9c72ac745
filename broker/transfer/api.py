"""Transfer routes (thin): DSP transfer process endpoints (DSP error objects on failure), the list of
transfers, a token refresh (the consumer's DataAddress), and the control plane of the connectors' data
plane: decisions, receipts, acknowledgements. The broker serves no rows."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, require_roles
from twinspace.dsp.states import TransferState as TS
from broker.contracts.dsp import DspRoute, ld, message_body
from broker.schemas import StrictModel
from broker.transfer import process, remote_api, service
from twinspace.dsp.messages import parse
from twinspace.errors import BadRequest

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
def dsp_transfer_start(pid: str, request: Request, background: BackgroundTasks, raw: Any = body,
                       principal: Principal = require_roles("consumer", "provider"),
                       session: Session = db_session) -> JSONResponse:
    """TransferStartMessage: the provider starts a REQUESTED transfer; either party resumes a SUSPENDED one.
    A PUSH transfer is handed to the provider's connector once the start has committed."""
    runtime = get_runtime(request)
    msg = parse(raw, "TransferStartMessage")
    answer = service.start_message_from(session, runtime.settings, runtime.broker_key, principal, pid, msg)
    if process.is_push(session, pid):
        background.add_task(process.push_after_commit, runtime.engine, runtime.settings, runtime.broker_key, pid,
                            principal.org_id)
    return ld(answer)


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


class DecisionIn(StrictModel):
    transfer_id: str = Field(min_length=1, max_length=64)
    token_jti: str = Field(min_length=8, max_length=128)
    nonce: str = Field(min_length=16, max_length=256)
    format: str = Field("csv", min_length=1, max_length=16)
    # The transfer token's ``gen``: a token issued before the transfer's last suspension (or other state
    # change) is denied even when unused.
    token_generation: int = Field(ge=0)
    # The SHA-256 of the agreement document the connector already verified: no bundle is sent again.
    agreement_sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$")


class ReceiptIn(StrictModel):
    """One receipt (``receipt``) or a batch (``receipts``), not both."""

    receipt: str | None = Field(None, min_length=1, max_length=65_536)
    receipts: list[Annotated[str, Field(min_length=1, max_length=65_536)]] | None = Field(
        None, min_length=1, max_length=service.MAX_RECEIPT_BATCH)


class AckIn(StrictModel):
    ack: str = Field(min_length=1, max_length=16_384)


@router.post("/dataplane/decisions")
def dataplane_decision(body: DecisionIn, request: Request, principal: Principal = require_roles("provider"),
                       session: Session = db_session) -> dict[str, Any]:
    """The provider's connector asks for a fresh signed decision before it serves a pull."""
    runtime = get_runtime(request)
    return service.decide_pull(session, runtime.settings, runtime.broker_key, principal,
                               transfer_id=body.transfer_id, token_jti=body.token_jti, nonce=body.nonce,
                               fmt=body.format, token_generation=body.token_generation,
                               held_sha256=body.agreement_sha256)


@router.post("/dataplane/receipts")
def dataplane_receipt(body: ReceiptIn, request: Request, principal: Principal = require_roles("provider"),
                      session: Session = db_session) -> dict[str, Any]:
    """The connector's signed receipts of what it served (audited; idempotent per receipt_id). A batch
    answers one result per receipt, in order: ``{receipt_id, recorded}`` or ``{error: {status, code}}``."""
    settings = get_runtime(request).settings
    if (body.receipt is None) == (body.receipts is None):
        raise BadRequest("Send either receipt or receipts.", code="invalid_receipt")
    if body.receipts is not None:
        return service.record_receipts(session, settings, principal, body.receipts)
    return service.record_receipt(session, settings, principal, body.receipt)


@router.post("/transfers/{pid}/acknowledgements")
def transfer_acknowledgement(pid: str, body: AckIn, request: Request, principal: Principal = require_roles("consumer"),
                             session: Session = db_session) -> dict[str, Any]:
    """The consumer's countersignature of a receipt (SHA-256 of the bytes it received)."""
    return service.acknowledge(session, get_runtime(request).settings, principal, pid, body.ack)
