"""The catalog, an asset, and the provider's own assets and offers."""

from __future__ import annotations

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import (
    Response,
)
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime
from broker.catalog.schemas import CLASSIFICATION_ORDER
from broker.console import charts
from broker.console.auth import (
    console_roles,
)
from broker.console.views import (
    PROVIDER,
    _redirect,
    _root,
    render,
)
from twinspace.errors import BadRequest, NotFound

router = APIRouter()


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
