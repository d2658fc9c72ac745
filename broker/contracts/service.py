"""Contract negotiation, signatures, finalisation, revocation and the agreement checks every access
makes. No FastAPI imports; callers pass the authenticated ``Principal``.

Who sends what (DSP contract negotiation, the broker hosting both parties' endpoints):

=========================================  ========  ======================================
message                                    sender    transition
=========================================  ========  ======================================
ContractRequestMessage                     consumer  (new) / OFFERED → REQUESTED
ContractOfferMessage                       provider  REQUESTED → OFFERED
ContractNegotiationEventMessage ACCEPTED   consumer  OFFERED → ACCEPTED
ContractAgreementMessage (+ provider sig)  provider  REQUESTED / ACCEPTED → AGREED
ContractAgreementVerificationMessage (+sig) consumer AGREED → VERIFIED
ContractNegotiationEventMessage FINALIZED  provider  VERIFIED → FINALIZED (broker countersigns)
ContractNegotiationTerminationMessage      either    any non-terminal → TERMINATED
=========================================  ========  ======================================
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session, col, select

from broker.audit import record_event
from twinspace.canonical import canonical_json
from twinspace import agreements
from twinspace.dsp.messages import (ContractAgreementMessage, ContractAgreementVerificationMessage,
                                       ContractNegotiationEventMessage, ContractNegotiationTerminationMessage,
                                       ContractOfferMessage, ContractRequestMessage, negotiation_message,
                                       offer_iri, parse_offer_iri)
from broker.contracts.models import Agreement, ContractNegotiation
from twinspace.dsp.states import NegotiationState as S
from twinspace.dsp.states import check_negotiation
from twinspace.crypto import public_key_b64
from twinspace.errors import BadRequest, Conflict, Forbidden, Gone, NotFound, Unprocessable
from broker.settings import Settings

READ_ALL_ROLES = ("operator", "auditor")


def now() -> datetime:
    """The service clock (tests move it to exercise expiry)."""
    return datetime.now(timezone.utc)


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _parse_time(text: str, field: str) -> datetime:
    try:
        value = agreements.parse_iso(text)
    except ValueError:
        raise BadRequest(f"{field} must be an ISO 8601 date-time.", code="invalid_time") from None
    return _utc(value)


# --------------------------------------------------------------------------- lookups
def get_negotiation(session: Session, negotiation_id: str, principal: Any, *, lock: bool = False) -> ContractNegotiation:
    """A negotiation the principal is party to (operators and auditors see all); NotFound otherwise."""
    stmt = select(ContractNegotiation).where(ContractNegotiation.id == negotiation_id)
    if lock:
        stmt = stmt.with_for_update()
    neg = session.exec(stmt).first()
    if neg is None or (principal.role not in READ_ALL_ROLES
                       and principal.org_id not in (neg.consumer_id, neg.provider_id)):
        raise NotFound(f"No negotiation {negotiation_id}.", code="negotiation_not_found")
    return neg


def get_agreement(session: Session, agreement_id: str, principal: Any | None = None) -> Agreement:
    agreement = session.get(Agreement, agreement_id)
    if agreement is None or (principal is not None and principal.role not in READ_ALL_ROLES
                             and principal.org_id not in (agreement.consumer_id, agreement.provider_id)):
        raise NotFound(f"No agreement {agreement_id}.", code="agreement_not_found")
    return agreement


def list_negotiations(session: Session, principal: Any, *, state: str | None = None,
                      limit: int = 100) -> list[ContractNegotiation]:
    stmt = select(ContractNegotiation).order_by(col(ContractNegotiation.created_at).desc()).limit(limit)
    if principal.role not in READ_ALL_ROLES:
        stmt = stmt.where((ContractNegotiation.consumer_id == principal.org_id)
                          | (ContractNegotiation.provider_id == principal.org_id))
    if state:
        stmt = stmt.where(ContractNegotiation.state == state)
    return list(session.exec(stmt).all())


def list_agreements(session: Session, principal: Any, *, status: str | None = None,
                    asset_id: str | None = None, limit: int = 100) -> list[Agreement]:
    stmt = select(Agreement).order_by(col(Agreement.created_at).desc()).limit(limit)
    if principal.role not in READ_ALL_ROLES:
        stmt = stmt.where((Agreement.consumer_id == principal.org_id) | (Agreement.provider_id == principal.org_id))
    if status:
        stmt = stmt.where(Agreement.status == status)
    if asset_id:
        stmt = stmt.where(Agreement.asset_id == asset_id)
    return list(session.exec(stmt).all())


def _require_party(neg: ContractNegotiation, principal: Any, role: str) -> None:
    expected = neg.consumer_id if role == "consumer" else neg.provider_id
    if principal.org_id != expected:
        raise Forbidden(f"Only the negotiation's {role} sends this message.", code="wrong_party")


def _check_pids(neg: ContractNegotiation, provider_pid: str, consumer_pid: str) -> None:
    if provider_pid != neg.id or consumer_pid != neg.consumer_pid:
        raise BadRequest("providerPid/consumerPid do not identify this negotiation.", code="pid_mismatch")


def _move(session: Session, neg: ContractNegotiation, target: S, *, actor: str, kind: str,
          details: dict[str, Any] | None = None) -> None:
    previous = neg.state
    check_negotiation(previous, target.value)
    neg.state = target.value
    neg.updated_at = now()
    session.add(neg)
    session.flush()
    record_event(session, kind, actor=actor, asset_id=neg.asset_id, agreement_id=neg.agreement_id,
                 details={"negotiation_id": neg.id, "from": previous, "to": target.value, **(details or {})})


# --------------------------------------------------------------------------- negotiation
def _precheck(session: Session, settings: Settings, principal: Any, asset, params: dict[str, Any],
              purpose: str, scenario: str | None, policy_id: str, policy_version: str) -> dict[str, Any]:
    """An advisory ``negotiate`` decision for the provider (every access is decided again anyway, through
    ``ACCESS_DECIDER``). Without a usable policy engine the precheck is recorded as unavailable."""
    from broker.catalog.service import asset_policy_view

    try:
        from broker.policy import service as policy_service
        from broker.policy.input import build_policy_input

        approvals = policy_service.approvals_for(session, asset.id, principal.org_id)
        decide = policy_service.decide
    except (ImportError, AttributeError) as exc:
        return {"allow": None, "reasons": [f"policy engine unavailable ({type(exc).__name__})"], "input_hash": None}
    policy_input = build_policy_input(principal=principal, action="negotiate", asset=asset_policy_view(asset),
                                      params=params, request={"purpose": purpose, "scenario": scenario},
                                      approvals=approvals)
    decision = decide(session, settings, policy_id, policy_input, version=policy_version,
                      actor=principal.org_id, asset_id=asset.id)
    return {"allow": decision.allow, "reasons": decision.reasons, "input_hash": decision.input_hash}


def _policy_version(session: Session, settings: Settings, policy_id: str) -> str:
    """The policy version the agreement pins; ``unresolved`` when no policy engine is installed."""
    try:
        from broker.policy import service as policy_service

        resolve = policy_service.resolve_source
    except (ImportError, AttributeError):
        return "unresolved"
    return resolve(session, settings, policy_id, None).version


def _validity_end(settings: Settings, start: datetime, requested: datetime | None) -> datetime:
    longest = start + timedelta(days=settings.contract_max_validity_days)
    end = requested or start + timedelta(days=settings.contract_default_validity_days)
    if end <= start:
        raise BadRequest("The requested validity ends in the past.", code="invalid_validity")
    if end > longest:
        raise BadRequest(f"Agreements last at most {settings.contract_max_validity_days} days.",
                         code="invalid_validity")
    return end


def request_contract(session: Session, settings: Settings, principal: Any,
                     msg: ContractRequestMessage) -> ContractNegotiation:
    """ContractRequestMessage: start a negotiation (or counter-request an OFFERED one)."""
    from broker.catalog.service import can_see, get_asset

    parsed = parse_offer_iri(msg.offer.id)
    if parsed is None:
        raise BadRequest("offer @id must be a catalog offer IRI (urn:twinspace:offer:<asset>:v<n>:<offer>).",
                         code="invalid_offer")
    asset_id, version, offer_id = parsed
    try:
        asset = get_asset(session, asset_id, version)
    except NotFound:
        raise NotFound("No such offer in the catalog.", code="offer_not_found") from None
    if not can_see(asset, org_id=principal.org_id, role=principal.role, org_type=principal.org_type,
                   attributes=principal.attributes):
        raise NotFound("No such offer in the catalog.", code="offer_not_found")
    if asset.status != "active" or not asset.is_latest:
        raise Gone("This offer is for an asset version that is no longer current.", code="offer_outdated")
    offer = next((o for o in asset.offers if o["id"] == offer_id), None)
    if offer is None:
        raise NotFound("No such offer in the catalog.", code="offer_not_found")
    requested_end = _parse_time(msg.not_after, "twin:notAfter") if msg.not_after else None
    _validity_end(settings, now(), requested_end)

    if msg.providerPid:  # counter-request on an existing negotiation
        neg = get_negotiation(session, msg.providerPid, principal, lock=True)
        _require_party(neg, principal, "consumer")
        _check_pids(neg, msg.providerPid, msg.consumerPid)
        if (neg.asset_id, neg.asset_version, neg.offer_id) != (asset_id, version, offer_id):
            raise Conflict("A counter-request must stay on the same offer.", code="offer_changed")
        neg.purpose, neg.scenario, neg.requested_not_after = msg.purpose, msg.scenario, requested_end
        neg.draft = None
        _move(session, neg, S.REQUESTED, actor=principal.org_id, kind="contract.requested",
              details={"counter_request": True, "purpose": msg.purpose, "scenario": msg.scenario})
        return neg

    taken = session.exec(select(ContractNegotiation).where(ContractNegotiation.consumer_id == principal.org_id,
                                                           ContractNegotiation.consumer_pid == msg.consumerPid)).first()
    if taken is not None:
        raise Conflict("This consumerPid is already in use.", code="consumer_pid_in_use")
    policy_version = _policy_version(session, settings, offer["policy_id"])
    params = dict(offer.get("params") or {})
    neg = ContractNegotiation(
        id="neg_" + secrets.token_hex(12), consumer_pid=msg.consumerPid, consumer_id=principal.org_id,
        provider_id=asset.provider_id, asset_id=asset.id, asset_version=asset.version,
        content_hash=asset.content_hash, offer_id=offer_id, policy_id=offer["policy_id"],
        policy_version=policy_version, offer_params=params, terms={}, purpose=msg.purpose, scenario=msg.scenario,
        requested_not_after=requested_end, state=S.REQUESTED.value, callback_address=msg.callbackAddress,
        precheck={})
    neg.precheck = _precheck(session, settings, principal, asset, params, msg.purpose, msg.scenario,
                             offer["policy_id"], policy_version)
    check_negotiation(None, S.REQUESTED.value)
    session.add(neg)
    session.flush()
    record_event(session, "contract.requested", actor=principal.org_id, asset_id=asset.id,
                 details={"negotiation_id": neg.id, "to": "REQUESTED", "offer": offer_iri(asset.id, asset.version,
                                                                                           offer_id),
                          "purpose": msg.purpose, "scenario": msg.scenario, "policy_id": offer["policy_id"],
                          "policy_version": policy_version, "precheck_allow": neg.precheck["allow"]})
    return neg


def offer_contract(session: Session, principal: Any, negotiation_id: str, msg: ContractOfferMessage) -> ContractNegotiation:
    """ContractOfferMessage from the provider: the terms it offers (may narrow the catalog offer)."""
    from broker.catalog.service import get_asset

    neg = get_negotiation(session, negotiation_id, principal, lock=True)
    _require_party(neg, principal, "provider")
    _check_pids(neg, msg.providerPid, msg.consumerPid)
    if msg.offer.id != offer_iri(neg.asset_id, neg.asset_version, neg.offer_id):
        raise Conflict("The offer must be the one under negotiation.", code="offer_changed")
    terms: dict[str, Any] = {}
    t = msg.offer.terms
    if t is not None:
        asset = get_asset(session, neg.asset_id, neg.asset_version)
        names = [c["name"] for c in asset.columns]
        if t.columns is not None:
            unknown = [c for c in t.columns if c not in names]
            if unknown:
                raise Unprocessable(f"Unknown columns: {', '.join(unknown[:10])}", code="unknown_columns")
            terms["columns"] = [c for c in names if c in set(t.columns)]  # table order, no duplicates
        if t.max_rows is not None:
            terms["max_rows"] = t.max_rows
        if t.not_after is not None:
            terms["not_after"] = agreements.iso(_parse_time(t.not_after, "terms.not_after"))
        if t.params:
            reserved = {"max_rows", "columns"} & set(t.params)
            if reserved:
                raise BadRequest("Set max_rows/columns as terms, not params.", code="invalid_terms")
            terms["params"] = dict(t.params)
    neg.terms = terms
    neg.draft = None
    _move(session, neg, S.OFFERED, actor=principal.org_id, kind="contract.offered", details={"terms": terms})
    return neg


def negotiation_event(session: Session, settings: Settings, broker_key: Ed25519PrivateKey, principal: Any,
                      negotiation_id: str, msg: ContractNegotiationEventMessage) -> ContractNegotiation:
    neg = get_negotiation(session, negotiation_id, principal, lock=True)
    _check_pids(neg, msg.providerPid, msg.consumerPid)
    if msg.eventType == "ACCEPTED":
        _require_party(neg, principal, "consumer")
        _move(session, neg, S.ACCEPTED, actor=principal.org_id, kind="contract.accepted")
        return neg
    _require_party(neg, principal, "provider")
    return _finalize(session, settings, broker_key, principal, neg)


def _effective_terms(neg: ContractNegotiation, settings: Settings, start: datetime) -> tuple[dict, dict, datetime]:
    params = {**neg.offer_params, **(neg.terms.get("params") or {})}
    obligations: dict[str, Any] = {}
    for key in ("max_rows", "columns"):
        if key in neg.terms:
            obligations[key] = neg.terms[key]
            params[key] = neg.terms[key]
        elif key in neg.offer_params:
            obligations[key] = neg.offer_params[key]
    ends = [e for e in (neg.requested_not_after,
                        agreements.parse_iso(neg.terms["not_after"]) if neg.terms.get("not_after") else None) if e]
    end = _validity_end(settings, start, min(_utc(e) for e in ends) if ends else None)
    return params, obligations, end


def agreement_draft(session: Session, settings: Settings, principal: Any, negotiation_id: str) -> dict[str, Any]:
    """The exact document the provider will sign (created once per offer round, then stable)."""
    from broker.catalog.dcat import dataset_iri
    from broker.catalog.service import get_asset

    neg = get_negotiation(session, negotiation_id, principal, lock=True)
    _require_party(neg, principal, "provider")
    if neg.state not in (S.REQUESTED.value, S.ACCEPTED.value):
        raise Conflict(f"An agreement can be drafted only in REQUESTED or ACCEPTED, not {neg.state}.",
                       code="invalid_transition")
    if neg.draft is None:
        issued = now()
        params, obligations, end = _effective_terms(neg, settings, issued)
        asset = get_asset(session, neg.asset_id, neg.asset_version)
        neg.draft = agreements.agreement_document(
            agreement_id="agr_" + secrets.token_hex(12), negotiation_id=neg.id, asset_id=neg.asset_id,
            asset_version=neg.asset_version, content_hash=neg.content_hash, dataset=dataset_iri(asset),
            offer_id=neg.offer_id, provider_id=neg.provider_id, consumer_id=neg.consumer_id, purpose=neg.purpose,
            scenario=neg.scenario, policy_id=neg.policy_id, policy_version=neg.policy_version, policy_params=params,
            obligations=obligations, not_before=issued, not_after=end, issued_at=issued, issuer=settings.issuer)
        session.add(neg)
        session.flush()
    return neg.draft


def _check_party_signature(session: Session, entry: dict[str, Any], document: dict[str, Any], *, role: str,
                           org_id: str) -> dict[str, Any]:
    """Refuse a signature by another org, an unknown or revoked key, or over other bytes."""
    from broker.identity.service import active_key

    if entry.get("role") != role or entry.get("org_id") != org_id:
        raise Forbidden(f"The {role} signature must be made by {org_id}.", code="wrong_signer")
    org, key = active_key(session, entry["kid"])  # Unauthorized unknown_key / revoked_key
    if key.org_id != org_id:
        raise Forbidden("The signing key belongs to another organisation.", code="wrong_signer")
    if not agreements.verify_signature_entry(entry, document, key.public_key):
        raise BadRequest(f"The {role} signature does not verify over the RFC 8785 canonical agreement document.",
                         code="invalid_signature")
    return agreements.public_key_entry(key.kid, org.id, org.role, key.public_key, key.status)


def agree(session: Session, principal: Any, negotiation_id: str, msg: ContractAgreementMessage) -> ContractNegotiation:
    """ContractAgreementMessage: the provider's signed agreement; must be exactly the broker's draft."""
    neg = get_negotiation(session, negotiation_id, principal, lock=True)
    _require_party(neg, principal, "provider")
    _check_pids(neg, msg.providerPid, msg.consumerPid)
    check_negotiation(neg.state, S.AGREED.value)
    if neg.draft is None:
        raise Conflict("Fetch the agreement draft first (POST /contracts/negotiations/{id}/agreement-draft).",
                       code="no_draft")
    if canonical_json(msg.agreement) != canonical_json(neg.draft):
        raise Conflict("The agreement differs from the drafted document.", code="agreement_mismatch")
    entry = msg.signature.model_dump()
    key = _check_party_signature(session, entry, neg.draft, role="provider", org_id=neg.provider_id)
    doc = neg.draft
    agreement = _new_agreement(neg, doc, [entry], [key])
    session.add(agreement)
    neg.agreement_id = agreement.id
    _move(session, neg, S.AGREED, actor=principal.org_id, kind="contract.agreed",
          details={"document_sha256": agreement.document_sha256})
    record_event(session, "contract.signed", actor=principal.org_id, asset_id=neg.asset_id, agreement_id=agreement.id,
                 details={"role": "provider", "kid": entry["kid"], "document_sha256": agreement.document_sha256})
    return neg


def verify_agreement(session: Session, principal: Any, negotiation_id: str,
                     msg: ContractAgreementVerificationMessage) -> ContractNegotiation:
    """ContractAgreementVerificationMessage: the consumer's signature over the same document."""
    neg = get_negotiation(session, negotiation_id, principal, lock=True)
    _require_party(neg, principal, "consumer")
    _check_pids(neg, msg.providerPid, msg.consumerPid)
    check_negotiation(neg.state, S.VERIFIED.value)
    agreement = get_agreement(session, neg.agreement_id)
    if not any(s.get("role") == "provider" for s in agreement.signatures):
        raise Conflict("The provider has not signed yet.", code="missing_signature")
    entry = msg.signature.model_dump()
    key = _check_party_signature(session, entry, agreement.document, role="consumer", org_id=neg.consumer_id)
    agreement.signatures = [*agreement.signatures, entry]
    agreement.registry_keys = [*agreement.registry_keys, key]
    agreement.status = S.VERIFIED.value
    session.add(agreement)
    _move(session, neg, S.VERIFIED, actor=principal.org_id, kind="contract.verified")
    record_event(session, "contract.signed", actor=principal.org_id, asset_id=neg.asset_id, agreement_id=agreement.id,
                 details={"role": "consumer", "kid": entry["kid"], "document_sha256": agreement.document_sha256})
    return neg


