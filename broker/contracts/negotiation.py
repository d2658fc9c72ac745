"""The provider side of DSP contract negotiation: request, offer, events, termination."""

from __future__ import annotations

import secrets
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session, select

from broker.audit import record_event
from broker.contracts.models import ContractNegotiation
from broker.settings import Settings
from twinspace import agreements
from twinspace.dsp.messages import (ContractNegotiationEventMessage, ContractNegotiationTerminationMessage,
                                    ContractOfferMessage, ContractRequestMessage, offer_iri, parse_offer_iri)
from twinspace.dsp.states import NegotiationState as S
from twinspace.dsp.states import check_negotiation
from twinspace.errors import BadRequest, Conflict, Forbidden, Gone, NotFound, Unprocessable
from broker.contracts import callbacks, lookups, outbound
from broker.contracts.lookups import (_check_pids, _move, _parse_time, _require_party, _validity_end,
                                      get_agreement, get_negotiation)
from broker.contracts.signatures import _finalize


# --------------------------------------------------------------------------- negotiation
def _precheck(session: Session, settings: Settings, principal: Any, asset, params: dict[str, Any],
              purpose: str, scenario: str | None, policy_id: str, policy_version: str) -> dict[str, Any]:
    """An advisory ``negotiate`` decision for the provider (every pull is decided again anyway, by the
    transfer decision service). Without a usable policy engine the precheck is recorded as unavailable."""
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



def _default_purpose(offer: dict[str, Any]) -> str:
    """A plain DSP consumer declares no purpose: an offer with exactly one permitted purpose implies it;
    otherwise the purpose is ``unspecified`` (and a purpose-restricted policy refuses it)."""
    purposes = (offer.get("params") or {}).get("purposes")
    return purposes[0] if isinstance(purposes, list) and len(purposes) == 1 else "unspecified"


def _check_offer_rules(sent: dict[str, Any], offer: dict[str, Any], asset) -> None:
    """An offer sent with rules must say what the catalog offer says (TwinSpace does not take
    counter-offers with other terms: the provider narrows terms with a ContractOfferMessage)."""
    from twinspace.odrl.mapping import OdrlProblem, from_rules, to_rules

    try:
        sent_params = from_rules(sent)[0]
    except OdrlProblem as exc:
        raise BadRequest(f"The offer's ODRL terms are outside the TwinSpace profile: {exc}",
                         code="unsupported_offer_terms") from None
    catalog_params = from_rules(to_rules(offer["policy_id"], offer.get("params") or {},
                                         classification=asset.classification))[0]
    if sent_params != catalog_params:
        raise BadRequest("The offer's terms differ from the catalog offer; counter-offers are not accepted.",
                         code="offer_terms_differ")


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
    _validity_end(settings, lookups.now(), requested_end)
    if msg.offer.has_rules:
        _check_offer_rules(msg.offer.policy, offer, asset)
    purpose = msg.purpose or _default_purpose(offer)

    if msg.providerPid:  # counter-request on an existing negotiation
        neg = get_negotiation(session, msg.providerPid, principal, lock=True)
        _require_party(neg, principal, "consumer")
        _check_pids(neg, msg.providerPid, msg.consumerPid)
        if (neg.asset_id, neg.asset_version, neg.offer_id) != (asset_id, version, offer_id):
            raise Conflict("A counter-request must stay on the same offer.", code="offer_changed")
        neg.purpose, neg.scenario, neg.requested_not_after = purpose, msg.scenario, requested_end
        neg.draft = None
        _move(session, neg, S.REQUESTED, actor=principal.org_id, kind="contract.requested",
              details={"counter_request": True, "purpose": purpose, "scenario": msg.scenario})
        return neg

    taken = session.exec(select(ContractNegotiation).where(ContractNegotiation.consumer_id == principal.org_id,
                                                           ContractNegotiation.consumer_pid == msg.consumerPid)).first()
    if taken is not None:
        raise Conflict("This consumerPid is already in use.", code="consumer_pid_in_use")
    callback = callbacks.check_address(settings, msg.callbackAddress)
    policy_version = _policy_version(session, settings, offer["policy_id"])
    params = dict(offer.get("params") or {})
    neg = ContractNegotiation(
        id="neg_" + secrets.token_hex(12), consumer_pid=msg.consumerPid, consumer_id=principal.org_id,
        provider_id=asset.provider_id, asset_id=asset.id, asset_version=asset.version,
        content_hash=asset.content_hash, offer_id=offer_id, policy_id=offer["policy_id"],
        policy_version=policy_version, offer_params=params, terms={}, purpose=purpose, scenario=msg.scenario,
        requested_not_after=requested_end, state=S.REQUESTED.value, callback_address=callback,
        precheck={})
    neg.precheck = _precheck(session, settings, principal, asset, params, purpose, msg.scenario,
                             offer["policy_id"], policy_version)
    check_negotiation(None, S.REQUESTED.value)
    session.add(neg)
    session.flush()
    record_event(session, "contract.requested", actor=principal.org_id, asset_id=asset.id,
                 details={"negotiation_id": neg.id, "to": "REQUESTED", "offer": offer_iri(asset.id, asset.version,
                                                                                           offer_id),
                          "purpose": purpose, "scenario": msg.scenario, "policy_id": offer["policy_id"],
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
    outbound.notify(session, neg, outbound.offer_message(neg, get_asset(session, neg.asset_id,
                                                                        neg.asset_version).classification))
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
    if principal.org_id != neg.consumer_id:  # the consumer hears of a termination it did not send
        outbound.notify(session, neg, outbound.termination_message(neg, msg.code, msg.reason))
    return neg
