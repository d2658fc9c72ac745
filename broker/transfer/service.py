"""The per-request data-plane decision (token, proof of possession, state, agreement, policy) and the
broker-hosted pull. No FastAPI imports. The transfer process itself (the DSP state machine) is
``broker.transfer.process``; its functions are re-exported here for existing callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlmodel import Session

from broker.audit import record_event
from broker.contracts import service as contracts
from twinspace.dsp.states import TransferState as TS
from twinspace.crypto import public_key_from_b64
from twinspace.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from twinspace import transfer_tokens
from broker.transfer.dataplane import apply_obligations, merge_obligations
from broker.transfer.models import TransferProcess

FORMATS = ("csv", "json", "parquet")

from broker.transfer.process import (_check_pids, _decide_read, change_state, create, dsp_view,  # noqa: F401
                                     end_transfers_of, endpoint_for, get_transfer, list_transfers, new_token,
                                     request_transfer, start, start_message_from, view)


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
    if not runtime.replay.claim(f"pop:{principal.org_id}:{pop['jti']}", ttl, session):
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
    # Increments in SQL: concurrent pulls of one transfer must not overwrite each other's counts.
    tp.pulls = TransferProcess.pulls + 1
    tp.rows_served = TransferProcess.rows_served + table.num_rows
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
