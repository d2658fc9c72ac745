"""The DSP transfer process (control plane): REQUESTED → STARTED → (SUSPENDED ⇄ STARTED) → COMPLETED,
any non-terminal → TERMINATED, for PULL and PUSH. No FastAPI imports.

A TransferRequestMessage makes a REQUESTED process and nothing more; the provider starts it (here:
``start``, at once after the request commits when ``TWINSPACE_DSP_TRANSFER_AUTOSTART`` is on and the
agreement and a fresh read decision allow it, or on the provider's TransferStartMessage). The start
message goes to the consumer's ``callbackAddress``; a broker-hosted consumer reads the process and asks
``/transfers/{id}/token`` for its DataAddress. The data comes from the provider's connector: the PULL
endpoint is ``{asset.data_endpoint}/dataplane/transfers/{pid}`` and the transfer token's audience is that
connector's normalised endpoint (docs/data-plane.md); a PUSH is handed to the connector on start."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from broker.audit import record_event
from broker.contracts import callbacks
from broker.contracts import service as contracts
from broker.transfer.models import TransferProcess
from twinspace import transfer_tokens
from twinspace.dsp.states import TransferState as TS
from twinspace.dsp.states import check_transfer
from twinspace.dsp.transfer_messages import FORMATS, PULL_FORMAT, PUSH_FORMAT, code_message, start_message
from twinspace.dsp.transfer_messages import transfer_process as process_document
from twinspace.dataplane import normalise_endpoint
from twinspace.errors import BadRequest, Conflict, Forbidden, NotFound

AGREEMENT_IRI = "urn:twinspace:agreement:"
CALLBACK_PATHS = {"TransferStartMessage": "/start", "TransferSuspensionMessage": "/suspension",
                  "TransferCompletionMessage": "/completion", "TransferTerminationMessage": "/termination"}


@dataclass(frozen=True)
class Party:
    """The consumer as the policy engine sees it, when the provider (not the consumer) acts."""

    org_id: str
    role: str
    org_type: str = "other"
    attributes: dict[str, Any] = field(default_factory=dict)
    cnf_kid: str | None = None


def connector_of(session: Session, tp: TransferProcess) -> str:
    """The normalised endpoint of the connector that serves the transfer's asset version."""
    from broker.catalog.service import get_asset

    asset = get_asset(session, tp.asset_id, tp.asset_version)
    if not asset.data_endpoint:
        raise Conflict("This asset version has no connector serving its data.", code="no_connector")
    return normalise_endpoint(asset.data_endpoint)


def endpoint_for(session: Session, tp: TransferProcess) -> str:
    """The PULL endpoint put in the DataAddress: the provider's connector, never the broker."""
    return f"{connector_of(session, tp)}/dataplane/transfers/{tp.id}"


def consumer_public_key(session: Session, tp: TransferProcess) -> str:
    """The raw public key (b64url) of the consumer's active key the transfer's tokens bind to."""
    from broker.identity.models import OrgKey

    key = session.get(OrgKey, tp.consumer_kid) if tp.consumer_kid else None
    if key is None or key.org_id != tp.consumer_id or key.status != "active":
        raise Conflict("The consumer key this transfer binds to is not an active key of the consumer.",
                       code="no_consumer_key")
    return key.public_key


def _touch(session: Session, tp: TransferProcess, target: TS, *, actor: str, kind: str,
           details: dict[str, Any] | None = None) -> None:
    previous = tp.state
    check_transfer(previous, target.value)
    tp.state = target.value
    tp.updated_at = contracts.now()
    if target in (TS.SUSPENDED, TS.COMPLETED, TS.TERMINATED):
        tp.token_generation += 1  # every token issued so far stops working
        if tp.format == PULL_FORMAT:  # and the connector drops its leased decisions (after the commit)
            from broker.transfer import notices

            notices.revoke_leases(session, [tp], f"transfer_{target.value.lower()}")
    session.add(tp)
    session.flush()
    record_event(session, kind, actor=actor, asset_id=tp.asset_id, agreement_id=tp.agreement_id,
                 details={"transfer_id": tp.id, "from": previous, "to": target.value, **(details or {})})


def _notify(session: Session, tp: TransferProcess, message: dict[str, Any]) -> None:
    callbacks.queue(session, tp.callback_address, f"/transfers/{tp.consumer_pid}{CALLBACK_PATHS[message['@type']]}",
                    message)


