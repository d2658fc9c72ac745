"""The provider's messages to a consumer that gave a ``callbackAddress`` (DSP 2025-1 consumer
callback paths). They carry only the DSP context; TwinSpace's signatures travel as extension
properties (absolute IRIs, JSON literals) that a plain DSP consumer ignores."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from broker.contracts import callbacks
from broker.contracts.models import Agreement, ContractNegotiation
from twinspace import agreements
from twinspace.dsp.catalog import dataset_iri
from twinspace.dsp.messages import PLAIN_CONTEXT, extension, offer_iri
from twinspace.odrl import policy as odrl


def _message(kind: str, neg: ContractNegotiation, **fields: Any) -> dict[str, Any]:
    return {"@context": list(PLAIN_CONTEXT), "@type": kind, "providerPid": neg.id, "consumerPid": neg.consumer_pid,
            **fields}


def negotiation_offer(neg: ContractNegotiation, classification: str | None = None) -> dict[str, Any]:
    """The ODRL offer under negotiation: the catalog offer's parameters narrowed by the provider's terms."""
    params = {**neg.offer_params, **(neg.terms.get("params") or {})}
    for key in ("max_rows", "columns"):
        if key in neg.terms:
            params[key] = neg.terms[key]
    return odrl.offer(offer_iri(neg.asset_id, neg.asset_version, neg.offer_id), policy_id=neg.policy_id,
                      params=params, assigner=neg.provider_id, classification=classification,
                      target=dataset_iri(neg.asset_id, neg.asset_version))


def offer_message(neg: ContractNegotiation, classification: str | None = None) -> dict[str, Any]:
    return _message("ContractOfferMessage", neg, offer=negotiation_offer(neg, classification))


def agreement_message(neg: ContractNegotiation, agreement: Agreement) -> dict[str, Any]:
    key, value = extension("signedAgreement", {"document": agreement.document, "signatures": agreement.signatures})
    return _message("ContractAgreementMessage", neg, agreement=agreements.odrl_view(agreement.document),
                    **{key: value})


def finalized_message(neg: ContractNegotiation, agreement: Agreement) -> dict[str, Any]:
    key, value = extension("countersignature", agreement.countersignature)
    return _message("ContractNegotiationEventMessage", neg, eventType="FINALIZED", **{key: value})


def termination_message(neg: ContractNegotiation, code: str | None, reason: list[Any] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if code:
        fields["code"] = code
    if reason:
        fields["reason"] = [str(r)[:500] for r in reason][:10]
    return _message("ContractNegotiationTerminationMessage", neg, **fields)


PATHS = {"ContractOfferMessage": "/offers", "ContractAgreementMessage": "/agreement",
         "ContractNegotiationEventMessage": "/events", "ContractNegotiationTerminationMessage": "/termination"}


def notify(session: Session, neg: ContractNegotiation, message: dict[str, Any]) -> None:
    """Queue ``message`` for the consumer's callback (sent after commit); nothing for a hosted consumer."""
    callbacks.queue(session, neg.callback_address, f"/negotiations/{neg.consumer_pid}{PATHS[message['@type']]}",
                    message)
