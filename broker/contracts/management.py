"""The management API (broker-hosted parties): open, offer, accept as DSP messages."""

from __future__ import annotations

import secrets
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from broker.contracts.models import ContractNegotiation
from broker.settings import Settings
from twinspace.dsp.messages import (CONTEXT, ContractNegotiationEventMessage, ContractOfferMessage,
                                    ContractRequestMessage, offer_iri)
from twinspace.errors import NotFound
from broker.contracts.lookups import _require_party, get_negotiation
from broker.contracts.negotiation import negotiation_event, offer_contract, request_contract


# --------------------------------------------------------------------------- management API (broker-hosted)
def _dsp(msg_type: str, **fields: Any) -> dict[str, Any]:
    return {"@context": list(CONTEXT), "@type": msg_type, **fields}


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
