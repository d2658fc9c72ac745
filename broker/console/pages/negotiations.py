"""Negotiations: requests, offers, browser-signed agreements, finalisation."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import Field
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime
from broker.console.auth import console_roles
from broker.console.views import CONSUMER, PROVIDER, _dsp, _redirect, render
from broker.schemas import StrictModel
from twinspace.errors import BadRequest

router = APIRouter()


# --------------------------------------------------------------------------- negotiations
@router.post("/negotiations")
def request_contract(request: Request, offer: str = Form(..., max_length=300), purpose: str = Form(..., max_length=100),
                     scenario: str = Form("", max_length=100), follow: str = Form("", max_length=1),
                     principal: Principal = console_roles(*CONSUMER), session: Session = db_session) -> Response:
    from broker.contracts import service
    from twinspace.dsp.messages import ContractRequestMessage

    msg = ContractRequestMessage.model_validate(_dsp(
        "ContractRequestMessage", consumerPid=f"urn:uuid:{uuid.uuid4()}", offer={"@id": offer},
        **{"twin:purpose": purpose, "twin:scenario": scenario or None}))
    neg = service.request_contract(session, get_runtime(request).settings, principal, msg)
    if follow:  # one click for offers that need no review: the page takes the consumer's steps itself
        return _redirect(request, f"/negotiations/{neg.id}?follow=1", "Requested; your steps follow automatically "
                         "as the provider answers (open data needs no review).")
    return _redirect(request, f"/negotiations/{neg.id}", "Contract requested; waiting for the provider's offer.")


@router.get("/negotiations")
def negotiations(request: Request, principal: Principal = console_roles(*ALL_ROLES),
                 session: Session = db_session) -> Response:
    from broker.contracts import service

    items = [service.negotiation_view(n) for n in service.list_negotiations(session, principal, limit=200)]
    return render(request, "negotiations.html", principal, session, items=items, msg=request.query_params.get("msg"))


@router.get("/negotiations/{pid}")
def negotiation(pid: str, request: Request, principal: Principal = console_roles(*ALL_ROLES),
                session: Session = db_session) -> Response:
    from broker.contracts import service

    neg = service.get_negotiation(session, pid, principal)
    view = service.negotiation_view(neg)
    agreement = None
    if neg.agreement_id:
        agreement = service.agreement_view(service.get_agreement(session, neg.agreement_id, principal))
    sign_data = None
    if agreement and neg.state == "AGREED" and principal.org_id == neg.consumer_id:
        from twinspace import agreements
        from twinspace.crypto import b64url

        doc = agreement["document"]
        terms = view["twin:negotiation"]
        sign_data = {"signing_input": b64url(agreements.signing_input(doc)), "org_id": principal.org_id,
                     "expect": {"consumer_id": principal.org_id, "asset_id": terms["asset_id"],
                                "asset_version": terms["asset_version"], "purpose": terms["purpose"],
                                "scenario": terms["scenario"]}}
    return render(request, "negotiation.html", principal, session, neg=view, n=view["twin:negotiation"],
                  agreement=agreement, sign_data=sign_data, msg=request.query_params.get("msg"))


def _pids(session: Session, principal: Principal, pid: str) -> dict[str, str]:
    from broker.contracts import service

    neg = service.get_negotiation(session, pid, principal)
    return {"providerPid": neg.id, "consumerPid": neg.consumer_pid}


@router.post("/negotiations/{pid}/offer")
def offer(pid: str, request: Request, max_rows: str = Form("", max_length=12),
          principal: Principal = console_roles(*PROVIDER), session: Session = db_session) -> Response:
    from broker.contracts import service
    from twinspace.dsp.messages import ContractOfferMessage

    neg = service.get_negotiation(session, pid, principal)
    terms: dict[str, Any] = {}
    if max_rows.strip():
        if not max_rows.strip().isdigit():
            raise BadRequest("max_rows must be a positive integer.", code="bad_max_rows")
        terms["max_rows"] = int(max_rows)
    offer_ref = {"@id": service.negotiation_view(neg)["twin:negotiation"]["offer"],
                 **({"twin:terms": terms} if terms else {})}
    msg = ContractOfferMessage.model_validate(_dsp("ContractOfferMessage", offer=offer_ref,
                                                   **_pids(session, principal, pid)))
    service.offer_contract(session, principal, pid, msg)
    return _redirect(request, f"/negotiations/{pid}", "Offer sent.")


def _event(request: Request, session: Session, principal: Principal, pid: str, event: str) -> None:
    from broker.contracts import service
    from twinspace.dsp.messages import ContractNegotiationEventMessage

    runtime = get_runtime(request)
    msg = ContractNegotiationEventMessage.model_validate(_dsp("ContractNegotiationEventMessage", eventType=event,
                                                              **_pids(session, principal, pid)))
    service.negotiation_event(session, runtime.settings, runtime.broker_key, principal, pid, msg)


@router.post("/negotiations/{pid}/accept")
def accept(pid: str, request: Request, follow: str = Form("", max_length=1),
           principal: Principal = console_roles(*CONSUMER), session: Session = db_session) -> Response:
    _event(request, session, principal, pid, "ACCEPTED")
    return _redirect(request, f"/negotiations/{pid}" + ("?follow=1" if follow else ""),
                     "Offer accepted; the provider signs next.")


@router.post("/negotiations/{pid}/finalize")
def finalize(pid: str, request: Request, principal: Principal = console_roles(*PROVIDER),
             session: Session = db_session) -> Response:
    _event(request, session, principal, pid, "FINALIZED")
    return _redirect(request, f"/negotiations/{pid}", "Agreement finalised and countersigned by the broker.")


@router.post("/negotiations/{pid}/terminate")
def terminate(pid: str, request: Request, reason: str = Form("", max_length=300),
              principal: Principal = console_roles("consumer", "provider", "operator"),
              session: Session = db_session) -> Response:
    from broker.contracts import service
    from twinspace.dsp.messages import ContractNegotiationTerminationMessage

    msg = ContractNegotiationTerminationMessage.model_validate(_dsp(
        "ContractNegotiationTerminationMessage", reason=[reason] if reason else None, **_pids(session, principal, pid)))
    service.terminate(session, principal, pid, msg)
    return _redirect(request, f"/negotiations/{pid}", "Negotiation terminated.")


@router.post("/negotiations/{pid}/draft")
def draft(pid: str, request: Request, principal: Principal = console_roles(*PROVIDER),
          session: Session = db_session) -> dict[str, Any]:
    """The exact agreement bytes (RFC 8785) the provider's browser signs."""
    from broker.contracts import service
    from twinspace import agreements
    from twinspace.crypto import b64url

    doc = service.agreement_draft(session, get_runtime(request).settings, principal, pid)
    return {"signing_input": b64url(agreements.signing_input(doc)), "document_sha256": agreements.document_sha256(doc),
            "org_id": principal.org_id,
            "expect": {"provider_id": principal.org_id}}