def _finalize(session: Session, settings: Settings, broker_key: Ed25519PrivateKey, principal: Any,
              neg: ContractNegotiation) -> ContractNegotiation:
    """FINALIZED event from the provider: re-check both signatures against the live registry (a key
    revoked meanwhile is refused), check the asset version is unchanged, then countersign."""
    from broker.catalog.service import get_asset

    check_negotiation(neg.state, S.FINALIZED.value)
    agreement = get_agreement(session, neg.agreement_id)
    keys = []
    for role in agreements.PARTY_ROLES:
        entries = [s for s in agreement.signatures if s["role"] == role]
        if len(entries) != 1:
            raise Conflict(f"The agreement lacks the {role} signature.", code="missing_signature")
        keys.append(_check_party_signature(session, entries[0], agreement.document, role=role,
                                           org_id=getattr(agreement, f"{role}_id")))
    latest = get_asset(session, agreement.asset_id)
    if latest.version != agreement.asset_version or latest.content_hash != agreement.content_hash:
        raise Conflict("The asset changed since the offer; negotiate the new version.", code="asset_version_changed")
    finalized = now()
    payload = agreements.countersignature_payload(agreement.document, agreement.signatures, keys,
                                               finalized_at=finalized, issuer=settings.issuer)
    agreement.countersignature = agreements.countersign(broker_key, payload)
    agreement.registry_keys = keys
    agreement.status = S.FINALIZED.value
    agreement.finalized_at = finalized
    session.add(agreement)
    _move(session, neg, S.FINALIZED, actor=principal.org_id, kind="contract.finalized",
          details={"document_sha256": agreement.document_sha256})
    record_event(session, "contract.countersigned", actor="broker", asset_id=neg.asset_id, agreement_id=agreement.id,
                 details={"kid": agreement.countersignature["kid"], "document_sha256": agreement.document_sha256,
                          "not_after": agreement.document["validity"]["not_after"]})
    return neg


