"""The agreement document, party signatures (ContractAgreementMessage, verification, management
signatures) and the broker countersignature at finalisation."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from broker.audit import record_event
from broker.contracts.models import Agreement, ContractNegotiation
from broker.settings import Settings
from twinspace import agreements
from twinspace.canonical import canonical_json
from twinspace.dsp.messages import ContractAgreementMessage, ContractAgreementVerificationMessage
from twinspace.dsp.states import NegotiationState as S
from twinspace.dsp.states import check_negotiation
from twinspace.errors import BadRequest, Conflict, Forbidden
from broker.contracts import lookups, outbound
from broker.contracts.access import _log_refusal
from broker.contracts.lookups import (_check_pids, _move, _require_party, _utc, _validity_end, get_agreement,
                                      get_negotiation)


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
        issued = lookups.now()
        params, obligations, end = _effective_terms(neg, settings, issued)
        asset = get_asset(session, neg.asset_id, neg.asset_version)
        neg.draft = agreements.agreement_document(
            agreement_id="agr_" + secrets.token_hex(12), negotiation_id=neg.id, asset_id=neg.asset_id,
            asset_version=neg.asset_version, content_hash=neg.content_hash, dataset=dataset_iri(asset),
            offer_id=neg.offer_id, provider_id=neg.provider_id, consumer_id=neg.consumer_id, purpose=neg.purpose,
            scenario=neg.scenario, policy_id=neg.policy_id, policy_version=neg.policy_version, policy_params=params,
            obligations=obligations, not_before=issued, not_after=end, issued_at=issued, issuer=settings.issuer,
            classification=asset.classification)
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


def _without_context(doc: Any) -> Any:
    return {k: v for k, v in doc.items() if k != "@context"} if isinstance(doc, dict) else doc


def agree(session: Session, principal: Any, negotiation_id: str, msg: ContractAgreementMessage,
          raw_agreement: dict[str, Any] | None = None) -> ContractNegotiation:
    """ContractAgreementMessage: the provider's signed agreement; must be exactly the broker's draft
    (``raw_agreement``: the agreement as sent, before JSON-LD normalisation, whose bytes were signed)."""
    neg = get_negotiation(session, negotiation_id, principal, lock=True)
    _require_party(neg, principal, "provider")
    _check_pids(neg, msg.providerPid, msg.consumerPid)
    check_negotiation(neg.state, S.AGREED.value)
    if neg.draft is None:
        raise Conflict("Fetch the agreement draft first (POST /contracts/negotiations/{id}/agreement-draft).",
                       code="no_draft")
    sent = raw_agreement if raw_agreement is not None else msg.agreement
    if canonical_json(_without_context(sent)) != canonical_json(_without_context(neg.draft)):
        raise Conflict("The agreement differs from the drafted document.", code="agreement_mismatch")
    if msg.signature is None:
        raise BadRequest("The provider's ContractAgreementMessage carries its signature (twin:signature).",
                         code="missing_signature")
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
    outbound.notify(session, neg, outbound.agreement_message(neg, agreement))
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
    if msg.signature is None:
        raise BadRequest("TwinSpace agreements are signed by both parties: the verification message carries the "
                         "consumer's Ed25519 signature over the RFC 8785 agreement (twin:signature).",
                         code="consumer_signature_required")
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
    finalized = lookups.now()
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
    outbound.notify(session, neg, outbound.finalized_message(neg, agreement))
    return neg


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
    outbound.notify(session, neg, outbound.agreement_message(neg, agreement))
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