class SignatureIn(StrictModel):
    signing_input: str = Field(min_length=10, max_length=200_000, pattern=r"^[A-Za-z0-9_-]+$")
    kid: str = Field(min_length=16, max_length=64)
    signature: str = Field(min_length=16, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")


def _signed_document(body: SignatureIn) -> dict[str, Any]:
    import json

    from twinspace.canonical import canonical_json
    from twinspace.crypto import b64url_decode

    raw = b64url_decode(body.signing_input)
    try:
        doc = json.loads(raw)
    except ValueError:
        raise BadRequest("The signed bytes are not JSON.", code="bad_signing_input") from None
    if not isinstance(doc, dict) or canonical_json(doc) != raw:
        raise BadRequest("The signed bytes are not the canonical (RFC 8785) agreement.", code="bad_signing_input")
    return doc


@router.post("/negotiations/{pid}/agree")
def agree(pid: str, body: SignatureIn, principal: Principal = console_roles(*PROVIDER),
          session: Session = db_session) -> dict[str, Any]:
    from broker.contracts import service
    from twinspace.dsp.messages import ContractAgreementMessage

    doc = _signed_document(body)
    entry = {"role": "provider", "org_id": principal.org_id, "kid": body.kid, "alg": "EdDSA",
             "signature": body.signature}
    msg = ContractAgreementMessage.model_validate(_dsp("ContractAgreementMessage", agreement=doc,
                                                       **_pids(session, principal, pid), **{"twin:signature": entry}))
    return {"state": service.agree(session, principal, pid, msg).state}


@router.post("/negotiations/{pid}/verify")
def verify(pid: str, body: SignatureIn, principal: Principal = console_roles(*CONSUMER),
           session: Session = db_session) -> dict[str, Any]:
    from broker.contracts import service
    from twinspace import agreements
    from twinspace.dsp.messages import ContractAgreementVerificationMessage

    doc = _signed_document(body)
    neg = service.get_negotiation(session, pid, principal)
    stored = service.get_agreement(session, neg.agreement_id, principal) if neg.agreement_id else None
    if stored is None or agreements.signing_input(stored.document) != agreements.signing_input(doc):
        raise BadRequest("You signed a different document than the agreement on record.", code="document_mismatch")
    entry = {"role": "consumer", "org_id": principal.org_id, "kid": body.kid, "alg": "EdDSA",
             "signature": body.signature}
    msg = ContractAgreementVerificationMessage.model_validate(_dsp(
        "ContractAgreementVerificationMessage", **_pids(session, principal, pid), **{"twin:signature": entry}))
    return {"state": service.verify_agreement(session, principal, pid, msg).state}
