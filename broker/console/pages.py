"""Console routes. Pages are rendered server-side from the same services the API uses, with the session
principal; every route names the same roles as the matching API route. State-changing routes need the
session's CSRF token (checked by ``ConsoleGuard``). Signatures (agreements, proofs of possession) are
made in the browser with WebCrypto; the broker only ever sees public keys and signatures."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import Field
from sqlmodel import Session

from broker.catalog.schemas import CLASSIFICATION_ORDER
from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, public_route
from broker.console import charts
from broker.console.app import templates
from broker.console.auth import (COOKIE_PATH, LOGIN_COOKIE, SESSION_COOKIE, console_roles, csrf_token,
                                 new_login_nonce, revoke_session, same_origin)
from twinspace.errors import BadRequest, Forbidden, NotFound, TwinSpaceError
from broker.schemas import StrictModel

router = APIRouter()
PROVIDER, CONSUMER, AUDITOR = ("provider",), ("consumer",), ("auditor",)


# --------------------------------------------------------------------------- helpers
def _root(request: Request) -> str:
    return request.scope.get("root_path", "") or ""


def _org_names(session: Session) -> dict[str, str]:
    from broker.identity.service import list_orgs

    return {o.id: o.name for o in list_orgs(session)}


def render(request: Request, template: str, principal: Principal | None, session: Session | None = None,
           status_code: int = 200, **context: Any) -> Response:
    runtime = get_runtime(request)
    csrf = csrf_token(runtime, principal.token_id) if principal else ""
    request.state.csrf = csrf
    names = _org_names(session) if session is not None else {}
    return templates.TemplateResponse(request, template, {
        "principal": principal, "csrf": csrf, "root": _root(request), "names": names, **context},
        status_code=status_code)


def _redirect(request: Request, path: str, message: str | None = None) -> RedirectResponse:
    url = _root(request) + path
    if message:
        url += ("&" if "?" in url else "?") + "msg=" + quote(message)
    return RedirectResponse(url, status_code=303)


def _dsp(type_: str, **fields: Any) -> dict[str, Any]:
    from twinspace.dsp.messages import CONTEXT

    return {"@context": CONTEXT, "@type": type_, **{k: v for k, v in fields.items() if v is not None}}


def _secure_cookie(request: Request) -> bool:
    # Secure always; browsers accept Secure cookies from http://127.0.0.1 and localhost (secure contexts).
    return True


# --------------------------------------------------------------------------- login / logout
@router.get("/login", dependencies=[public_route])
def login_page(request: Request, next: str = Query("/", max_length=300)) -> Response:
    nonce = new_login_nonce()
    runtime = get_runtime(request)
    response = templates.TemplateResponse(request, "login.html", {
        "principal": None, "csrf": "", "root": _root(request), "nonce": nonce, "audience": runtime.settings.issuer,
        "next": next if next.startswith("/") and not next.startswith("//") else "/", "names": {}})
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=600, path=COOKIE_PATH, secure=True, httponly=True,
                        samesite="strict")
    return response


def _check_login_nonce(request: Request, nonce: str) -> None:
    if not same_origin(request):
        raise Forbidden("Cross-origin login attempts are refused.", code="csrf_origin")
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not secrets.compare_digest(cookie.encode(), nonce.encode()):
        raise Forbidden("The login form expired; reload the page.", code="csrf_failed")


class LookupIn(StrictModel):
    kid: str = Field(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    nonce: str = Field(min_length=16, max_length=64)


@router.post("/login/lookup", dependencies=[public_route])
def login_lookup(body: LookupIn, request: Request, session: Session = db_session) -> dict[str, str]:
    """Which organisation a key (RFC 7638 thumbprint) belongs to, so the browser can name it in the
    assertion's ``iss``/``sub``. Reveals nothing a holder of the public key could not learn from the
    participant directory; revoked keys and suspended orgs are refused like at /auth/token."""
    from broker.identity.service import active_key

    _check_login_nonce(request, body.nonce)
    org, _ = active_key(session, body.kid)
    return {"org_id": org.id}


@router.post("/login", dependencies=[public_route])
def login(request: Request, client_assertion: str = Form(..., min_length=20, max_length=8192),
          nonce: str = Form(..., max_length=64), next: str = Form("/", max_length=300)) -> Response:
    """Verify the browser-signed client assertion through ``identity.service.authenticate`` (same checks,
    replay protection and audit as /auth/token) and open a session holding the broker access token."""
    from broker.audit import record_event
    from broker.identity import service
    from broker.storage.db import session_scope

    _check_login_nonce(request, nonce)
    runtime = get_runtime(request)
    try:
        with session_scope(runtime.engine) as session:
            grant = service.authenticate(session, runtime.settings, runtime.replay, runtime.broker_key,
                                         client_assertion)
            record_event(session, "console.login", actor=grant.org.id, details={"role": grant.org.role})
    except TwinSpaceError as exc:
        with session_scope(runtime.engine) as session:
            record_event(session, "auth.denied", actor=None, outcome="deny", details={"code": exc.code,
                                                                                       "via": "console"})
        raise
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    response = RedirectResponse(_root(request) + target, status_code=303)
    response.set_cookie(SESSION_COOKIE, grant.access_token, max_age=grant.expires_in, path=COOKIE_PATH,
                        secure=_secure_cookie(request), httponly=True, samesite="strict")
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict")
    return response


@router.post("/logout")
def logout(request: Request, principal: Principal = console_roles(*ALL_ROLES)) -> Response:
    from broker.audit import log_event

    runtime = get_runtime(request)
    revoke_session(runtime, principal.token_id)
    log_event(runtime.engine, "console.logout", actor=principal.org_id)
    response = _redirect(request, "/login", "Logged out.")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict")
    return response


# --------------------------------------------------------------------------- home
@router.get("/")
def home(request: Request, principal: Principal = console_roles(*ALL_ROLES),
         session: Session = db_session) -> Response:
    from broker.contracts import service as contracts

    agreements = contracts.list_agreements(session, principal, limit=1000)
    negotiations = contracts.list_negotiations(session, principal, limit=1000)
    stats = {"agreements": len(agreements), "active": sum(a.status == "FINALIZED" for a in agreements),
             "negotiations_open": sum(n.state not in ("FINALIZED", "TERMINATED") for n in negotiations)}
    return render(request, "home.html", principal, session, stats=stats, msg=request.query_params.get("msg"))


# --------------------------------------------------------------------------- catalog
def _bbox(value: str | None) -> list[float] | None:
    if not value:
        return None
    try:
        parts = [float(x) for x in value.split(",")]
    except ValueError:
        raise BadRequest("bbox is min_lon,min_lat,max_lon,max_lat", code="bad_bbox") from None
    if len(parts) != 4 or parts[0] > parts[2] or parts[1] > parts[3]:
        raise BadRequest("bbox is min_lon,min_lat,max_lon,max_lat with min <= max", code="bad_bbox")
    return parts


@router.get("/catalog")
def catalog(request: Request, q: str | None = Query(None, max_length=200), domain: str | None = Query(None, max_length=64),
            classification: str | None = Query(None, max_length=32), bbox: str | None = Query(None, max_length=200),
            offset: int = Query(0, ge=0), principal: Principal = console_roles(*ALL_ROLES),
            session: Session = db_session) -> Response:
    from broker.catalog import service

    if classification and classification not in CLASSIFICATION_ORDER:
        raise BadRequest("Unknown classification.", code="bad_classification")
    page, total = service.search(session, org_id=principal.org_id, role=principal.role, org_type=principal.org_type,
                                 attributes=principal.attributes, q=q or None, domain=domain or None,
                                 classification=classification or None, bbox=_bbox(bbox), limit=50, offset=offset)
    assets = [service.asset_view(a) for a in page]
    return render(request, "catalog.html", principal, session, assets=assets, total=total, offset=offset,
                  filters={"q": q or "", "domain": domain or "", "classification": classification or "",
                           "bbox": bbox or ""},
                  classifications=list(CLASSIFICATION_ORDER),
                  map_svg=charts.extent_map(assets, _root(request), _bbox(bbox)))


@router.get("/catalog/{asset_id}")
def asset_page(asset_id: str, request: Request, principal: Principal = console_roles(*ALL_ROLES),
               session: Session = db_session) -> Response:
    from broker.catalog import service

    try:
        asset = service.get_asset(session, asset_id, None)
    except NotFound:
        asset = None
    if asset is None or not service.can_see(asset, org_id=principal.org_id, role=principal.role,
                                            org_type=principal.org_type, attributes=principal.attributes):
        raise NotFound(f"No asset {asset_id} visible to you.", code="asset_not_found")
    view = service.asset_view(asset)
    admitted = [o for o in view["offers"] if service.offer_admits(o, principal.org_id, principal.org_type)]
    return render(request, "asset.html", principal, session, asset=view, offers=admitted,
                  map_svg=charts.extent_map([view], _root(request), None),
                  purposes=list((principal.attributes or {}).get("purposes") or []),
                  scenarios=list((principal.attributes or {}).get("scenarios") or []))


# --------------------------------------------------------------------------- provider: own assets
@router.get("/assets")
def my_assets(request: Request, principal: Principal = console_roles(*PROVIDER),
              session: Session = db_session) -> Response:
    from sqlmodel import col, select

    from broker.catalog import service
    from broker.catalog.models import Asset
    from broker.contracts import service as contracts

    rows = session.exec(select(Asset).where(Asset.provider_id == principal.org_id, col(Asset.is_latest).is_(True))
                        .order_by(col(Asset.created_at).desc())).all()
    agreements = contracts.list_agreements(session, principal, limit=1000)
    per_asset: dict[str, int] = {}
    for a in agreements:
        if a.status == "FINALIZED":
            per_asset[a.asset_id] = per_asset.get(a.asset_id, 0) + 1
    return render(request, "assets.html", principal, session, assets=[service.asset_view(a) for a in rows],
                  active=per_asset, msg=request.query_params.get("msg"))


@router.post("/assets/{asset_id}/withdraw")
def withdraw(asset_id: str, request: Request, reason: str = Form("", max_length=500),
             principal: Principal = console_roles(*PROVIDER), session: Session = db_session) -> Response:
    from broker.catalog import service

    service.withdraw(session, principal.org_id, asset_id, reason or None)
    return _redirect(request, "/assets", f"Asset {asset_id} withdrawn.")


@router.post("/assets/{asset_id}/offers")
def edit_offers(asset_id: str, request: Request, offers: str = Form(..., max_length=65_536),
                principal: Principal = console_roles(*PROVIDER), session: Session = db_session) -> Response:
    """Change an asset's offers the only way the catalog allows: publish a new version (same data, same
    metadata, the new offers) through ``catalog.service.new_version``, as POST /catalog/assets/{id}/versions
    does. The table is re-read from the vault (or, for a connector-hosted asset, fetched from the provider's
    connector) and checked again (content hash, de-identification report); agreements on earlier versions
    keep their terms."""
    import json

    from pydantic import ValidationError

    from broker.catalog import service, vault
    from broker.catalog.schemas import AssetMetadata

    runtime = get_runtime(request)
    latest = service._owned_latest(session, principal.org_id, asset_id)  # 404 / not_asset_owner / withdrawn
    try:
        parsed = json.loads(offers)
    except ValueError:
        raise BadRequest("Offers must be a JSON list of {id, policy_id, params}.", code="bad_offers") from None
    if not isinstance(parsed, list):
        raise BadRequest("Offers must be a JSON list of {id, policy_id, params}.", code="bad_offers")
    bbox = latest.bbox
    fields = {"title": latest.title, "description": latest.description or "", "keywords": list(latest.keywords),
              "twin_category": latest.twin_category, "entity_type": latest.entity_type, "region": latest.region,
              "classification": latest.classification, "domain": latest.domain,
              "bbox": list(bbox) if bbox and None not in bbox else None,
              "time_start": latest.time_start, "time_end": latest.time_end, "columns": list(latest.columns),
              "row_count": latest.row_count, "content_hash": latest.content_hash, "deid_report": latest.deid_report,
              "deid_report_hash": latest.deid_report_hash, "offers": parsed}
    hosted = getattr(latest, "data_endpoint", None)  # connector-hosted: the broker fetches and checks it again
    fields.update({"data_endpoint": hosted} if hosted else {"upload_id": "pending"})
    try:
        AssetMetadata.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise BadRequest(f"The offers are not valid: {problems}", code="bad_offers") from None
    from broker.catalog.schemas import Offer

    if [Offer.model_validate(o).model_dump() for o in parsed] == \
            [Offer.model_validate(o).model_dump() for o in latest.offers]:
        return _redirect(request, "/assets", "The offers are unchanged; no new version published.")
    if not hosted:  # broker-hosted: stage the stored bytes as the new version's upload
        data = vault.load_bytes(session, asset_id, latest.version, settings=runtime.settings)
        upload = service.create_upload(session, principal.org_id)
        for part, start in enumerate(range(0, len(data), service.MAX_PART_BYTES)):
            service.add_upload_part(session, principal.org_id, upload.id, part,
                                    data[start:start + service.MAX_PART_BYTES], settings=runtime.settings)
        fields["upload_id"] = upload.id
    meta = AssetMetadata.model_validate(fields)
    asset = service.new_version(session, principal.org_id, asset_id, meta, settings=runtime.settings)
    return _redirect(request, "/assets", f"Offers updated: {asset.title} is now version {asset.version}.")


# --------------------------------------------------------------------------- negotiations
@router.post("/negotiations")
def request_contract(request: Request, offer: str = Form(..., max_length=300), purpose: str = Form(..., max_length=100),
                     scenario: str = Form("", max_length=100), principal: Principal = console_roles(*CONSUMER),
                     session: Session = db_session) -> Response:
    from broker.contracts import service
    from twinspace.dsp.messages import ContractRequestMessage

    msg = ContractRequestMessage.model_validate(_dsp(
        "ContractRequestMessage", consumerPid=f"urn:uuid:{uuid.uuid4()}", offer={"@id": offer},
        **{"twin:purpose": purpose, "twin:scenario": scenario or None}))
    neg = service.request_contract(session, get_runtime(request).settings, principal, msg)
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
def accept(pid: str, request: Request, principal: Principal = console_roles(*CONSUMER),
           session: Session = db_session) -> Response:
    _event(request, session, principal, pid, "ACCEPTED")
    return _redirect(request, f"/negotiations/{pid}", "Offer accepted; the provider signs next.")


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


# --------------------------------------------------------------------------- agreements, transfers, data
@router.get("/agreements")
def agreements(request: Request, status: str | None = Query(None, max_length=16),
               principal: Principal = console_roles(*ALL_ROLES), session: Session = db_session) -> Response:
    from broker.contracts import service

    items = [service.agreement_view(a) for a in service.list_agreements(session, principal, status=status or None,
                                                                        limit=500)]
    return render(request, "agreements.html", principal, session, items=items, status=status or "",
                  msg=request.query_params.get("msg"))


@router.get("/agreements/{agreement_id}")
def agreement(agreement_id: str, request: Request, principal: Principal = console_roles(*ALL_ROLES),
              session: Session = db_session) -> Response:
    from broker.contracts import service
    from broker.transfer import service as transfers

    a = service.agreement_view(service.get_agreement(session, agreement_id, principal))
    tps = [transfers.view(tp)["twin:transfer"] | {"state": tp.state}
           for tp in transfers.list_transfers(session, principal, limit=1000) if tp.agreement_id == agreement_id]
    usage = None
    try:
        from broker.policy.service import get_usage

        usage = get_usage(session, agreement_id)
    except Exception:  # noqa: BLE001 - usage counters are informative only
        usage = None
    return render(request, "agreement.html", principal, session, a=a, transfers=tps, usage=usage,
                  msg=request.query_params.get("msg"))


@router.get("/agreements/{agreement_id}/export")
def export_agreement(agreement_id: str, request: Request, principal: Principal = console_roles(*ALL_ROLES),
                     session: Session = db_session) -> JSONResponse:
    from broker.contracts import service

    runtime = get_runtime(request)
    bundle = service.export_bundle(session, runtime.settings, runtime.broker_key, principal, agreement_id)
    return JSONResponse(bundle, headers={"Content-Disposition": f'attachment; filename="{agreement_id}.json"'})


@router.post("/agreements/{agreement_id}/revoke")
def revoke(agreement_id: str, request: Request, reason: str = Form("", max_length=500),
           principal: Principal = console_roles("provider", "operator"),
           session: Session = db_session) -> Response:
    from broker.contracts import service

    service.revoke(session, principal, agreement_id, reason or None)
    return _redirect(request, f"/agreements/{agreement_id}", "Agreement revoked; further access is refused.")


@router.post("/agreements/{agreement_id}/transfer")
def start_transfer(agreement_id: str, request: Request, principal: Principal = console_roles(*CONSUMER),
                   session: Session = db_session) -> dict[str, Any]:
    """Start a transfer (DSP TransferRequestMessage); the browser then pulls with a proof of possession."""
    from broker.transfer import service
    from twinspace.dsp.transfer_messages import TransferRequestMessage

    runtime = get_runtime(request)
    msg = TransferRequestMessage.model_validate(_dsp("TransferRequestMessage", consumerPid=f"urn:uuid:{uuid.uuid4()}",
                                                     agreementId=agreement_id, format="HttpData-PULL"))
    tp, start = service.request_transfer(session, runtime.settings, runtime.broker_key, principal, msg)
    props = {p["name"]: p["value"] for p in start["dataAddress"]["endpointProperties"]}
    return {"transfer_id": tp.id, "token": props["authorization"], "path": f"{_root(request)}/data/{tp.id}"}


@router.get("/data/{pid}")
async def pull(pid: str, request: Request, format: str = Query("csv", max_length=16),
               transfer_token: str | None = Header(None, alias="TwinSpace-Transfer-Token"),
               pop: str | None = Header(None, alias="TwinSpace-PoP"),
               principal: Principal = console_roles(*CONSUMER), session: Session = db_session):
    """The data plane for the console: same transfer token + browser-signed proof of possession
    (bound to this path) + session principal, the same service call and audit as /dataplane."""
    from broker.transfer import dataplane, service
    from broker.transfer.api import _served

    runtime = get_runtime(request)
    result = await run_in_threadpool(service.pull, session, runtime, principal, pid, token=transfer_token, proof=pop,
                                     method=request.method, path=request.url.path, fmt=format, columns=None)
    await run_in_threadpool(session.commit)
    headers = {"X-TwinSpace-Agreement": result.agreement_id, "X-TwinSpace-Rows": str(result.table.num_rows),
               "X-TwinSpace-Content-Hash": result.content_hash, "Cache-Control": "no-store",
               "Content-Disposition": f'attachment; filename="{result.asset_id}-v{result.asset_version}.{format}"'}
    return StreamingResponse(_served(runtime.engine, result, dataplane.encode(result.table, format)),
                             media_type=dataplane.MEDIA_TYPES[format], headers=headers)


# --------------------------------------------------------------------------- provider: who accessed what
ACCESS_KINDS = ("transfer.", "contract.", "policy.", "request.refused")


@router.get("/access")
def access_log(request: Request, principal: Principal = console_roles(*PROVIDER),
               session: Session = db_session) -> Response:
    """Events about this provider's own assets (pulls, transfers, agreements, denials): who accessed what."""
    from sqlmodel import col, select

    from broker.audit.models import AuditEntry
    from broker.catalog.models import Asset
    from broker.transfer import service as transfers

    own = set(session.exec(select(Asset.id).where(Asset.provider_id == principal.org_id)).all())
    entries = []
    if own:
        rows = session.exec(select(AuditEntry).where(col(AuditEntry.asset_id).in_(own))
                            .order_by(col(AuditEntry.seq).desc()).limit(500)).all()
        entries = [charts.entry_row(e) for e in rows]
    tps = [transfers.view(tp)["twin:transfer"] | {"state": tp.state}
           for tp in transfers.list_transfers(session, principal, limit=500) if tp.provider_id == principal.org_id]
    return render(request, "access.html", principal, session, entries=entries, transfers=tps,
                  volume_svg=charts.volume_chart(entries), denial_svg=charts.denial_chart(entries))


