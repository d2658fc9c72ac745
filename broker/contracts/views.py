"""Views of negotiations and agreements, and the offline-verifiable agreement bundle."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from broker.audit import record_event
from broker.contracts.models import Agreement, ContractNegotiation
from broker.settings import Settings
from twinspace import agreements
from twinspace.crypto import public_key_b64
from twinspace.dsp.messages import CONTEXT, negotiation_message, offer_iri
from twinspace.errors import Conflict
from broker.contracts import lookups
from broker.contracts.lookups import _utc, get_agreement


# --------------------------------------------------------------------------- views / export
def dsp_negotiation(neg: ContractNegotiation, *, extensions: bool = False) -> dict[str, Any]:
    """The DSP ``ContractNegotiation`` a DSP route answers; ``extensions``: with the TwinSpace view (for a
    client that speaks the TwinSpace context)."""
    return negotiation_view(neg) if extensions else negotiation_message(
        consumer_pid=neg.consumer_pid, provider_pid=neg.id, state=neg.state)


def negotiation_view(neg: ContractNegotiation) -> dict[str, Any]:
    """ContractNegotiation plus ``twin:negotiation`` (a JSON literal in the TwinSpace context)."""
    return {**negotiation_message(consumer_pid=neg.consumer_pid, provider_pid=neg.id, state=neg.state),
            "@context": list(CONTEXT),
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
                          snapshot_at=lookups.now(), status=status)
