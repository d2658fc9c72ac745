"""Consumer-role transfer routes (thin): the management API for transfers with another DSP provider,
and the DSP callback endpoints it posts to (``/dsp/callback/<secret>/transfers/<consumerPid>/...``)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, public_route, require_roles
from broker.contracts.dsp import DspRoute, ld, message_body
from broker.schemas import StrictModel
from broker.transfer import remote
from twinspace.dsp.messages import parse
from twinspace.dsp.states import TransferState as TS
from twinspace.dsp.transfer_messages import transfer_process

router = APIRouter(tags=["transfer"])
callbacks = APIRouter(tags=["dsp"], route_class=DspRoute)
body = Depends(message_body)


class RemoteTransferIn(StrictModel):
    negotiation_id: str = Field(min_length=1, max_length=64, description="The finalised remote negotiation")
    token: str | None = Field(None, max_length=4000, description="Your access token at the provider (not stored)")
    format: Literal["HttpData-PULL", "HttpData-PUSH"] = "HttpData-PULL"
    data_address: dict[str, Any] | None = None


class RemoteChangeIn(StrictModel):
    token: str | None = Field(None, max_length=4000)
    code: str | None = Field(None, max_length=100)


@router.post("/transfers/remote", status_code=201)
def request_transfer(body_in: RemoteTransferIn, request: Request, principal: Principal = require_roles("consumer"),
                     session: Session = db_session) -> dict[str, Any]:
    runtime = get_runtime(request)
    rt = remote.request(session, runtime.settings, runtime.broker_key, principal, body_in.negotiation_id,
                        body_in.token, fmt=body_in.format, data_address=body_in.data_address)
    return remote.view(rt)


@router.get("/transfers/remote/{transfer_id}")
def get_transfer(transfer_id: str, principal: Principal = require_roles(*ALL_ROLES),
                 session: Session = db_session) -> dict[str, Any]:
    return remote.view(remote.get(session, transfer_id, principal))


@router.post("/transfers/remote-change/{kind}")
def change(kind: Literal["start", "suspension", "completion", "termination"], transfer_id: str, body_in: RemoteChangeIn,
           principal: Principal = require_roles("consumer"), session: Session = db_session) -> dict[str, Any]:
    target = {"start": TS.STARTED, "suspension": TS.SUSPENDED, "completion": TS.COMPLETED,
              "termination": TS.TERMINATED}[kind]
    return remote.view(remote.change(session, principal, transfer_id, target, body_in.token, body_in.code))


def _ack(rt) -> JSONResponse:
    return ld(transfer_process(provider_pid=rt.provider_pid or "", consumer_pid=rt.id, state=rt.state))


def _callback(kind: str):
    def handler(secret: str, consumer_pid: str, raw: Any = body, session: Session = db_session) -> JSONResponse:
        msg = parse(raw, kind)
        rt = remote.by_callback(session, secret, consumer_pid, msg.providerPid)
        return _ack(remote.on_message(session, rt, msg))

    handler.__name__ = f"on_{kind}"
    handler.__doc__ = f"{kind} from the provider of a remote transfer."
    return handler


for _path, _kind in (("start", "TransferStartMessage"), ("suspension", "TransferSuspensionMessage"),
                     ("completion", "TransferCompletionMessage"), ("termination", "TransferTerminationMessage")):
    callbacks.add_api_route(f"/dsp/callback/{{secret}}/transfers/{{consumer_pid}}/{_path}", _callback(_kind),
                            methods=["POST"], dependencies=[public_route])

router.include_router(callbacks)