def get_transfer(session: Session, transfer_id: str, principal: Any, *, lock: bool = False) -> TransferProcess:
    """A process the principal is party to (operators and auditors see all); NotFound otherwise."""
    stmt = select(TransferProcess).where(TransferProcess.id == transfer_id)
    if lock:
        stmt = stmt.with_for_update()
    tp = session.exec(stmt).first()
    if tp is None or (principal.role not in contracts.READ_ALL_ROLES
                      and principal.org_id not in (tp.consumer_id, tp.provider_id)):
        raise NotFound(f"No transfer process {transfer_id}.", code="transfer_not_found")
    return tp


def list_transfers(session: Session, principal: Any, limit: int = 100) -> list[TransferProcess]:
    stmt = select(TransferProcess).order_by(col(TransferProcess.created_at).desc()).limit(limit)
    if principal.role not in contracts.READ_ALL_ROLES:
        stmt = stmt.where((TransferProcess.consumer_id == principal.org_id)
                          | (TransferProcess.provider_id == principal.org_id))
    return list(session.exec(stmt).all())


def _check_pids(tp: TransferProcess, provider_pid: str, consumer_pid: str) -> None:
    if provider_pid != tp.id or consumer_pid != tp.consumer_pid:
        raise BadRequest("providerPid/consumerPid do not identify this transfer process.", code="pid_mismatch")


def _decide_read(session: Session, settings, agreement, principal: Any, request: dict[str, Any]):
    from broker.policy.access import decide_access
    from broker.policy.service import require_allow

    return require_allow(decide_access(session, settings, contracts.policy_agreement_view(agreement), principal,
                                       "read", request={"purpose": agreement.purpose,
                                                        "scenario": agreement.scenario, **request}))


def consumer_party(session: Session, tp: TransferProcess) -> Party:
    from broker.identity.models import Org

    org = session.get(Org, tp.consumer_id)
    if org is None:
        raise NotFound("The consumer of this transfer is no longer registered.", code="consumer_not_found")
    if org.status != "active":
        raise Forbidden("The consumer organisation is suspended.", code="org_suspended")
    return Party(org_id=org.id, role=org.role, org_type=org.org_type or "other",
                 attributes=dict(org.attributes or {}), cnf_kid=tp.consumer_kid)


def _issue(session: Session, settings, broker_key, tp: TransferProcess, agreement, *, actor: str,
           push: dict[str, Any] | None = None) -> tuple[str, int]:
    if not tp.consumer_kid:
        raise Conflict("This transfer has no consumer key to bind a token to.", code="no_consumer_key")
    token, exp = transfer_tokens.issue_transfer_token(
        broker_key, issuer=settings.issuer, audience=connector_of(session, tp), consumer_id=tp.consumer_id,
        consumer_kid=tp.consumer_kid, consumer_key=consumer_public_key(session, tp), provider_id=tp.provider_id,
        transfer_id=tp.id, agreement_id=tp.agreement_id,
        asset={"id": agreement.asset_id, "version": agreement.asset_version, "content_hash": agreement.content_hash},
        generation=tp.token_generation, ttl=settings.transfer_token_ttl_seconds,
        not_after=contracts._utc(agreement.not_after).timestamp())
    if push is not None:  # the token also names the consumer's sink (the connector delivers there)
        import jwt

        claims = jwt.decode(token, options={"verify_signature": False})
        claims["push"] = push
        token = jwt.encode(claims, broker_key, algorithm="EdDSA", headers=jwt.get_unverified_header(token))
    record_event(session, "transfer.token_issued", actor=actor, asset_id=tp.asset_id, agreement_id=tp.agreement_id,
                 details={"transfer_id": tp.id, "cnf_kid": tp.consumer_kid, "expires_at": exp,
                          "generation": tp.token_generation, "push": push is not None})
    return token, exp


def push_sink(tp: TransferProcess) -> dict[str, Any]:
    """``{endpoint, authorization}`` of the consumer's PUSH dataAddress."""
    address = tp.data_address or {}
    props = {p.get("name"): p.get("value") for p in address.get("endpointProperties") or [] if isinstance(p, dict)}
    return {"endpoint": address.get("endpoint"), "authorization": props.get("authorization")}


def hand_push(session: Session, settings, broker_key, tp: TransferProcess, agreement, *, actor: str) -> bool:
    """Best effort: ask the provider's connector to deliver a PUSH transfer (``POST {endpoint}/dataplane/push``
    with a transfer token that names the consumer's sink). False when the connector did not take it."""
    from broker.catalog import netguard
    from twinspace.errors import TwinSpaceError

    try:
        token, _exp = _issue(session, settings, broker_key, tp, agreement, actor=actor, push=push_sink(tp))
        response = netguard.request(settings, "POST", connector_of(session, tp), "/dataplane/push",
                                    json={"token": token}, max_bytes=65536)
        ok = 200 <= response.status_code < 300
        status = response.status_code
    except TwinSpaceError as exc:
        ok, status = False, exc.code
    record_event(session, "transfer.push_requested", actor=actor, asset_id=tp.asset_id, agreement_id=tp.agreement_id,
                 outcome="ok" if ok else "error", details={"transfer_id": tp.id, "connector_answer": status})
    return ok