def terminate(session: Session, principal: Any, negotiation_id: str,
              msg: ContractNegotiationTerminationMessage) -> ContractNegotiation:
    neg = get_negotiation(session, negotiation_id, principal, lock=True)
    if principal.role != "operator" and principal.org_id not in (neg.consumer_id, neg.provider_id):
        raise Forbidden("Only a party or the operator terminates a negotiation.", code="wrong_party")
    if principal.role == "auditor":
        raise Forbidden("Auditors observe; they do not terminate negotiations.", code="wrong_party")
    _check_pids(neg, msg.providerPid, msg.consumerPid)
    check_negotiation(neg.state, S.TERMINATED.value)
    if neg.agreement_id:
        agreement = get_agreement(session, neg.agreement_id)
        agreement.status = S.TERMINATED.value
        session.add(agreement)
    _move(session, neg, S.TERMINATED, actor=principal.org_id, kind="contract.terminated",
          details={"code": msg.code, "reason": [str(r)[:200] for r in (msg.reason or [])][:5]})
    return neg


# --------------------------------------------------------------------------- after finalisation
# What else ends when an agreement is revoked. Features above contracts (transfer) register here, so that
# revocation takes effect at once without contracts importing them; each hook returns how many it ended.
ON_REVOKE: list[Callable[[Session, str, str], int]] = []


