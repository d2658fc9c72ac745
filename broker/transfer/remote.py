"""Consumer role: a transfer process with another DSP provider under a remote agreement
(``broker.contracts.remote``). No FastAPI imports.

The request row is committed before the TransferRequestMessage leaves: the provider may start the
transfer (and call back with its TransferStartMessage) before it even answers the request."""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import Session, select

from broker.audit import record_event
from broker.contracts import lookups, peer
from broker.contracts import remote as remote_negotiation
from broker.transfer.models import RemoteTransfer
from twinspace.dsp.messages import PLAIN_CONTEXT
from twinspace.dsp.states import TransferState as TS
from twinspace.dsp.states import check_transfer
from twinspace.dsp.transfer_messages import FORMATS, PUSH_FORMAT
from twinspace.errors import BadRequest, NotFound

PATHS = {TS.SUSPENDED: "suspension", TS.COMPLETED: "completion", TS.TERMINATED: "termination"}
KINDS = {TS.SUSPENDED: "TransferSuspensionMessage", TS.COMPLETED: "TransferCompletionMessage",
         TS.TERMINATED: "TransferTerminationMessage", TS.STARTED: "TransferStartMessage"}


def _move(session: Session, rt: RemoteTransfer, target: TS, *, actor: str, details: dict | None = None) -> None:
    previous = rt.state
    check_transfer(previous, target.value)
    rt.state = target.value
    rt.updated_at = lookups.now()
    session.add(rt)
    session.flush()
    record_event(session, f"transfer.remote.{target.value.lower()}", actor=actor,
                 details={"consumer_pid": rt.id, "from": previous, "to": target.value, **(details or {})})


def get(session: Session, transfer_id: str, principal: Any, *, lock: bool = False) -> RemoteTransfer:
    stmt = select(RemoteTransfer).where(RemoteTransfer.id == transfer_id)
    if lock:
        stmt = stmt.with_for_update()
    rt = session.exec(stmt).first()
    if rt is None or (principal.org_id != rt.org_id and principal.role not in lookups.READ_ALL_ROLES):
        raise NotFound(f"No remote transfer {transfer_id}.", code="transfer_not_found")
    return rt


def view(rt: RemoteTransfer) -> dict[str, Any]:
    return {"id": rt.id, "consumerPid": rt.id, "providerPid": rt.provider_pid, "negotiation_id": rt.negotiation_id,
            "agreementId": rt.agreement_id, "format": rt.format, "state": rt.state, "dataAddress": rt.data_address}


def request(session: Session, settings: Any, broker_key: Any, principal: Any, negotiation_id: str,
            token: str | None, *,
            fmt: str = "HttpData-PULL", data_address: dict[str, Any] | None = None) -> RemoteTransfer:
    rn = remote_negotiation.get(session, negotiation_id, principal)
    remote_negotiation.require_owner(rn, principal)
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}.", code="unsupported_format")
    if fmt == PUSH_FORMAT and not data_address:
        raise BadRequest("A push transfer needs our dataAddress.", code="missing_data_address")
    agreement_id = remote_negotiation.agreement_id_of(rn)
    rt = RemoteTransfer(id=f"urn:uuid:{uuid.uuid4()}", negotiation_id=rn.id, org_id=principal.org_id,
                        agreement_id=agreement_id, format=fmt, state=TS.REQUESTED.value)
    session.add(rt)
    record_event(session, "transfer.remote.requested", actor=principal.org_id,
                 details={"consumer_pid": rt.id, "provider": rn.provider_url, "agreement_id": agreement_id})
    session.commit()  # durable before the provider can call back
    body = {"@context": list(PLAIN_CONTEXT), "@type": "TransferRequestMessage", "consumerPid": rt.id,
            "agreementId": agreement_id, "format": fmt, "callbackAddress": remote_negotiation.transfer_callback(session, settings, broker_key, rn)}
    if data_address:
        body["dataAddress"] = data_address
    answer = peer.send("POST", f"{rn.provider_url}/transfers/request", body, token)
    session.refresh(rt)
    provider_pid = answer.get("providerPid") if isinstance(answer, dict) else None
    if not isinstance(provider_pid, str):
        raise peer.PeerError("The provider's answer is not a TransferProcess.", code="peer_bad_answer")
    if rt.provider_pid is None:
        rt.provider_pid = provider_pid
        session.add(rt)
    return rt


def change(session: Session, principal: Any, transfer_id: str, target: TS, token: str | None,
           code: str | None = None) -> RemoteTransfer:
    """Our side suspends, completes or terminates (or resumes with ``TS.STARTED``)."""
    rt = get(session, transfer_id, principal, lock=True)
    rn = remote_negotiation.get(session, rt.negotiation_id, principal)
    check_transfer(rt.state, target.value)
    body = {"@context": list(PLAIN_CONTEXT), "@type": KINDS[target], "providerPid": rt.provider_pid,
            "consumerPid": rt.id}
    if code and target in (TS.SUSPENDED, TS.TERMINATED):
        body["code"] = code
    path = "start" if target == TS.STARTED else PATHS[target]
    peer.send("POST", f"{rn.provider_url}/transfers/{rt.provider_pid}/{path}", body, token)
    _move(session, rt, target, actor=principal.org_id)
    return rt


# --------------------------------------------------------------------------- provider → consumer (callbacks)
def by_callback(session: Session, secret: str, consumer_pid: str, provider_pid: str | None) -> RemoteTransfer:
    rt = session.exec(select(RemoteTransfer).where(RemoteTransfer.id == consumer_pid).with_for_update()).first()
    if rt is None:
        raise NotFound("No such transfer process.", code="transfer_not_found")
    remote_negotiation.check_transfer_secret(session, rt.negotiation_id, secret)
    if provider_pid is not None and rt.provider_pid not in (None, provider_pid):
        raise BadRequest("providerPid does not identify this transfer process.", code="pid_mismatch")
    if rt.provider_pid is None and provider_pid:
        rt.provider_pid = provider_pid
    return rt


def on_message(session: Session, rt: RemoteTransfer, msg) -> RemoteTransfer:
    target = {"TransferStartMessage": TS.STARTED, "TransferSuspensionMessage": TS.SUSPENDED,
              "TransferCompletionMessage": TS.COMPLETED, "TransferTerminationMessage": TS.TERMINATED}[msg.type]
    if target == TS.STARTED and msg.dataAddress is not None:
        rt.data_address = msg.dataAddress.dump()
    if target in (TS.COMPLETED, TS.TERMINATED):
        rt.data_address = None  # the token in it is dead anyway
    _move(session, rt, target, actor="provider", details={"code": getattr(msg, "code", None)})
    return rt
