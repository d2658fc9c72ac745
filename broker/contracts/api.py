"""Contract routes (thin): ``/contracts/...``, the management API the CLI, SDK and console use. The
DSP routes (``/dsp/...``, ``/.well-known/dspace-version``) are in ``broker.contracts.dsp_api`` and
included here."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, require_roles
from broker.contracts import dsp_api, remote_api, service
from twinspace import agreements
from twinspace.crypto import b64url
from broker.schemas import StrictModel

router = APIRouter(tags=["contracts"])
router.include_router(dsp_api.router)
router.include_router(remote_api.router)
LD = "application/ld+json"
PARTIES = ("consumer", "provider")


def _ld(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=LD)


def _neg(neg) -> JSONResponse:
    return _ld(service.negotiation_view(neg))


# --------------------------------------------------------------------------- management API
@router.get("/contracts/negotiations")
def list_negotiations(state: str | None = Query(None, max_length=16), limit: int = Query(100, ge=1, le=1000),
                      principal: Principal = require_roles(*ALL_ROLES),
                      session: Session = db_session) -> dict[str, Any]:
    items = service.list_negotiations(session, principal, state=state, limit=limit)
    return {"items": [service.negotiation_view(n) for n in items]}


@router.get("/contracts/negotiations/{pid}")
def get_negotiation(pid: str, principal: Principal = require_roles(*ALL_ROLES),
                    session: Session = db_session) -> dict[str, Any]:
    neg = service.get_negotiation(session, pid, principal)
    body = service.negotiation_view(neg)
    if neg.agreement_id:
        body["agreement"] = service.agreement_view(service.get_agreement(session, neg.agreement_id, principal))
    return body


@router.post("/contracts/negotiations/{pid}/agreement-draft")
def agreement_draft(pid: str, request: Request, principal: Principal = require_roles("provider"),
                    session: Session = db_session) -> dict[str, Any]:
    """The exact agreement document to sign, with its RFC 8785 bytes (base64url) and hash."""
    doc = service.agreement_draft(session, get_runtime(request).settings, principal, pid)
    return {"document": doc, "signing_input": b64url(agreements.signing_input(doc)),
            "document_sha256": agreements.document_sha256(doc)}


@router.get("/contracts/agreements")
def list_agreements(status: str | None = Query(None, max_length=16), asset_id: str | None = Query(None, max_length=64),
                    limit: int = Query(100, ge=1, le=1000), principal: Principal = require_roles(*ALL_ROLES),
                    session: Session = db_session) -> dict[str, Any]:
    items = service.list_agreements(session, principal, status=status, asset_id=asset_id, limit=limit)
    return {"items": [service.agreement_view(a) for a in items]}


@router.get("/contracts/agreements/{agreement_id}")
def get_agreement(agreement_id: str, principal: Principal = require_roles(*ALL_ROLES),
                  session: Session = db_session) -> dict[str, Any]:
    return service.agreement_view(service.get_agreement(session, agreement_id, principal))


@router.get("/contracts/agreements/{agreement_id}/export")
def export_agreement(agreement_id: str, request: Request, principal: Principal = require_roles(*ALL_ROLES),
                     session: Session = db_session) -> dict[str, Any]:
    runtime = get_runtime(request)
    return service.export_bundle(session, runtime.settings, runtime.broker_key, principal, agreement_id)


class RevokeIn(StrictModel):
    reason: str | None = None


@router.post("/contracts/agreements/{agreement_id}/revoke")
def revoke(agreement_id: str, body: RevokeIn | None = None, principal: Principal = require_roles("provider", "operator"),
           session: Session = db_session) -> dict[str, Any]:
    return service.agreement_view(service.revoke(session, principal, agreement_id, body.reason if body else None))


# --------------------------------------------------------------------------- management API: negotiate, sign, pull
class NegotiationIn(StrictModel):
    asset_id: str = Field(min_length=1, max_length=64)
    offer_id: str = Field(min_length=1, max_length=64)
    purpose: str = Field(min_length=1, max_length=100)
    scenario: str | None = Field(None, max_length=100)
    not_after: str | None = Field(None, max_length=40, description="ISO 8601 requested end of validity")


class OfferIn(StrictModel):
    max_rows: int | None = Field(None, ge=1, le=10_000_000)
    columns: list[str] | None = Field(None, min_length=1, max_length=2000)
    not_after: str | None = Field(None, max_length=40)
    params: dict[str, Any] | None = None


class SignatureIn(StrictModel):
    kid: str = Field(min_length=1, max_length=64)
    signature: str = Field(min_length=16, max_length=200, pattern=r"^[A-Za-z0-9_-]+$",
                           description="base64url Ed25519 signature over the RFC 8785 canonical document")


@router.post("/contracts/negotiations", status_code=201)
def open_negotiation(body: NegotiationIn, request: Request, principal: Principal = require_roles("consumer"),
                     session: Session = db_session) -> dict[str, Any]:
    neg = service.open_negotiation(session, get_runtime(request).settings, principal, asset_id=body.asset_id,
                                   offer_id=body.offer_id, purpose=body.purpose, scenario=body.scenario,
                                   not_after=body.not_after)
    return service.negotiation_view(neg)


@router.post("/contracts/negotiations/{pid}/offer")
def offer_negotiation(pid: str, body: OfferIn | None = None, principal: Principal = require_roles("provider"),
                      session: Session = db_session) -> dict[str, Any]:
    body = body or OfferIn()
    return service.negotiation_view(service.offer_negotiation(
        session, principal, pid, max_rows=body.max_rows, columns=body.columns, not_after=body.not_after,
        params=body.params))


@router.post("/contracts/negotiations/{pid}/accept")
def accept_negotiation(pid: str, request: Request, principal: Principal = require_roles("consumer"),
                       session: Session = db_session) -> dict[str, Any]:
    runtime = get_runtime(request)
    return service.negotiation_view(service.accept_negotiation(session, runtime.settings, runtime.broker_key,
                                                               principal, pid))


def _signable(agreement) -> dict[str, Any]:
    return {**service.agreement_view(agreement), "signing_input": b64url(agreements.signing_input(agreement.document))}


@router.post("/contracts/negotiations/{pid}/agree", status_code=201)
def agree_negotiation(pid: str, request: Request, principal: Principal = require_roles("provider"),
                      session: Session = db_session) -> dict[str, Any]:
    """Fix the agreement document (→ AGREED). Both parties sign ``signing_input`` (its RFC 8785 bytes)."""
    return _signable(service.fix_agreement(session, get_runtime(request).settings, principal, pid))


@router.post("/contracts/agreements/{agreement_id}/signatures")
def sign_agreement(agreement_id: str, body: SignatureIn, request: Request,
                   principal: Principal = require_roles("consumer", "provider"),
                   session: Session = db_session) -> dict[str, Any]:
    runtime = get_runtime(request)
    agreement = service.add_signature(session, runtime.settings, runtime.broker_key, principal, agreement_id,
                                      kid=body.kid, signature=body.signature)
    return _signable(agreement)


@router.get("/contracts/agreements/{agreement_id}/bundle")
def agreement_bundle(agreement_id: str, request: Request, principal: Principal = require_roles(*ALL_ROLES),
                     session: Session = db_session) -> dict[str, Any]:
    """The offline-verifiable bundle (``twinspace contract verify FILE``)."""
    runtime = get_runtime(request)
    return service.export_bundle(session, runtime.settings, runtime.broker_key, principal, agreement_id)