def revoke(session: Session, principal: Any, agreement_id: str, reason: str | None = None) -> Agreement:
    """Provider (of this agreement) or operator revokes; effective on the next access."""
    agreement = get_agreement(session, agreement_id, principal)
    if not (principal.role == "operator" or principal.org_id == agreement.provider_id):
        raise Forbidden("Only the agreement's provider or the operator revokes it.", code="wrong_party")
    if agreement.status == "REVOKED":
        return agreement
    if agreement.status != S.FINALIZED.value:
        raise Conflict(f"Only a finalised agreement can be revoked (this one is {agreement.status}); "
                       "terminate the negotiation instead.", code="agreement_not_finalized")
    agreement.status = "REVOKED"
    agreement.revoked_at = now()
    agreement.revoked_by = principal.org_id
    agreement.revocation_reason = (reason or "")[:500] or None
    session.add(agreement)
    session.flush()
    ended = sum(hook(session, agreement.id, principal.org_id) for hook in ON_REVOKE)
    record_event(session, "contract.revoked", actor=principal.org_id, asset_id=agreement.asset_id,
                 agreement_id=agreement.id, details={"by_role": principal.role, "reason": agreement.revocation_reason,
                                                     "transfers_terminated": ended})
    return agreement


def _row_matches_document(a: Agreement) -> bool:
    """Defence against edits to the indexed columns: they must agree with the signed document."""
    d = a.document
    try:
        return (agreements.document_sha256(d) == a.document_sha256 and d["id"] == a.id
                and d["consumer_id"] == a.consumer_id and d["provider_id"] == a.provider_id
                and d["asset"]["id"] == a.asset_id and d["asset"]["version"] == a.asset_version
                and d["asset"]["content_hash"] == a.content_hash
                and agreements.parse_iso(d["validity"]["not_after"]) == _utc(a.not_after)
                and agreements.parse_iso(d["validity"]["not_before"]) == _utc(a.not_before)
                and d["policy"]["id"] == a.policy_id and d["policy"]["version"] == a.policy_version
                and d["obligations"] == a.obligations and d["policy"]["params"] == a.policy_params)
    except (KeyError, TypeError, ValueError):
        return False