def _start_document(session: Session, settings, broker_key, tp: TransferProcess, agreement, *,
                    actor: str) -> dict[str, Any]:
    if tp.format == PUSH_FORMAT:  # the provider's connector delivers to the consumer's DataAddress
        return start_message(provider_pid=tp.id, consumer_pid=tp.consumer_pid)
    token, exp = _issue(session, settings, broker_key, tp, agreement, actor=actor)
    return start_message(provider_pid=tp.id, consumer_pid=tp.consumer_pid, endpoint=endpoint_for(session, tp),
                         token=token, expires_at=exp)


# --------------------------------------------------------------------------- consumer → provider
def create(session: Session, settings, principal: Any, msg) -> TransferProcess:
    """TransferRequestMessage → a REQUESTED process (the agreement must be usable by this consumer and a
    read decision must allow it)."""
    if msg.format not in FORMATS:
        raise BadRequest(f"Unsupported format {msg.format[:60]}; use {' or '.join(FORMATS)}.",
                         code="unsupported_format")
    if msg.format == PUSH_FORMAT and (msg.dataAddress is None or not msg.dataAddress.endpoint):
        raise BadRequest("A push transfer names the consumer's dataAddress (with an endpoint).",
                         code="missing_data_address")
    agreement_id = msg.agreementId.removeprefix(AGREEMENT_IRI)  # a DSP peer names the agreement by its @id
    agreement = contracts.require_active_agreement(session, agreement_id, principal.org_id)
    taken = session.exec(select(TransferProcess).where(TransferProcess.consumer_id == principal.org_id,
                                                       TransferProcess.consumer_pid == msg.consumerPid)).first()
    if taken is not None:
        raise Conflict("This consumerPid is already in use.", code="consumer_pid_in_use")
    # A request the policy refuses now is answered with a TransferError at once (nothing is created);
    # the provider decides again when it starts the process.
    _decide_read(session, settings, agreement, principal, {"transfer": "request"})
    tp = TransferProcess(id="tp_" + secrets.token_hex(12), consumer_pid=msg.consumerPid, agreement_id=agreement.id,
                         consumer_id=principal.org_id, provider_id=agreement.provider_id, asset_id=agreement.asset_id,
                         asset_version=agreement.asset_version, format=msg.format, state=TS.REQUESTED.value,
                         callback_address=callbacks.check_address(settings, msg.callbackAddress),
                         consumer_kid=getattr(principal, "cnf_kid", None),
                         data_address=msg.dataAddress.dump() if msg.dataAddress else None)
    check_transfer(None, TS.REQUESTED.value)
    session.add(tp)
    session.flush()
    record_event(session, "transfer.requested", actor=principal.org_id, asset_id=tp.asset_id,
                 agreement_id=tp.agreement_id, details={"transfer_id": tp.id, "to": "REQUESTED", "format": tp.format})
    return tp


def start(session: Session, settings, broker_key, tp: TransferProcess, *, actor: str,
          consumer: Any | None = None) -> dict[str, Any]:
    """Provider side: REQUESTED (or SUSPENDED) → STARTED after the agreement and a fresh read decision;
    returns the TransferStartMessage (sent to the consumer's callback too)."""
    agreement = contracts.require_active_agreement(session, tp.agreement_id, tp.consumer_id)
    _decide_read(session, settings, agreement, consumer or consumer_party(session, tp), {"transfer": "start"})
    resumed = tp.state == TS.SUSPENDED.value
    _touch(session, tp, TS.STARTED, actor=actor, kind="transfer.started", details={"resumed": resumed})
    document = _start_document(session, settings, broker_key, tp, agreement, actor=actor)
    _notify(session, tp, document)
    return document


def is_push(session: Session, transfer_id: str) -> bool:
    tp = session.get(TransferProcess, transfer_id)
    return tp is not None and tp.format == PUSH_FORMAT


