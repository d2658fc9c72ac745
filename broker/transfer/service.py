"""Transfer processes (DSP) and the per-request data-plane decision. No FastAPI imports.

The broker hosts the data of every provider (the catalog's encrypted vault), so it answers a
TransferRequestMessage on the provider's behalf: REQUESTED, then at once STARTED with a DataAddress
(endpoint + transfer token) when the agreement is active and the policy allows a read.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlmodel import Session, col, select

from broker.audit import record_event
from broker.contracts import service as contracts
from twinspace.dsp.states import TransferState as TS
from twinspace.dsp.states import check_transfer
from twinspace.crypto import public_key_from_b64
from twinspace.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from twinspace import transfer_tokens
from broker.transfer.dataplane import apply_obligations, merge_obligations
from twinspace.dsp.transfer_messages import start_message, transfer_process
from broker.transfer.models import TransferProcess

FORMATS = ("csv", "json", "parquet")


def _touch(session: Session, tp: TransferProcess, target: TS, *, actor: str, kind: str,
           details: dict[str, Any] | None = None) -> None:
    previous = tp.state
    check_transfer(previous, target.value)
    tp.state = target.value
    tp.updated_at = contracts.now()
    if target in (TS.SUSPENDED, TS.COMPLETED, TS.TERMINATED):
        tp.token_generation += 1  # every token issued so far stops working
    session.add(tp)
    session.flush()
    record_event(session, kind, actor=actor, asset_id=tp.asset_id, agreement_id=tp.agreement_id,
                 details={"transfer_id": tp.id, "from": previous, "to": target.value, **(details or {})})


def get_transfer(session: Session, transfer_id: str, principal: Any) -> TransferProcess:
    tp = session.get(TransferProcess, transfer_id)
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


def endpoint_for(settings, transfer_id: str) -> str:
    path = f"/dataplane/transfers/{transfer_id}"
    return (settings.dataplane_url.rstrip("/") + path) if settings.dataplane_url else path


def _start(session: Session, settings, broker_key, principal: Any, tp: TransferProcess, agreement) -> dict[str, Any]:
    token, exp = _issue(session, settings, broker_key, principal, tp, agreement)
    return start_message(provider_pid=tp.id, consumer_pid=tp.consumer_pid, endpoint=endpoint_for(settings, tp.id),
                         token=token, expires_at=exp)


def _issue(session: Session, settings, broker_key, principal: Any, tp: TransferProcess, agreement) -> tuple[str, int]:
    if principal.org_id != tp.consumer_id:
        raise Forbidden("Transfer tokens are issued to the agreement's consumer only.", code="wrong_party")
    token, exp = transfer_tokens.issue_transfer_token(
        broker_key, issuer=settings.issuer, consumer_id=tp.consumer_id, consumer_kid=principal.cnf_kid,
        transfer_id=tp.id, agreement_id=tp.agreement_id,
        asset={"id": agreement.asset_id, "version": agreement.asset_version, "content_hash": agreement.content_hash},
        generation=tp.token_generation, ttl=settings.transfer_token_ttl_seconds,
        not_after=contracts._utc(agreement.not_after).timestamp())
    record_event(session, "transfer.token_issued", actor=principal.org_id, asset_id=tp.asset_id,
                 agreement_id=tp.agreement_id, details={"transfer_id": tp.id, "cnf_kid": principal.cnf_kid,
                                                        "expires_at": exp, "generation": tp.token_generation})
    return token, exp


def request_transfer(session: Session, settings, broker_key, principal: Any, msg) -> tuple[TransferProcess, dict]:
    """TransferRequestMessage: check the agreement and a read decision, then REQUESTED → STARTED."""
    agreement = contracts.require_active_agreement(session, msg.agreementId, principal.org_id)
    taken = session.exec(select(TransferProcess).where(TransferProcess.consumer_id == principal.org_id,
                                                       TransferProcess.consumer_pid == msg.consumerPid)).first()
    if taken is not None:
        raise Conflict("This consumerPid is already in use.", code="consumer_pid_in_use")
    _decide_read(session, settings, agreement, principal, {"transfer": "start"})
    tp = TransferProcess(id="tp_" + secrets.token_hex(12), consumer_pid=msg.consumerPid, agreement_id=agreement.id,
                         consumer_id=principal.org_id, provider_id=agreement.provider_id, asset_id=agreement.asset_id,
                         asset_version=agreement.asset_version, format=msg.format, state=TS.REQUESTED.value)
    check_transfer(None, TS.REQUESTED.value)
    session.add(tp)
    session.flush()
    record_event(session, "transfer.requested", actor=principal.org_id, asset_id=tp.asset_id,
                 agreement_id=tp.agreement_id, details={"transfer_id": tp.id, "to": "REQUESTED", "format": tp.format})
    _touch(session, tp, TS.STARTED, actor="broker", kind="transfer.started")
    return tp, _start(session, settings, broker_key, principal, tp, agreement)


def resume(session: Session, settings, broker_key, principal: Any, transfer_id: str, msg) -> dict[str, Any]:
    """TransferStartMessage on a SUSPENDED process (by either party); a fresh token for the consumer."""
    tp = get_transfer(session, transfer_id, principal)
    _check_pids(tp, msg.providerPid, msg.consumerPid)
    if principal.org_id not in (tp.consumer_id, tp.provider_id):
        raise Forbidden("Only a party resumes a transfer.", code="wrong_party")
    agreement = contracts.require_active_agreement(session, tp.agreement_id, tp.consumer_id)
    _touch(session, tp, TS.STARTED, actor=principal.org_id, kind="transfer.started", details={"resumed": True})
    if principal.org_id != tp.consumer_id:
        return transfer_process(provider_pid=tp.id, consumer_pid=tp.consumer_pid, state=tp.state)
    return _start(session, settings, broker_key, principal, tp, agreement)


def new_token(session: Session, settings, broker_key, principal: Any, transfer_id: str) -> dict[str, Any]:
    tp = get_transfer(session, transfer_id, principal)
    if tp.state != TS.STARTED.value:
        raise Conflict(f"The transfer is {tp.state}, not STARTED.", code="transfer_not_started")
    agreement = contracts.require_active_agreement(session, tp.agreement_id, principal.org_id)
    return _start(session, settings, broker_key, principal, tp, agreement)


def change_state(session: Session, principal: Any, transfer_id: str, target: TS, msg) -> TransferProcess:
    """Suspension, completion or termination by a party (operators may terminate)."""
    tp = get_transfer(session, transfer_id, principal)
    _check_pids(tp, msg.providerPid, msg.consumerPid)
    is_party = principal.org_id in (tp.consumer_id, tp.provider_id)
    if not (is_party or (principal.role == "operator" and target == TS.TERMINATED)):
        raise Forbidden("Only a party changes a transfer's state.", code="wrong_party")
    details = {}
    if getattr(msg, "code", None) or getattr(msg, "reason", None):
        details = {"code": msg.code, "reason": [str(r)[:200] for r in (msg.reason or [])][:5]}
    _touch(session, tp, target, actor=principal.org_id, kind=f"transfer.{target.value.lower()}", details=details)
    return tp


def end_transfers_of(session: Session, agreement_id: str, *, actor: str) -> int:
    """Terminate the live transfers of a revoked agreement (their tokens stop working)."""
    live = session.exec(select(TransferProcess).where(TransferProcess.agreement_id == agreement_id,
                                                      col(TransferProcess.state).in_(["REQUESTED", "STARTED",
                                                                                      "SUSPENDED"]))).all()
    for tp in live:
        _touch(session, tp, TS.TERMINATED, actor=actor, kind="transfer.terminated",
               details={"code": "agreement_revoked"})
    return len(live)


# Revoking an agreement ends its live transfers in the same transaction (contracts cannot import transfer).
contracts.ON_REVOKE.append(lambda session, agreement_id, actor: end_transfers_of(session, agreement_id, actor=actor))


def view(tp: TransferProcess) -> dict[str, Any]:
    return {**transfer_process(provider_pid=tp.id, consumer_pid=tp.consumer_pid, state=tp.state),
            "twin:transfer": {"id": tp.id, "agreement_id": tp.agreement_id, "consumer_id": tp.consumer_id,
                              "provider_id": tp.provider_id, "asset_id": tp.asset_id,
                              "asset_version": tp.asset_version, "format": tp.format, "pulls": tp.pulls,
                              "rows_served": tp.rows_served}}


# --------------------------------------------------------------------------- data plane
@dataclass
class Pull:
    table: pa.Table
    transfer_id: str
    agreement_id: str
    asset_id: str
    asset_version: int
    content_hash: str
    fmt: str
    consumer_id: str


def authorize_pull(session: Session, runtime, principal: Any, transfer_id: str, *, token: str | None,
                   proof: str | None, method: str, path: str) -> tuple[TransferProcess, Any, dict]:
    """Token + proof of possession + transfer state + agreement: everything before any data is read."""
    from broker.identity.service import active_key

    settings = runtime.settings
    if not token or not proof:
        raise Unauthorized("Data-plane requests need TwinSpace-Transfer-Token and TwinSpace-PoP headers.",
                           code="missing_transfer_token")
    claims = transfer_tokens.decode_transfer_token(token, runtime.broker_key.public_key(), issuer=settings.issuer,
                                          leeway=settings.clock_skew_seconds)
    if claims["sub"] != principal.org_id:
        raise Forbidden("This transfer token was issued to another consumer.", code="token_not_yours")
    if claims.get("tpid") != transfer_id:
        raise Forbidden("This transfer token is for another transfer process.", code="token_wrong_transfer")
    kid = transfer_tokens.pop_kid(proof)
    if kid != claims["cnf"].get("kid"):
        raise Unauthorized("The proof of possession is not signed with the key the token is bound to.",
                           code="invalid_pop")
    org, key = active_key(session, kid)
    if org.id != principal.org_id:
        raise Unauthorized("The proof of possession key belongs to another organisation.", code="invalid_pop")
    pop = transfer_tokens.verify_pop(proof, public_key_from_b64(key.public_key), method=method, path=path, token=token,
                            max_age=settings.transfer_pop_max_age_seconds, leeway=settings.clock_skew_seconds)
    tp = session.get(TransferProcess, transfer_id)
    if tp is None or tp.consumer_id != principal.org_id:
        raise NotFound(f"No transfer process {transfer_id}.", code="transfer_not_found")
    if claims.get("agr") != tp.agreement_id:
        raise Forbidden("This transfer token is for another agreement.", code="token_wrong_agreement")
    agreement = contracts.require_active_agreement(session, tp.agreement_id, principal.org_id)
    if tp.state != TS.STARTED.value:
        raise Conflict(f"The transfer is {tp.state}, not STARTED.", code="transfer_not_started")
    if claims.get("gen") != tp.token_generation:
        raise Unauthorized("This transfer token was invalidated (the transfer was suspended or restarted).",
                           code="invalid_transfer_token")
    asset = claims.get("asset") or {}
    if (asset.get("version"), asset.get("content_hash")) != (agreement.asset_version, agreement.content_hash):
        raise Conflict("The token names another asset version.", code="asset_version_changed")
    ttl = settings.transfer_pop_max_age_seconds + 2 * settings.clock_skew_seconds
    if not runtime.replay.claim(f"pop:{principal.org_id}:{pop['jti']}", ttl):
        raise Unauthorized("This proof of possession was already used; make a fresh one per request.",
                           code="replayed_pop")
    return tp, agreement, claims


def pull(session: Session, runtime, principal: Any, transfer_id: str, *, token: str | None, proof: str | None,
         method: str, path: str, fmt: str, columns: list[str] | None = None) -> Pull:
    """Authorise, decide again with live usage counters, load the vault table, apply obligations,
    count usage and audit (rows, columns, format, content hash) — all before the first byte is sent."""
    from broker.catalog import vault
    from broker.policy.service import get_usage, record_usage

    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}.", code="unsupported_format")
    tp, agreement, _claims = authorize_pull(session, runtime, principal, transfer_id, token=token, proof=proof,
                                            method=method, path=path)
    decision = _decide_read(session, runtime.settings, agreement, principal, {"format": fmt})
    rules = merge_obligations(decision.obligations, agreement.obligations)
    max_rows = rules["max_rows"]
    quota = agreement.policy_params.get("max_total_rows")
    if isinstance(quota, int):
        remaining = max(0, quota - get_usage(session, agreement.id)["rows"])
        max_rows = remaining if max_rows is None else min(max_rows, remaining)
    table = vault.load_table(session, agreement.asset_id, agreement.asset_version, settings=runtime.settings)
    table = apply_obligations(table, max_rows=max_rows, columns=rules["columns"], requested_columns=columns)
    record_usage(session, agreement.id, table.num_rows)
    tp.pulls += 1
    tp.rows_served += table.num_rows
    tp.updated_at = contracts.now()
    session.add(tp)
    record_event(session, "transfer.pull", actor=principal.org_id, asset_id=agreement.asset_id,
                 agreement_id=agreement.id,
                 details={"transfer_id": tp.id, "format": fmt, "rows": table.num_rows,
                          "columns": table.column_names, "asset_version": agreement.asset_version,
                          "content_hash": agreement.content_hash, "max_rows": max_rows,
                          "policy_version": decision.policy_version, "input_hash": decision.input_hash})
    return Pull(table, tp.id, agreement.id, agreement.asset_id, agreement.asset_version, agreement.content_hash,
                fmt, principal.org_id)