def require_active_agreement(session: Session, agreement_id: str, consumer_id: str) -> Agreement:
    """The agreement, if ``consumer_id`` may use it right now. Raises NotFound ``agreement_not_found``,
    Forbidden ``not_agreement_consumer``, Conflict ``agreement_not_finalized``, Gone ``agreement_revoked``
    / ``agreement_expired`` / ``asset_withdrawn``, Forbidden ``agreement_not_yet_valid``, Conflict
    ``asset_version_changed``, ServiceUnavailable ``agreement_integrity``."""
    from broker.catalog.service import get_asset
    from twinspace.errors import ServiceUnavailable

    agreement = session.get(Agreement, agreement_id)
    if agreement is None:
        raise NotFound(f"No agreement {agreement_id}.", code="agreement_not_found")
    if agreement.consumer_id != consumer_id:
        raise Forbidden("This agreement belongs to another consumer.", code="not_agreement_consumer")
    if agreement.status == "REVOKED":
        raise Gone("The agreement was revoked.", code="agreement_revoked")
    if agreement.status != S.FINALIZED.value or not agreement.countersignature:
        raise Conflict(f"The agreement is not finalised (status {agreement.status}).", code="agreement_not_finalized")
    if not _row_matches_document(agreement):
        raise ServiceUnavailable("The stored agreement does not match its signed document.",
                                 code="agreement_integrity")
    t = now()
    if t < _utc(agreement.not_before):
        raise Forbidden("The agreement is not yet valid.", code="agreement_not_yet_valid")
    if t >= _utc(agreement.not_after):
        raise Gone("The agreement has expired.", code="agreement_expired")
    latest = get_asset(session, agreement.asset_id)
    if latest.status == "withdrawn":
        raise Gone("The asset was withdrawn.", code="asset_withdrawn")
    if latest.version != agreement.asset_version or latest.content_hash != agreement.content_hash:
        raise Conflict(f"The asset changed (agreement: v{agreement.asset_version}, now v{latest.version}); "
                       "negotiate the new version.", code="asset_version_changed")
    return agreement