def push_after_commit(engine, settings, broker_key, transfer_id: str, actor: str = "broker") -> bool:
    """After a PUSH transfer's start committed (the connector asks the broker for a decision, which needs
    the STARTED state): hand it to the provider's connector, in a transaction of its own."""
    with Session(engine, expire_on_commit=False) as session:
        tp = session.get(TransferProcess, transfer_id)
        if tp is None or tp.format != PUSH_FORMAT or tp.state != TS.STARTED.value:
            return False
        agreement = contracts.get_agreement(session, tp.agreement_id)
        ok = hand_push(session, settings, broker_key, tp, agreement, actor=actor)
        session.commit()
        return ok


def autostart(engine, settings, broker_key, transfer_id: str, consumer: Any) -> None:
    """After the request committed: start the process, or terminate it (and tell the consumer) when the
    agreement or the policy refuses. Runs in its own transaction."""
    from twinspace.errors import TwinSpaceError

    with Session(engine, expire_on_commit=False) as session:
        tp = session.get(TransferProcess, transfer_id)
        if tp is None or tp.state != TS.REQUESTED.value:
            return
        try:
            start(session, settings, broker_key, tp, actor="broker", consumer=consumer)
            session.commit()
            if tp.format == PUSH_FORMAT:
                push_after_commit(engine, settings, broker_key, transfer_id)
        except TwinSpaceError as exc:
            session.rollback()
            tp = session.get(TransferProcess, transfer_id)
            _touch(session, tp, TS.TERMINATED, actor="broker", kind="transfer.terminated",
                   details={"code": exc.code})
            _notify(session, tp, code_message("TransferTerminationMessage", provider_pid=tp.id,
                                              consumer_pid=tp.consumer_pid, code=exc.code, reason=[exc.detail]))
            session.commit()


def request_transfer(session: Session, settings, broker_key, principal: Any, msg) -> tuple[TransferProcess, dict]:
    """Broker-hosted shortcut (console, management API): request and start in one step."""
    tp = create(session, settings, principal, msg)
    return tp, start(session, settings, broker_key, tp, actor="broker", consumer=principal)


def start_message_from(session: Session, settings, broker_key, principal: Any, transfer_id: str, msg) -> dict[str, Any]:
    """TransferStartMessage received: the provider starts a REQUESTED process, either party resumes a
    SUSPENDED one. The answer is the consumer's fresh start message (with its DataAddress) or the process."""
    tp = get_transfer(session, transfer_id, principal, lock=True)
    _check_pids(tp, msg.providerPid, msg.consumerPid)
    if principal.org_id not in (tp.consumer_id, tp.provider_id):
        raise Forbidden("Only a party starts or resumes a transfer.", code="wrong_party")
    if tp.state == TS.REQUESTED.value and principal.org_id != tp.provider_id:
        raise Forbidden("Only the provider starts a requested transfer.", code="wrong_party")
    if tp.state not in (TS.REQUESTED.value, TS.SUSPENDED.value):
        check_transfer(tp.state, TS.STARTED.value)  # raises invalid_transition
    document = start(session, settings, broker_key, tp, actor=principal.org_id)
    if principal.org_id == tp.consumer_id:
        return document
    return process_document(provider_pid=tp.id, consumer_pid=tp.consumer_pid, state=tp.state)


def new_token(session: Session, settings, broker_key, principal: Any, transfer_id: str) -> dict[str, Any]:
    """A fresh DataAddress (TransferStartMessage shape) for the consumer of a STARTED PULL transfer."""
    tp = get_transfer(session, transfer_id, principal)
    if principal.org_id != tp.consumer_id:
        raise Forbidden("Transfer tokens are issued to the agreement's consumer only.", code="wrong_party")
    # The agreement first: after a revocation the consumer is told why (410), not only that the transfer ended.
    agreement = contracts.require_active_agreement(session, tp.agreement_id, principal.org_id)
    if tp.state != TS.STARTED.value:
        raise Conflict(f"The transfer is {tp.state}, not STARTED.", code="transfer_not_started")
    if tp.format != PULL_FORMAT:
        raise Conflict("A push transfer has no pull endpoint.", code="not_a_pull_transfer")
    if principal.cnf_kid != tp.consumer_kid:
        tp.consumer_kid = principal.cnf_kid  # the consumer rotated its key: bind new tokens to the current one
        session.add(tp)
    return _start_document(session, settings, broker_key, tp, agreement, actor=principal.org_id)