# --------------------------------------------------------------------------- auditor: audit explorer
def _parse_dt(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date or time.", code="bad_time") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@router.get("/audit")
def audit(request: Request, org: str | None = Query(None, max_length=64), kind: str | None = Query(None, max_length=64),
          outcome: str | None = Query(None, max_length=16), asset_id: str | None = Query(None, max_length=64),
          agreement_id: str | None = Query(None, max_length=64), since: str | None = Query(None, max_length=40),
          until: str | None = Query(None, max_length=40), after_seq: int = Query(0, ge=0),
          principal: Principal = console_roles(*AUDITOR), session: Session = db_session) -> Response:
    from broker.audit import service
    from broker.audit.anchor import get_anchorer

    runtime = get_runtime(request)
    f = service.EntryFilter(org=org or None, kind=kind or None, outcome=outcome or None, asset_id=asset_id or None,
                            agreement_id=agreement_id or None, since=_parse_dt(since, "since"),
                            until=_parse_dt(until, "until"), after_seq=after_seq, limit=100)
    entries = [charts.entry_row(e) for e in service.query_entries(session, f)]
    chart_rows = [charts.entry_row(e) for e in service.query_entries(
        session, service.EntryFilter(org=f.org, kind=f.kind, outcome=f.outcome, asset_id=f.asset_id,
                                     agreement_id=f.agreement_id, since=f.since, until=f.until, limit=1000))]
    cp = service.latest_checkpoint(session)
    try:
        anchoring = get_anchorer(runtime).status()
    except Exception as exc:  # noqa: BLE001 - the page shows the anchoring problem instead of failing
        anchoring = {"mode": "unavailable", "error": type(exc).__name__}
    return render(request, "audit.html", principal, session, entries=entries, log_size=service.log_size(session),
                  checkpoint=service.checkpoint_json(cp) if cp else None, anchoring=anchoring,
                  filters={"org": org or "", "kind": kind or "", "outcome": outcome or "", "asset_id": asset_id or "",
                           "agreement_id": agreement_id or "", "since": since or "", "until": until or ""},
                  next_after=entries[-1]["seq"] if len(entries) == 100 else None,
                  volume_svg=charts.volume_chart(chart_rows), denial_svg=charts.denial_chart(chart_rows),
                  vkey=service.log_vkey(runtime))


@router.get("/audit/entries/{seq}")
def audit_entry(seq: int, request: Request, principal: Principal = console_roles(*AUDITOR),
                session: Session = db_session) -> Response:
    import json

    from broker.audit import service

    runtime = get_runtime(request)
    entry = service.entry_json(service.get_entry(session, seq))
    try:
        service.current_checkpoint(runtime)
        proof = service.inclusion_proof(runtime, session, seq)
    except TwinSpaceError as exc:
        proof = {"error": exc.detail}
    return render(request, "audit_entry.html", principal, session, entry=entry,
                  entry_pretty=json.dumps(entry["entry"], indent=2, ensure_ascii=False), proof=proof,
                  vkey=service.log_vkey(runtime))


@router.get("/audit/entries/{seq}/receipt")
def audit_receipt(seq: int, request: Request, principal: Principal = console_roles(*ALL_ROLES),
                  session: Session = db_session) -> JSONResponse:
    """The same rule as GET /audit/entries/{seq}/receipt: auditors, operators and the entry's own actor."""
    from broker.audit import service
    from broker.audit.api import OVERSIGHT

    runtime = get_runtime(request)
    entry = service.get_entry(session, seq)
    if principal.role not in OVERSIGHT and entry.actor != principal.org_id:
        raise Forbidden("Receipts are for auditors, operators and the entry's own organisation.",
                        code="not_your_entry")
    service.current_checkpoint(runtime)
    return JSONResponse(service.make_receipt(runtime, session, seq),
                        headers={"Content-Disposition": f'attachment; filename="receipt-{seq}.json"'})


@router.post("/audit/verify")
def audit_verify(request: Request, principal: Principal = console_roles(*AUDITOR)) -> dict[str, Any]:
    """One click: sign a fresh checkpoint, then recompute the whole tree from the stored entries and check
    every checkpoint signature, the hash chain and the indexed columns (what ``twinspace audit verify`` does)."""
    from broker.audit import log_event, service, tools
    from twinspace.audit.verify import verify_log

    runtime = get_runtime(request)
    try:
        service.create_checkpoint(runtime)
    except TwinSpaceError:
        pass  # a tampered log is refused for signing; the verification below names the problem
    mismatches: list[tuple[int, str]] = []
    report = verify_log(tools.db_lines_checked(runtime.engine, mismatches), tools.db_checkpoint_notes(runtime.engine),
                        service.log_vkey(runtime), head=tools.db_head(runtime.engine))
    for seq, message in mismatches:
        report.add(seq, "column_mismatch", message)
    result = report.to_json()
    log_event(runtime.engine, "audit.verified", actor=principal.org_id, outcome="ok" if report.ok else "error",
              details={"ok": report.ok, "entries": result.get("entries_verified", result.get("entries"))})
    return result


# --------------------------------------------------------------------------- consumer: encrypted queries
@router.get("/queries")
def queries(request: Request, principal: Principal = console_roles(*CONSUMER),
            session: Session = db_session) -> Response:
    """Encrypted queries run through the CLI (keys stay on the consumer's machine); this page explains how."""
    from broker.contracts import service

    from broker.privacy.service import get_budget

    runtime = get_runtime(request)

    def budget(agreement_id: str) -> dict[str, Any] | None:
        try:
            return get_budget(session, runtime.settings, principal, agreement_id)
        except TwinSpaceError:  # e.g. malformed privacy terms: queries refuse it, the page still lists it
            return None

    active = [service.agreement_view(a) | {"budget": budget(a.id)}
              for a in service.list_agreements(session, principal, status="FINALIZED")]
    return render(request, "queries.html", principal, session, agreements=active, broker_url=str(request.base_url)
                  .removesuffix("/").removesuffix(_root(request)))
