"""Agreements, transfers and the data pull (proof of possession signed in the browser)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime
from broker.console.auth import console_roles
from broker.console.views import CONSUMER, _dsp, _redirect, render

router = APIRouter()


# --------------------------------------------------------------------------- agreements, transfers, data
@router.get("/agreements")
def agreements(request: Request, status: str | None = Query(None, max_length=16),
               principal: Principal = console_roles(*ALL_ROLES), session: Session = db_session) -> Response:
    from broker.contracts import service

    items = [service.agreement_view(a) for a in service.list_agreements(session, principal, status=status or None,
                                                                        limit=500)]
    return render(request, "agreements.html", principal, session, items=items, status=status or "",
                  msg=request.query_params.get("msg"))


@router.get("/agreements/{agreement_id}")
def agreement(agreement_id: str, request: Request, principal: Principal = console_roles(*ALL_ROLES),
              session: Session = db_session) -> Response:
    from broker.contracts import service
    from broker.transfer import service as transfers

    a = service.agreement_view(service.get_agreement(session, agreement_id, principal))
    tps = [transfers.view(tp)["twin:transfer"] | {"state": tp.state}
           for tp in transfers.list_transfers(session, principal, limit=1000) if tp.agreement_id == agreement_id]
    usage = None
    try:
        from broker.policy.service import get_usage

        usage = get_usage(session, agreement_id)
    except Exception:  # noqa: BLE001 - usage counters are informative only
        usage = None
    return render(request, "agreement.html", principal, session, a=a, transfers=tps, usage=usage,
                  issuer=get_runtime(request).settings.issuer, msg=request.query_params.get("msg"))


@router.get("/agreements/{agreement_id}/export")
def export_agreement(agreement_id: str, request: Request, principal: Principal = console_roles(*ALL_ROLES),
                     session: Session = db_session) -> JSONResponse:
    from broker.contracts import service

    runtime = get_runtime(request)
    bundle = service.export_bundle(session, runtime.settings, runtime.broker_key, principal, agreement_id)
    return JSONResponse(bundle, headers={"Content-Disposition": f'attachment; filename="{agreement_id}.json"'})


@router.post("/agreements/{agreement_id}/revoke")
def revoke(agreement_id: str, request: Request, reason: str = Form("", max_length=500),
           principal: Principal = console_roles("provider", "operator"),
           session: Session = db_session) -> Response:
    from broker.contracts import service

    service.revoke(session, principal, agreement_id, reason or None)
    return _redirect(request, f"/agreements/{agreement_id}", "Agreement revoked; further access is refused.")


def _address(tp_id: str, start: dict[str, Any]) -> dict[str, Any]:
    """What the browser needs to pull from the provider's connector: the DataAddress endpoint (the
    connector's URL, which the console's CSP admits) and its single-use transfer token."""
    props = {p["name"]: p["value"] for p in start["dataAddress"]["endpointProperties"]}
    return {"transfer_id": tp_id, "token": props["authorization"], "endpoint": start["dataAddress"]["endpoint"],
            "path": start["dataAddress"]["endpoint"]}


@router.post("/agreements/{agreement_id}/transfer")
def start_transfer(agreement_id: str, request: Request, principal: Principal = console_roles(*CONSUMER),
                   session: Session = db_session) -> dict[str, Any]:
    """Start a transfer (DSP TransferRequestMessage); the browser then pulls from the provider's connector
    with a proof of possession it signs itself (the broker serves no rows)."""
    from broker.transfer import service
    from twinspace.dsp.transfer_messages import TransferRequestMessage

    runtime = get_runtime(request)
    msg = TransferRequestMessage.model_validate(_dsp("TransferRequestMessage", consumerPid=f"urn:uuid:{uuid.uuid4()}",
                                                     agreementId=agreement_id, format="HttpData-PULL"))
    tp, start = service.request_transfer(session, runtime.settings, runtime.broker_key, principal, msg)
    return _address(tp.id, start)


@router.post("/transfers/{pid}/token")
def transfer_token(pid: str, request: Request, principal: Principal = console_roles(*CONSUMER),
                   session: Session = db_session) -> dict[str, Any]:
    """A fresh DataAddress for a STARTED transfer (each transfer token is single-use)."""
    from broker.transfer import service

    runtime = get_runtime(request)
    return _address(pid, service.new_token(session, runtime.settings, runtime.broker_key, principal, pid))


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ack: str = Field(min_length=1, max_length=16_384)


@router.post("/transfers/{pid}/acknowledgements")
def acknowledge(pid: str, body: AckIn, request: Request, principal: Principal = console_roles(*CONSUMER),
                session: Session = db_session) -> dict[str, Any]:
    """The consumer's countersignature (signed in the browser) of the connector's receipt."""
    from broker.transfer import service

    return service.acknowledge(session, get_runtime(request).settings, principal, pid, body.ack)
