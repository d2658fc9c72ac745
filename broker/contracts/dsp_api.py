"""DSP 2025-1 routes (thin): version document, catalog protocol and contract negotiation protocol
(provider side; the broker also hosts the consumer-side endpoints of the consumers it serves).

Every body is read as JSON-LD, checked against the DSP schema and the message model
(``twinspace.dsp.messages.parse``); every failure is a DSP error object (``broker.contracts.dsp``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, public_route, require_roles
from broker.contracts import service
from broker.contracts.dsp import DspRoute, ld, message_body, wants_extensions
from twinspace.dsp import catalog as dsp_catalog
from twinspace.dsp.messages import MessageProblem, parse
from twinspace.errors import BadRequest, NotFound

router = APIRouter(tags=["dsp"], route_class=DspRoute)
PARTIES = ("consumer", "provider")
body = Depends(message_body)


def _neg(request: Request, neg, status: int = 200) -> JSONResponse:
    return ld(service.dsp_negotiation(neg, extensions=wants_extensions(request)), status)


def _base_url(request: Request) -> str:
    settings = get_runtime(request).settings
    return (settings.dsp_base_url or str(request.base_url).rstrip("/") + "/dsp").rstrip("/")


def _participant(request: Request) -> str:
    settings = get_runtime(request).settings
    return settings.dsp_participant_id or settings.issuer


def _asset_view(asset) -> dict[str, Any]:
    return {"id": asset.id, "version": asset.version, "title": asset.title, "description": asset.description,
            "keywords": list(asset.keywords or []), "provider_id": asset.provider_id,
            "classification": asset.classification, "domain": asset.domain, "offers": list(asset.offers or [])}


# --------------------------------------------------------------------------- version document
@router.get("/.well-known/dspace-version", dependencies=[public_route])
def dspace_version() -> JSONResponse:
    """DSP 2025-1 protocol version document (which versions this connector speaks, at which path)."""
    return ld(dsp_catalog.version_document("/dsp"))


# --------------------------------------------------------------------------- catalog protocol
@router.post("/dsp/catalog/request")
def catalog_request(request: Request, raw: Any = body, limit: int = Query(50, ge=1, le=500),
                    offset: int = Query(0, ge=0, le=1_000_000), principal: Principal = require_roles(*ALL_ROLES),
                    session: Session = db_session) -> JSONResponse:
    """CatalogRequestMessage → the DSP ``Catalog`` the caller may see, one page of datasets (``Link``
    headers name the next and previous pages). ``filter``: see docs/dataspace-protocol.md."""
    from broker.catalog.service import search

    msg = parse(raw, "CatalogRequestMessage")
    try:
        criteria = dsp_catalog.parse_filter(msg.filter)
    except dsp_catalog.FilterProblem as exc:
        raise BadRequest(str(exc), code="unsupported_filter") from None
    wanted_dataset = criteria.pop("dataset", None)
    asset_id = criteria.pop("asset_id", None)
    if wanted_dataset:
        asset_id = dsp_catalog.parse_dataset_iri(wanted_dataset)[0]
    page, total = search(session, org_id=principal.org_id, role=principal.role, org_type=principal.org_type,
                         attributes=principal.attributes, limit=limit if not asset_id else 500,
                         offset=offset if not asset_id else 0, **criteria)
    if asset_id:
        page = [a for a in page if a.id == asset_id]
        total = len(page)
    service_id = "urn:twinspace:dsp-service"
    datasets = [dsp_catalog.dataset(_asset_view(a), service_id=service_id) for a in page]
    doc = dsp_catalog.catalog(datasets, participant_id=_participant(request), service=dsp_catalog.data_service(
        service_id, _base_url(request)), catalog_id=f"urn:twinspace:catalog:{quote(_participant(request), safe='')}")
    links = []
    url = str(request.url.remove_query_params(["limit", "offset"]))
    sep = "&" if "?" in url else "?"
    if offset + len(page) < total:
        links.append(f'<{url}{sep}{urlencode({"limit": limit, "offset": offset + limit})}>; rel="next"')
    if offset > 0:
        links.append(f'<{url}{sep}{urlencode({"limit": limit, "offset": max(0, offset - limit)})}>; rel="previous"')
    return ld(doc, headers={"Link": ", ".join(links)} if links else None)


@router.get("/dsp/catalog/datasets/{dataset_id}")
def catalog_dataset(dataset_id: str, request: Request, principal: Principal = require_roles(*ALL_ROLES),
                    session: Session = db_session) -> JSONResponse:
    """The DSP ``Dataset`` (by its IRI ``urn:twinspace:asset:<id>:v<n>`` or the asset id)."""
    from broker.catalog.service import can_see, get_asset

    asset_id, version = dsp_catalog.parse_dataset_iri(dataset_id)
    try:
        asset = get_asset(session, asset_id, version)
    except NotFound:
        raise NotFound("No such dataset.", code="dataset_not_found") from None
    if not can_see(asset, org_id=principal.org_id, role=principal.role, org_type=principal.org_type,
                   attributes=principal.attributes) or asset.status != "active":
        raise NotFound("No such dataset.", code="dataset_not_found")
    return ld(dsp_catalog.dataset(_asset_view(asset), service_id="urn:twinspace:dsp-service", with_context=True))


# --------------------------------------------------------------------------- negotiation protocol
@router.post("/dsp/negotiations/request", status_code=201)
def request_negotiation(request: Request, raw: Any = body, principal: Principal = require_roles("consumer"),
                        session: Session = db_session) -> JSONResponse:
    """ContractRequestMessage (initial) → 201 ContractNegotiation (REQUESTED)."""
    msg = parse(raw, "ContractRequestMessage")
    if msg.providerPid:
        raise MessageProblem("An initial ContractRequestMessage has no providerPid; a counter-request goes to "
                             "/negotiations/{providerPid}/request.", code="unexpected_provider_pid",
                             pids={"consumerPid": msg.consumerPid, "providerPid": msg.providerPid})
    neg = service.request_contract(session, get_runtime(request).settings, principal, msg)
    return _neg(request, neg, 201)


@router.post("/dsp/negotiations/{pid}/request")
def counter_request(pid: str, request: Request, raw: Any = body, principal: Principal = require_roles("consumer"),
                    session: Session = db_session) -> JSONResponse:
    msg = parse(raw, "ContractRequestMessage")
    if msg.providerPid not in (None, pid):
        raise BadRequest("providerPid differs from the negotiation in the path.", code="pid_mismatch")
    msg = msg.model_copy(update={"providerPid": pid})
    return _neg(request, service.request_contract(session, get_runtime(request).settings, principal, msg))


@router.post("/dsp/negotiations/{pid}/offers")
def offer(pid: str, request: Request, raw: Any = body, principal: Principal = require_roles("provider"),
          session: Session = db_session) -> JSONResponse:
    """ContractOfferMessage from the provider (broker-hosted provider; forwarded to the consumer)."""
    return _neg(request, service.offer_contract(session, principal, pid, parse(raw, "ContractOfferMessage")))


@router.post("/dsp/negotiations/{pid}/events")
def event(pid: str, request: Request, raw: Any = body, principal: Principal = require_roles(*PARTIES),
          session: Session = db_session) -> JSONResponse:
    runtime = get_runtime(request)
    msg = parse(raw, "ContractNegotiationEventMessage")
    return _neg(request, service.negotiation_event(session, runtime.settings, runtime.broker_key, principal, pid, msg))


@router.post("/dsp/negotiations/{pid}/agreement")
def agreement(pid: str, request: Request, raw: Any = body, principal: Principal = require_roles("provider"),
              session: Session = db_session) -> JSONResponse:
    msg = parse(raw, "ContractAgreementMessage")
    return _neg(request, service.agree(session, principal, pid, msg, raw_agreement=raw.get("agreement")))


@router.post("/dsp/negotiations/{pid}/agreement/verification")
def verification(pid: str, request: Request, raw: Any = body, principal: Principal = require_roles("consumer"),
                 session: Session = db_session) -> JSONResponse:
    msg = parse(raw, "ContractAgreementVerificationMessage")
    return _neg(request, service.verify_agreement(session, principal, pid, msg))


@router.post("/dsp/negotiations/{pid}/termination")
def termination(pid: str, request: Request, raw: Any = body,
                principal: Principal = require_roles("consumer", "provider", "operator"),
                session: Session = db_session) -> JSONResponse:
    msg = parse(raw, "ContractNegotiationTerminationMessage")
    return _neg(request, service.terminate(session, principal, pid, msg))


@router.get("/dsp/negotiations/{pid}")
def get_negotiation(pid: str, request: Request, principal: Principal = require_roles(*ALL_ROLES),
                    session: Session = db_session) -> JSONResponse:
    return ld(service.dsp_negotiation(service.get_negotiation(session, pid, principal)))