def policy_agreement_view(agreement: Agreement) -> dict[str, Any]:
    """The agreement as ``broker.policy.access.decide_access`` reads it."""
    return {"id": agreement.id, "asset_id": agreement.asset_id, "asset_version": agreement.asset_version,
            "consumer_id": agreement.consumer_id, "provider_id": agreement.provider_id,
            "purpose": agreement.purpose, "scenario": agreement.scenario, "policy_id": agreement.policy_id,
            "policy_version": agreement.policy_version, "policy_params": dict(agreement.policy_params),
            "status": agreement.status, "not_before": _utc(agreement.not_before).timestamp(),
            "not_after": _utc(agreement.not_after).timestamp(), "obligations": dict(agreement.obligations)}


# --------------------------------------------------------------------------- views / export
def negotiation_view(neg: ContractNegotiation) -> dict[str, Any]:
    return {**negotiation_message(consumer_pid=neg.consumer_pid, provider_pid=neg.id, state=neg.state),
            "twin:negotiation": {
                "id": neg.id, "consumer_id": neg.consumer_id, "provider_id": neg.provider_id,
                "asset_id": neg.asset_id, "asset_version": neg.asset_version, "content_hash": neg.content_hash,
                "offer": offer_iri(neg.asset_id, neg.asset_version, neg.offer_id), "policy_id": neg.policy_id,
                "policy_version": neg.policy_version, "offer_params": neg.offer_params, "terms": neg.terms,
                "purpose": neg.purpose, "scenario": neg.scenario, "precheck": neg.precheck,
                "agreement_id": neg.agreement_id, "has_draft": neg.draft is not None,
                "created_at": agreements.iso(_utc(neg.created_at)), "updated_at": agreements.iso(_utc(neg.updated_at))}}


def agreement_view(a: Agreement) -> dict[str, Any]:
    return {"id": a.id, "negotiation_id": a.negotiation_id, "status": a.status, "asset_id": a.asset_id,
            "asset_version": a.asset_version, "content_hash": a.content_hash, "consumer_id": a.consumer_id,
            "provider_id": a.provider_id, "purpose": a.purpose, "scenario": a.scenario, "policy_id": a.policy_id,
            "policy_version": a.policy_version, "policy_params": a.policy_params, "obligations": a.obligations,
            "not_before": agreements.iso(_utc(a.not_before)), "not_after": agreements.iso(_utc(a.not_after)),
            "document": a.document, "document_sha256": a.document_sha256, "signatures": a.signatures,
            "countersignature": a.countersignature,
            "finalized_at": agreements.iso(_utc(a.finalized_at)) if a.finalized_at else None,
            "revoked_at": agreements.iso(_utc(a.revoked_at)) if a.revoked_at else None, "revoked_by": a.revoked_by,
            "revocation_reason": a.revocation_reason}