def change_state(session: Session, principal: Any, transfer_id: str, target: TS, msg) -> TransferProcess:
    """Suspension, completion or termination by a party (operators may terminate); the consumer is told
    when the provider side made the change."""
    tp = get_transfer(session, transfer_id, principal, lock=True)
    _check_pids(tp, msg.providerPid, msg.consumerPid)
    is_party = principal.org_id in (tp.consumer_id, tp.provider_id)
    if not (is_party or (principal.role == "operator" and target == TS.TERMINATED)):
        raise Forbidden("Only a party changes a transfer's state.", code="wrong_party")
    details = {}
    if getattr(msg, "code", None) or getattr(msg, "reason", None):
        details = {"code": msg.code, "reason": [str(r)[:200] for r in (msg.reason or [])][:5]}
    _touch(session, tp, target, actor=principal.org_id, kind=f"transfer.{target.value.lower()}", details=details)
    if principal.org_id != tp.consumer_id:
        kind = {TS.SUSPENDED: "TransferSuspensionMessage", TS.COMPLETED: "TransferCompletionMessage",
                TS.TERMINATED: "TransferTerminationMessage"}[target]
        _notify(session, tp, code_message(kind, provider_pid=tp.id, consumer_pid=tp.consumer_pid,
                                          code=getattr(msg, "code", None), reason=getattr(msg, "reason", None))
                if kind != "TransferCompletionMessage" else
                code_message(kind, provider_pid=tp.id, consumer_pid=tp.consumer_pid))
    return tp


def end_transfers_of(session: Session, agreement_id: str, *, actor: str) -> int:
    """Terminate the live transfers of a revoked agreement (their tokens stop working)."""
    live = session.exec(select(TransferProcess).where(TransferProcess.agreement_id == agreement_id,
                                                      col(TransferProcess.state).in_(["REQUESTED", "STARTED",
                                                                                      "SUSPENDED"]))).all()
    for tp in live:
        _touch(session, tp, TS.TERMINATED, actor=actor, kind="transfer.terminated",
               details={"code": "agreement_revoked"})
        _notify(session, tp, code_message("TransferTerminationMessage", provider_pid=tp.id,
                                          consumer_pid=tp.consumer_pid, code="agreement_revoked",
                                          reason=["The agreement was revoked."]))
    return len(live)


# Revoking an agreement ends its live transfers in the same transaction (contracts cannot import transfer).
contracts.ON_REVOKE.append(lambda session, agreement_id, actor: end_transfers_of(session, agreement_id, actor=actor))


def withdraw_leases(session: Session, org_id: str, kid: str | None) -> int:
    """An organisation suspended (``kid`` None) or one of its keys revoked: the connectors serving its
    started PULL transfers — as consumer, or as provider when suspended — drop their leased decisions."""
    from broker.transfer import notices

    stmt = select(TransferProcess).where(TransferProcess.state == TS.STARTED.value,
                                         TransferProcess.format == PULL_FORMAT)
    if kid is None:
        stmt = stmt.where((TransferProcess.consumer_id == org_id) | (TransferProcess.provider_id == org_id))
    else:
        stmt = stmt.where(TransferProcess.consumer_id == org_id, TransferProcess.consumer_kid == kid)
    return notices.revoke_leases(session, session.exec(stmt).all(), "org_suspended" if kid is None else "key_revoked")


def policy_leases(session: Session, policy_id: str) -> int:
    """A policy was uploaded anew: every started PULL transfer's connector drops its leased decisions (the
    next pull is decided under the new version; over-approximate: re-deciding is cheap, a stale allow not)."""
    from broker.transfer import notices

    stmt = select(TransferProcess).where(TransferProcess.state == TS.STARTED.value,
                                         TransferProcess.format == PULL_FORMAT)
    return notices.revoke_leases(session, session.exec(stmt).all(), f"policy_changed:{policy_id}")


from broker.identity import service as _identity  # noqa: E402
from broker.policy import access as _policy_access  # noqa: E402

_identity.ON_ACCESS_WITHDRAWN.append(withdraw_leases)
_policy_access.ON_POLICY_CHANGED.append(policy_leases)


def dsp_view(tp: TransferProcess) -> dict[str, Any]:
    return process_document(provider_pid=tp.id, consumer_pid=tp.consumer_pid, state=tp.state)


def view(tp: TransferProcess) -> dict[str, Any]:
    """TransferProcess plus ``twin:transfer`` (a JSON literal in the TwinSpace context)."""
    from twinspace.dsp.messages import CONTEXT

    return {**dsp_view(tp), "@context": list(CONTEXT),
            "twin:transfer": {"id": tp.id, "agreement_id": tp.agreement_id, "consumer_id": tp.consumer_id,
                              "provider_id": tp.provider_id, "asset_id": tp.asset_id,
                              "asset_version": tp.asset_version, "format": tp.format, "pulls": tp.pulls,
                              "rows_served": tp.rows_served}}
