"""Consumer-role routes (thin): the management API a consumer uses to negotiate with another DSP
provider through this broker, and the DSP callback endpoints that provider posts to
(``/dsp/callback/<secret>/negotiations/<consumerPid>/...``; the secret in the path is the capability)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, public_route, require_roles
from broker.contracts import remote
from broker.contracts.dsp import DspRoute, ld, message_body
from broker.schemas import StrictModel
from twinspace.dsp.messages import negotiation_message, parse

router = APIRouter(tags=["contracts"])
callbacks = APIRouter(tags=["dsp"], route_class=DspRoute)
body = Depends(message_body)


class RemoteTokenIn(StrictModel):
    token: str | None = Field(None, max_length=4000, description="Your access token at the provider (not stored)")


class RemoteNegotiationIn(RemoteTokenIn):
    provider: str = Field(min_length=8, max_length=500, description="The provider's DSP base URL")
    offer: dict[str, Any] = Field(description="The ODRL offer as the provider's catalog lists it")
    purpose: str | None = Field(None, max_length=100)
    scenario: str | None = Field(None, max_length=100)


class RemoteVerifyIn(RemoteTokenIn):
    kid: str | None = Field(None, max_length=64)
    signature: str | None = Field(None, min_length=16, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")


class RemoteTerminateIn(RemoteTokenIn):
    reason: str | None = Field(None, max_length=500)


@router.post("/contracts/remote/negotiations", status_code=201)
def start(body_in: RemoteNegotiationIn, request: Request, principal: Principal = require_roles("consumer"),
          session: Session = db_session) -> dict[str, Any]:
    runtime = get_runtime(request)
    return remote.view(remote.start(session, runtime.settings, runtime.broker_key, principal,
                                    provider_url=body_in.provider, offer=body_in.offer, token=body_in.token,
                                    purpose=body_in.purpose, scenario=body_in.scenario))


@router.get("/contracts/remote/negotiations/{negotiation_id}")
def get(negotiation_id: str, principal: Principal = require_roles(*ALL_ROLES),
        session: Session = db_session) -> dict[str, Any]:
    return remote.view(remote.get(session, negotiation_id, principal))


@router.post("/contracts/remote/accept")
def accept(negotiation_id: str, body_in: RemoteTokenIn, principal: Principal = require_roles("consumer"),
           session: Session = db_session) -> dict[str, Any]:
    return remote.view(remote.accept(session, principal, negotiation_id, body_in.token))


@router.post("/contracts/remote/verify")
def verify(negotiation_id: str, body_in: RemoteVerifyIn, principal: Principal = require_roles("consumer"),
           session: Session = db_session) -> dict[str, Any]:
    signature = {"kid": body_in.kid, "signature": body_in.signature} if body_in.signature else None
    return remote.view(remote.verify(session, principal, negotiation_id, body_in.token, signature=signature))


@router.post("/contracts/remote/terminate")
def terminate(negotiation_id: str, body_in: RemoteTerminateIn, principal: Principal = require_roles("consumer"),
              session: Session = db_session) -> dict[str, Any]:
    return remote.view(remote.terminate(session, principal, negotiation_id, body_in.token, body_in.reason))


# --------------------------------------------------------------------------- DSP callbacks from the provider
def _ack(rn) -> JSONResponse:
    return ld(negotiation_message(consumer_pid=rn.id, provider_pid=rn.provider_pid or "", state=rn.state))


@callbacks.post("/dsp/callback/{secret}/negotiations/{consumer_pid}/offers", dependencies=[public_route])
def on_offer(secret: str, consumer_pid: str, raw: Any = body, session: Session = db_session) -> JSONResponse:
    msg = parse(raw, "ContractOfferMessage")
    rn = remote.by_callback(session, secret, consumer_pid, msg.providerPid)
    return _ack(remote.on_offer(session, rn, msg))


@callbacks.post("/dsp/callback/{secret}/negotiations/{consumer_pid}/agreement", dependencies=[public_route])
def on_agreement(secret: str, consumer_pid: str, raw: Any = body, session: Session = db_session) -> JSONResponse:
    msg = parse(raw, "ContractAgreementMessage")
    rn = remote.by_callback(session, secret, consumer_pid, msg.providerPid)
    return _ack(remote.on_agreement(session, rn, msg))


@callbacks.post("/dsp/callback/{secret}/negotiations/{consumer_pid}/events", dependencies=[public_route])
def on_event(secret: str, consumer_pid: str, raw: Any = body, session: Session = db_session) -> JSONResponse:
    msg = parse(raw, "ContractNegotiationEventMessage")
    rn = remote.by_callback(session, secret, consumer_pid, msg.providerPid)
    return _ack(remote.on_event(session, rn, msg))


@callbacks.post("/dsp/callback/{secret}/negotiations/{consumer_pid}/termination", dependencies=[public_route])
def on_termination(secret: str, consumer_pid: str, raw: Any = body, session: Session = db_session) -> JSONResponse:
    msg = parse(raw, "ContractNegotiationTerminationMessage")
    rn = remote.by_callback(session, secret, consumer_pid, msg.providerPid)
    return _ack(remote.on_termination(session, rn, msg))


router.include_router(callbacks)