def export_bundle(session: Session, settings: Settings, broker_key: Ed25519PrivateKey, principal: Any,
                  agreement_id: str) -> dict[str, Any]:
    """The offline-verifiable agreement file (document, signatures, countersignature, public keys)."""
    from broker.identity.models import OrgKey

    agreement = get_agreement(session, agreement_id, principal)
    if not agreement.countersignature:
        raise Conflict("Only a finalised (countersigned) agreement can be exported.", code="agreement_not_finalized")
    keys = []
    for key in agreement.registry_keys:  # current status of the keys attested at finalisation
        row = session.get(OrgKey, key["kid"])
        keys.append({**key, "status": row.status if row else "unknown"})
    status = {"status": agreement.status, "revoked": agreement.status == "REVOKED",
              "revoked_at": agreements.iso(_utc(agreement.revoked_at)) if agreement.revoked_at else None}
    record_event(session, "contract.exported", actor=principal.org_id, asset_id=agreement.asset_id,
                 agreement_id=agreement.id)
    return agreements.bundle(agreement.document, agreement.signatures, agreement.countersignature, keys,
                          issuer=settings.issuer, broker_public_key=public_key_b64(broker_key.public_key()),
                          snapshot_at=now(), status=status)


# --------------------------------------------------------------------------- access hook
AccessDecision = tuple[bool, list[str], dict[str, Any]]


def default_access_decider(session: Session, agreement: Agreement, principal: Any, action: str,
                           usage: dict[str, Any]) -> AccessDecision:
    """Until the policy engine is wired in: allow only finalised (active) agreements, no extra obligations."""
    if agreement.status != S.FINALIZED.value or not agreement.countersignature:
        return False, [f"the agreement is {agreement.status}, not FINALIZED"], {}
    return True, ["the agreement is finalised and countersigned"], {}


# ``(session, agreement, principal, action, usage) -> (allow, reasons, obligations)``. Called on every data
# access after ``require_active_agreement``; the lead points it at the policy engine. Read at call time.
ACCESS_DECIDER: Callable[[Session, Agreement, Any, str, dict[str, Any]], AccessDecision] = default_access_decider


def _log_refusal(session: Session, kind: str, *, actor: str, agreement: Agreement | None,
                 details: dict[str, Any]) -> None:
    """A refused step is audited outside the request transaction. That transaction is rolled back first:
    nothing of a refused request persists, and it must not hold the audit append lock while we log."""
    from broker.audit import log_event

    asset_id, agreement_id = (agreement.asset_id, agreement.id) if agreement is not None else (None, None)
    session.rollback()
    try:
        log_event(session.get_bind(), kind, actor=actor, outcome="denied", asset_id=asset_id,
                  agreement_id=agreement_id, details=details)
    except Exception:  # noqa: BLE001 - auditing a refusal must not mask the refusal itself
        import logging

        logging.getLogger("twinspace.contracts").exception("could not audit %s", kind)


# --------------------------------------------------------------------------- management API (broker-hosted)
def _dsp(msg_type: str, **fields: Any) -> dict[str, Any]:
    return {"@context": [agreements.DSP_CONTEXT, agreements.TWIN_CONTEXT], "@type": msg_type, **fields}


def open_negotiation(session: Session, settings: Settings, principal: Any, *, asset_id: str, offer_id: str,
                     purpose: str, scenario: str | None = None, not_after: str | None = None) -> ContractNegotiation:
    """Consumer: request a negotiation for a catalog offer of the asset's current version."""
    from broker.catalog.service import get_asset

    try:
        asset = get_asset(session, asset_id)
    except NotFound:
        raise NotFound("No such offer in the catalog.", code="offer_not_found") from None
    body = _dsp("ContractRequestMessage", consumerPid="urn:uuid:" + secrets.token_hex(16),
                offer={"@id": offer_iri(asset.id, asset.version, offer_id)}, **{"twin:purpose": purpose})
    if scenario is not None:
        body["twin:scenario"] = scenario
    if not_after is not None:
        body["twin:notAfter"] = not_after
    return request_contract(session, settings, principal, ContractRequestMessage.model_validate(body))


def offer_negotiation(session: Session, principal: Any, negotiation_id: str, *, max_rows: int | None = None,
                      columns: list[str] | None = None, not_after: str | None = None,
                      params: dict[str, Any] | None = None) -> ContractNegotiation:
    """Provider: offer the terms (optionally narrowing the catalog offer: row limit, columns, end date)."""
    neg = get_negotiation(session, negotiation_id, principal)
    terms = {k: v for k, v in (("max_rows", max_rows), ("columns", columns), ("not_after", not_after),
                               ("params", params)) if v is not None}
    offer = {"@id": offer_iri(neg.asset_id, neg.asset_version, neg.offer_id)}
    if terms:
        offer["twin:terms"] = terms
    msg = ContractOfferMessage.model_validate(_dsp("ContractOfferMessage", providerPid=neg.id,
                                                   consumerPid=neg.consumer_pid, offer=offer))
    return offer_contract(session, principal, negotiation_id, msg)


