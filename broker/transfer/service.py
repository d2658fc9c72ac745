"""The control plane of a pull (docs/data-plane.md): the signed decision a provider's connector asks for
before it serves rows, the receipts it sends afterwards, the consumer's acknowledgements. The broker
never sees the rows. No FastAPI imports. The transfer process itself (the DSP state machine) is
``broker.transfer.process``; its functions are re-exported here for existing callers.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from broker.audit import record_event
from broker.catalog.endpoints import verify_org_message
from broker.contracts import service as contracts
from broker.transfer.models import DataplaneDecision, DataplaneReceipt, TransferProcess
from twinspace.dataplane import ACK, DECISION, RECEIPT, merge_obligations, sign_message
from twinspace.dsp.states import TransferState as TS
from twinspace.errors import BadRequest, Conflict, Forbidden, NotFound, TwinSpaceError, Unauthorized

FORMATS = ("csv", "json", "parquet")

from broker.transfer.process import (_check_pids, _decide_read, change_state, connector_of,  # noqa: F401,E402
                                     consumer_party, consumer_public_key, create, dsp_view, end_transfers_of,
                                     endpoint_for,
                                     get_transfer, list_transfers, new_token, request_transfer, start,
                                     start_message_from, view)


def _quota(session: Session, agreement) -> dict[str, Any] | None:
    from broker.policy.service import get_usage

    if _quota_counted(agreement):
        quota = agreement.policy_params["max_total_rows"]
        return {"max_rows": max(0, quota - get_usage(session, agreement.id)["rows"])}
    return None


# Policy parameters whose decision depends on the usage so far: such an agreement is decided per pull.
_PER_PULL_PARAMS = ("max_total_rows", "max_accesses", "max_elapsed_seconds")


def _lease_seconds(settings, agreement) -> int:
    """How long the connector may reuse an allow decision: ``decision_lease_seconds``, never past the
    agreement's end nor its policy's ``not_after``, and 0 (one pull) when the policy counts usage (a row
    quota, a number of accesses, a time since first use: the next decision must see this pull)."""
    if agreement is None:
        return 0
    params = agreement.policy_params or {}
    if any(params.get(k) is not None for k in _PER_PULL_PARAMS):
        return 0
    lease = int(settings.decision_lease_seconds)
    now = datetime.now(timezone.utc)
    end = agreement.not_after
    if end is not None:
        if end.tzinfo is None:
            end = end.replace(tzinfo=timezone.utc)
        lease = min(lease, int((end - now).total_seconds()))
    policy_end = params.get("not_after")
    if policy_end is not None:
        if not isinstance(policy_end, (int, float)) or isinstance(policy_end, bool):
            return 0  # a window this function cannot read: decide per pull
        lease = min(lease, int(policy_end - now.timestamp()))
    return max(0, lease)


def _quota_counted(agreement) -> bool:
    quota = (agreement.policy_params or {}).get("max_total_rows")
    return isinstance(quota, int) and not isinstance(quota, bool)


def decide_pull(session: Session, settings, broker_key, principal: Any, *, transfer_id: str, token_jti: str,
                nonce: str, fmt: str, token_generation: int, held_sha256: str | None = None) -> dict[str, Any]:
    """``POST /dataplane/decisions``: a fresh decision for one pull, signed for the connector's audience and
    bound to its nonce and the token's ``jti``, with the agreement bundle. A deny is a signed decision too:
    its reasons name the first refusal (the agreement first — after a revocation the connector is told
    why —, then the transfer's state, then ``stale_transfer_token`` when ``token_generation``, the token's
    ``gen``, is not the transfer's current one: every token issued before a suspension stays dead).
    The decision names the agreement document's SHA-256; a connector that already verified that document
    (``held_sha256``) gets no bundle again."""
    from broker.policy.access import decide_access

    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}.", code="unsupported_format")
    tp = session.get(TransferProcess, transfer_id)
    if tp is None or tp.provider_id != principal.org_id:
        raise NotFound(f"No transfer process {transfer_id} of yours.", code="transfer_not_found")
    audience = connector_of(session, tp)
    agreement = contracts.get_agreement(session, tp.agreement_id)
    allow, reasons, obligations = False, [], {"max_rows": 0, "columns": []}
    decision_id, policy_version, input_hash = "dec_" + uuid.uuid4().hex, "", ""
    try:
        agreement = contracts.require_active_agreement(session, tp.agreement_id, tp.consumer_id)
        if tp.state != TS.STARTED.value:
            raise Conflict(f"The transfer is {tp.state}, not STARTED.", code="transfer_not_started")
        if token_generation != tp.token_generation:
            raise Unauthorized("The transfer token was issued before the transfer's last state change.",
                               code="stale_transfer_token")
        consumer_public_key(session, tp)  # the key the tokens bind to is still an active key (no_consumer_key)
        decision = decide_access(session, settings, contracts.policy_agreement_view(agreement),
                                 consumer_party(session, tp), "read",
                                 request={"purpose": agreement.purpose, "scenario": agreement.scenario, "format": fmt})
        decision_id = decision.decision_id or decision_id
        policy_version, input_hash = decision.policy_version, decision.input_hash
        allow, reasons = bool(decision.allow), list(decision.reasons)
        if allow:
            obligations = merge_obligations(decision.obligations, agreement.obligations, _quota(session, agreement))
    except TwinSpaceError as exc:
        allow, reasons = False, [exc.code]
    lifetime = _lease_seconds(settings, agreement) if allow else 0
    session.add(DataplaneDecision(decision_id=decision_id, transfer_id=tp.id, provider_id=tp.provider_id,
                                  consumer_id=tp.consumer_id, agreement_id=tp.agreement_id, token_jti=token_jti,
                                  allow=allow))
    session.flush()
    record_event(session, "transfer.decision", actor=principal.org_id, outcome="ok" if allow else "denied",
                 asset_id=tp.asset_id, agreement_id=tp.agreement_id,
                 details={"transfer_id": tp.id, "decision_id": decision_id, "allow": allow, "reasons": reasons,
                          "token_jti": token_jti, "token_generation": token_generation, "format": fmt,
                          "obligations": obligations, "lease_seconds": lifetime})
    signed = sign_message(broker_key, DECISION, issuer=settings.issuer, audience=audience, claims={
        "decision_id": decision_id, "allow": allow, "reasons": reasons, "obligations": obligations,
        "agr": tp.agreement_id, "tpid": tp.id, "sub": tp.consumer_id, "token_jti": token_jti, "nonce": nonce,
        "gen": tp.token_generation, "format": fmt, "lease": lifetime > 0,
        "policy_version": policy_version, "input_hash": input_hash,
        "agreement_sha256": agreement.document_sha256 if agreement is not None else None},
        lifetime=lifetime or None)
    bundle = None
    held = agreement is not None and held_sha256 is not None and held_sha256 == agreement.document_sha256
    if agreement is not None and agreement.countersignature and not held:
        bundle = contracts.export_bundle(session, settings, broker_key, principal, tp.agreement_id)
    return {"decision": signed, "agreement": bundle}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def record_receipt(session: Session, settings, principal: Any, receipt: str) -> dict[str, Any]:
    """``POST /dataplane/receipts``: a receipt signed by an active key of the calling provider, naming a
    decision (or a query), transfer and agreement of that provider; audited and counted once."""
    from broker.policy.service import record_usage

    refused = Unauthorized("The receipt is not signed by an active key of your organisation for this broker.",
                           code="invalid_receipt")
    claims = verify_org_message(session, receipt, principal.org_id, RECEIPT, audience=settings.issuer, error=refused)
    receipt_id = claims.get("receipt_id") or claims.get("jti")
    if not isinstance(receipt_id, str) or not 8 <= len(receipt_id) <= 128:
        raise BadRequest("The receipt needs a receipt_id of 8-128 characters.", code="invalid_receipt")
    seen = session.get(DataplaneReceipt, receipt_id)
    if seen is not None:
        if seen.provider_id != principal.org_id:
            raise Conflict("This receipt id is taken.", code="receipt_conflict")
        return {"receipt_id": receipt_id, "recorded": False}
    kind = claims.get("kind", "transfer")
    agreement = contracts.get_agreement(session, str(claims.get("agr")))  # NotFound agreement_not_found
    if agreement.provider_id != principal.org_id:
        raise Forbidden("The receipt names an agreement of another provider.", code="not_your_receipt")
    tp = None
    if kind == "transfer":
        decision = session.get(DataplaneDecision, str(claims.get("decision_id")))
        tp = session.get(TransferProcess, str(claims.get("tpid")))
        if (decision is None or tp is None or decision.provider_id != principal.org_id
                or tp.provider_id != principal.org_id or decision.transfer_id != tp.id
                or tp.agreement_id != agreement.id or claims.get("sub") != tp.consumer_id):
            raise Forbidden("The receipt does not name a decision, transfer and agreement of yours.",
                            code="not_your_receipt")
        ref = decision.decision_id
    elif kind == "query":
        ref = str(claims.get("query_id") or "")
        if not ref:
            raise BadRequest("A query receipt names its query_id.", code="invalid_receipt")
    else:
        raise BadRequest("A receipt's kind is transfer or query.", code="invalid_receipt")
    rows, nbytes = _int(claims.get("rows")), _int(claims.get("bytes"))
    sha = str(claims.get("sha256") or "")[:64]
    session.add(DataplaneReceipt(receipt_id=receipt_id, kind=kind, transfer_id=tp.id if tp else None,
                                 agreement_id=agreement.id, decision_id=ref[:128], provider_id=principal.org_id,
                                 sha256=sha, rows=rows, bytes=nbytes))
    session.flush()
    if kind == "transfer" and tp is not None:
        record_usage(session, agreement.id, rows)
        # Increments in SQL: concurrent receipts of one transfer must not overwrite each other's counts.
        tp.pulls = TransferProcess.pulls + 1
        tp.rows_served = TransferProcess.rows_served + rows
        tp.updated_at = contracts.now()
        session.add(tp)
    record_event(session, "transfer.receipt", actor=principal.org_id, asset_id=agreement.asset_id,
                 agreement_id=agreement.id, outcome="ok" if claims.get("complete", True) else "error",
                 details={"claims": claims, "jws": receipt})
    return {"receipt_id": receipt_id, "recorded": True}


MAX_RECEIPT_BATCH = 512


def record_receipts(session: Session, settings, principal: Any, receipts: list[str]) -> dict[str, Any]:
    """``POST /dataplane/receipts`` with ``receipts``: many at once (a connector delivers what concurrent
    pulls produced together), checked one by one exactly as ``record_receipt`` checks one — a refused
    receipt is reported with its problem and does not stop the others — and written together: the
    signer's keys, agreements, decisions and transfers are read once per batch, the receipts inserted in
    one statement, usage and transfer counters incremented once per agreement and transfer, one audit
    entry per receipt."""
    if len(receipts) > MAX_RECEIPT_BATCH:
        raise BadRequest(f"At most {MAX_RECEIPT_BATCH} receipts per request.", code="too_many_receipts")
    results: list[dict[str, Any] | None] = [None] * len(receipts)
    accepted = _verify_batch(session, settings, principal, receipts, results)
    try:
        with session.begin_nested():
            events = _write_batch(session, principal, accepted, results)
    except IntegrityError:  # a receipt recorded meanwhile by a concurrent delivery: one by one instead
        return _one_by_one(session, settings, principal, receipts)
    for kind, kwargs in events:
        record_event(session, kind, **kwargs)
    return {"results": results, "recorded": sum(1 for r in results if r and r.get("recorded"))}


def _problem(exc: TwinSpaceError) -> dict[str, Any]:
    return {"error": {"status": exc.status, "code": exc.code, "detail": exc.detail}}


def _verify_batch(session: Session, settings, principal: Any, receipts: list[str],
                  results: list) -> list[tuple[int, str, dict[str, Any], str]]:
    """Signatures and shapes; query receipts (rare) are recorded one by one here. Fills ``results`` with
    the refusals; returns the transfer receipts still to check against the database."""
    from broker.catalog.endpoints import org_public_key
    from twinspace.dataplane import message_header, verify_message

    refused = Unauthorized("The receipt is not signed by an active key of your organisation for this broker.",
                           code="invalid_receipt")
    keys: dict[str, Any] = {}
    out = []
    for i, token in enumerate(receipts):
        try:
            kid = message_header(token)["kid"]
            if kid not in keys:
                keys[kid] = org_public_key(session, principal.org_id, kid)
            if keys[kid] is None:
                raise refused
            try:
                claims = verify_message(token, keys[kid], RECEIPT, audience=settings.issuer, issuer=principal.org_id)
            except TwinSpaceError:
                raise refused from None
            if claims.get("kind", "transfer") != "transfer":
                with session.begin_nested():
                    results[i] = record_receipt(session, settings, principal, token)
                continue
            receipt_id = claims.get("receipt_id") or claims.get("jti")
            if not isinstance(receipt_id, str) or not 8 <= len(receipt_id) <= 128:
                raise BadRequest("The receipt needs a receipt_id of 8-128 characters.", code="invalid_receipt")
        except TwinSpaceError as exc:
            results[i] = _problem(exc)
            continue
        out.append((i, receipt_id, claims, token))
    return out


def _by_id(session: Session, model, column, ids) -> dict[str, Any]:
    ids = list({str(i) for i in ids})
    if not ids:
        return {}
    return {getattr(row, column.key): row for row in session.exec(select(model).where(col(column).in_(ids)))}


def _write_batch(session: Session, principal: Any, accepted: list, results: list) -> list:
    from collections import Counter

    from broker.contracts.models import Agreement
    from broker.policy.service import record_usage

    existing = _by_id(session, DataplaneReceipt, DataplaneReceipt.receipt_id, [a[1] for a in accepted])
    agreements = _by_id(session, Agreement, Agreement.id, [a[2].get("agr") for a in accepted])
    decisions = _by_id(session, DataplaneDecision, DataplaneDecision.decision_id, [a[2].get("decision_id") for a in accepted])
    transfers = _by_id(session, TransferProcess, TransferProcess.id, [a[2].get("tpid") for a in accepted])
    now = contracts.now()
    rows, events, seen = [], [], set()
    usage, accesses, pulls = Counter(), Counter(), Counter()
    served = Counter()
    not_yours = Forbidden("The receipt does not name a decision, transfer and agreement of yours.",
                          code="not_your_receipt")
    for i, receipt_id, claims, token in accepted:
        try:
            if receipt_id in existing or receipt_id in seen:
                owner = existing[receipt_id].provider_id if receipt_id in existing else principal.org_id
                if owner != principal.org_id:
                    raise Conflict("This receipt id is taken.", code="receipt_conflict")
                results[i] = {"receipt_id": receipt_id, "recorded": False}
                continue
            agreement = agreements.get(str(claims.get("agr")))
            if agreement is None:
                raise NotFound(f"No agreement {claims.get('agr')}.", code="agreement_not_found")
            if agreement.provider_id != principal.org_id:
                raise Forbidden("The receipt names an agreement of another provider.", code="not_your_receipt")
            decision = decisions.get(str(claims.get("decision_id")))
            tp = transfers.get(str(claims.get("tpid")))
            if (decision is None or tp is None or decision.provider_id != principal.org_id
                    or tp.provider_id != principal.org_id or decision.transfer_id != tp.id
                    or tp.agreement_id != agreement.id or claims.get("sub") != tp.consumer_id):
                raise not_yours
        except TwinSpaceError as exc:
            results[i] = _problem(exc)
            continue
        count, nbytes = _int(claims.get("rows")), _int(claims.get("bytes"))
        seen.add(receipt_id)
        rows.append({"receipt_id": receipt_id, "kind": "transfer", "transfer_id": tp.id, "agreement_id": agreement.id,
                     "decision_id": decision.decision_id[:128], "provider_id": principal.org_id,
                     "sha256": str(claims.get("sha256") or "")[:64], "rows": count, "bytes": nbytes,
                     "acknowledged": False, "created_at": now})
        usage[agreement.id] += count
        accesses[agreement.id] += 1
        pulls[tp.id] += 1
        served[tp.id] += count
        events.append(("transfer.receipt", {
            "actor": principal.org_id, "asset_id": agreement.asset_id, "agreement_id": agreement.id,
            "outcome": "ok" if claims.get("complete", True) else "error",
            "details": {"claims": claims, "jws": token}}))
        results[i] = {"receipt_id": receipt_id, "recorded": True}
    if rows:
        session.execute(insert(DataplaneReceipt), rows)
        for agreement_id, count in usage.items():
            record_usage(session, agreement_id, count, accesses=accesses[agreement_id])
        for tp_id, n in pulls.items():  # increments in SQL: concurrent batches never overwrite each other
            session.execute(update(TransferProcess).where(TransferProcess.id == tp_id).values(
                pulls=TransferProcess.pulls + n, rows_served=TransferProcess.rows_served + served[tp_id],
                updated_at=now))
    return events


def _one_by_one(session: Session, settings, principal: Any, receipts: list[str]) -> dict[str, Any]:
    from sqlalchemy.exc import IntegrityError as Duplicate

    results: list[dict[str, Any]] = []
    for receipt in receipts:
        try:
            with session.begin_nested():
                results.append(record_receipt(session, settings, principal, receipt))
        except TwinSpaceError as exc:
            results.append(_problem(exc))
        except Duplicate:  # recorded by the concurrent delivery: already counted
            results.append({"recorded": False, "duplicate": True})
    return {"results": results, "recorded": sum(1 for r in results if r.get("recorded"))}


def acknowledge(session: Session, settings, principal: Any, transfer_id: str, ack: str) -> dict[str, Any]:
    """``POST /transfers/{pid}/acknowledgements``: the consumer's countersignature of a receipt."""
    tp = session.get(TransferProcess, transfer_id)
    if tp is None or tp.consumer_id != principal.org_id:
        raise NotFound(f"No transfer process {transfer_id}.", code="transfer_not_found")
    refused = Unauthorized("The acknowledgement is not signed by an active key of your organisation for this "
                           "broker.", code="invalid_ack")
    claims = verify_org_message(session, ack, principal.org_id, ACK, audience=settings.issuer, error=refused)
    receipt = session.get(DataplaneReceipt, str(claims.get("receipt_id")))
    if receipt is None or receipt.transfer_id != tp.id or claims.get("tpid") != tp.id:
        raise NotFound("No receipt of this transfer with that id.", code="receipt_not_found")
    matches = claims.get("sha256") == receipt.sha256 and (claims.get("bytes") in (None, receipt.bytes))
    if matches and not receipt.acknowledged:
        receipt.acknowledged = True
        session.add(receipt)
    record_event(session, "transfer.acknowledged", actor=principal.org_id, asset_id=tp.asset_id,
                 agreement_id=tp.agreement_id, outcome="ok" if matches else "error",
                 details={"transfer_id": tp.id, "receipt_id": receipt.receipt_id, "matches": matches,
                          "sha256": claims.get("sha256"), "bytes": claims.get("bytes"), "jws": ack})
    return {"receipt_id": receipt.receipt_id, "matches": matches}