def accept_negotiation(session: Session, settings: Settings, broker_key: Ed25519PrivateKey, principal: Any,
                       negotiation_id: str) -> ContractNegotiation:
    """Consumer: accept the provider's offer (OFFERED → ACCEPTED)."""
    neg = get_negotiation(session, negotiation_id, principal)
    msg = ContractNegotiationEventMessage.model_validate(
        _dsp("ContractNegotiationEventMessage", providerPid=neg.id, consumerPid=neg.consumer_pid, eventType="ACCEPTED"))
    _require_party(neg, principal, "consumer")
    return negotiation_event(session, settings, broker_key, principal, negotiation_id, msg)


def _new_agreement(neg: ContractNegotiation, doc: dict[str, Any], signatures: list[dict[str, Any]],
                   keys: list[dict[str, Any]]) -> Agreement:
    return Agreement(
        id=doc["id"], negotiation_id=neg.id, asset_id=neg.asset_id, asset_version=neg.asset_version,
        content_hash=neg.content_hash, consumer_id=neg.consumer_id, provider_id=neg.provider_id,
        purpose=neg.purpose, scenario=neg.scenario, policy_id=neg.policy_id, policy_version=neg.policy_version,
        policy_params=doc["policy"]["params"], obligations=doc["obligations"],
        not_before=agreements.parse_iso(doc["validity"]["not_before"]),
        not_after=agreements.parse_iso(doc["validity"]["not_after"]), document=doc,
        document_sha256=agreements.document_sha256(doc), signatures=signatures, registry_keys=keys,
        status=S.AGREED.value)


def fix_agreement(session: Session, settings: Settings, principal: Any, negotiation_id: str) -> Agreement:
    """Provider: fix the agreement document (REQUESTED / ACCEPTED → AGREED), unsigned. Both parties then
    sign its RFC 8785 bytes with ``add_signature``; the broker countersigns when both have."""
    neg = get_negotiation(session, negotiation_id, principal, lock=True)
    _require_party(neg, principal, "provider")
    check_negotiation(neg.state, S.AGREED.value)
    doc = agreement_draft(session, settings, principal, negotiation_id)
    agreement = _new_agreement(neg, doc, [], [])
    session.add(agreement)
    neg.agreement_id = agreement.id
    _move(session, neg, S.AGREED, actor=principal.org_id, kind="contract.agreed",
          details={"document_sha256": agreement.document_sha256, "signatures_pending": ["provider", "consumer"]})
    return agreement


def add_signature(session: Session, settings: Settings, broker_key: Ed25519PrivateKey, principal: Any,
                  agreement_id: str, *, kid: str, signature: str) -> Agreement:
    """A party's Ed25519 signature over ``canonical_json(document)``, checked against the signer's active
    registered key. With both signatures present the broker countersigns (AGREED → VERIFIED → FINALIZED)."""
    agreement = get_agreement(session, agreement_id, principal)
    if principal.org_id == agreement.consumer_id and principal.role == "consumer":
        role = "consumer"
    elif principal.org_id == agreement.provider_id and principal.role == "provider":
        role = "provider"
    else:
        raise Forbidden("Only the agreement's consumer or provider signs it.", code="wrong_party")
    neg = get_negotiation(session, agreement.negotiation_id, principal, lock=True)
    session.refresh(agreement)  # read after the lock: a concurrent signature by the other party is not lost
    if neg.state != S.AGREED.value or agreement.status != S.AGREED.value:
        raise Conflict(f"Signatures are collected in AGREED; this negotiation is {neg.state}.",
                       code="invalid_transition", extra={"state": neg.state})
    if any(s.get("role") == role for s in agreement.signatures):
        raise Conflict(f"The {role} has already signed this agreement.", code="already_signed")
    entry = {"role": role, "org_id": principal.org_id, "kid": kid, "alg": "EdDSA", "signature": signature}
    try:
        key = _check_party_signature(session, entry, agreement.document, role=role, org_id=principal.org_id)
    except Exception as exc:
        _log_refusal(session, "contract.signature_refused", actor=principal.org_id, agreement=agreement,
                     details={"role": role, "kid": kid[:64], "code": getattr(exc, "code", type(exc).__name__)})
        raise
    agreement.signatures = [*agreement.signatures, entry]
    agreement.registry_keys = [*agreement.registry_keys, key]
    session.add(agreement)
    session.flush()
    record_event(session, "contract.signed", actor=principal.org_id, asset_id=agreement.asset_id,
                 agreement_id=agreement.id,
                 details={"role": role, "kid": kid, "document_sha256": agreement.document_sha256})
    if {s["role"] for s in agreement.signatures} == set(agreements.PARTY_ROLES):
        agreement.status = S.VERIFIED.value
        session.add(agreement)
        _move(session, neg, S.VERIFIED, actor=principal.org_id, kind="contract.verified")
        _finalize(session, settings, broker_key, principal, neg)
    return agreement
