"""The catalog, an asset, and the provider's own assets and offers."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime
from broker.catalog.schemas import CLASSIFICATION_ORDER
from broker.console import charts
from broker.console.auth import console_roles
from broker.console.views import PROVIDER, _redirect, _root, render
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
            category: str | None = Query(None, max_length=32), provider: str | None = Query(None, max_length=64),
            licence: str | None = Query(None, max_length=200), format: str | None = Query(None, max_length=32),
            offset: int = Query(0, ge=0), principal: Principal = console_roles(*ALL_ROLES),
            session: Session = db_session) -> Response:
    from broker.catalog import service

    if classification and classification not in CLASSIFICATION_ORDER:
        raise BadRequest("Unknown classification.", code="bad_classification")
    found, total = service.search(session, org_id=principal.org_id, role=principal.role, org_type=principal.org_type,
                                  attributes=principal.attributes, q=q or None, domain=domain or None,
                                  classification=classification or None, bbox=_bbox(bbox),
                                  twin_category=category or None, provider=provider or None, limit=1000)
    views = [service.asset_view(a) for a in found]
    views = [v for v in views if (not licence or asset_licence(v) == licence)
             and (not format or asset_format(v) == format)]
    facets = facet_counts(views)
    total = len(views) if (licence or format) else total
    assets = views[offset:offset + 50]
    filters = {"q": q or "", "domain": domain or "", "classification": classification or "", "bbox": bbox or "",
               "category": category or "", "provider": provider or "", "licence": licence or "",
               "format": format or ""}
    return render(request, "catalog.html", principal, session, assets=assets, total=total, offset=offset,
                  filters=filters, facets=facets, classifications=list(CLASSIFICATION_ORDER),
                  map_svg=charts.extent_map(assets, _root(request), _bbox(bbox)))


def asset_licence(view: dict[str, Any]) -> str:
    return str(view.get("license") or view.get("licence") or "not stated")


def asset_format(view: dict[str, Any]) -> str:
    """How the data is held: an Arrow table at the provider's connector (the broker holds no rows)."""
    return "Arrow table (connector)"


def facet_counts(views: list[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    """Counts per value of each facet over the matching assets, most frequent first."""
    from collections import Counter

    keys = {"category": lambda v: v.get("twin_category") or "other", "classification": lambda v: v["classification"],
            "provider": lambda v: v["provider_id"], "licence": asset_licence, "format": asset_format}
    return {name: Counter(key(v) for v in views).most_common() for name, key in keys.items()}


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
    does. The connector's signed manifest is fetched and checked again (content hash, rows, columns,
    de-identification report); agreements on earlier versions keep their terms."""
    import json

    try:
        parsed = json.loads(offers)
    except ValueError:
        raise BadRequest("Offers must be a JSON list of {id, policy_id, params}.", code="bad_offers") from None
    if not isinstance(parsed, list):
        raise BadRequest("Offers must be a JSON list of {id, policy_id, params}.", code="bad_offers")
    return _publish_offers(request, session, principal, asset_id, parsed)


def _csv_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def offer_from_form(offer_id: str, purposes: str, bbox: str, not_before: str, not_after: str, max_accesses: str,
                    max_rows: str, aggregation_only: bool) -> dict[str, Any]:
    """One ODRL offer from the form's fields, as the policy library expresses it: aggregation-only
    when ticked; geo-restricted when an area is given; purpose-restricted when purposes are; else
    open data. Limits and the time window go into the params the policies read."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", offer_id or ""):
        raise BadRequest("The offer id must be 1-64 letters, digits, '.', '_' or '-'.", code="bad_offers")
    params: dict[str, Any] = {}
    names = _csv_list(purposes)
    if names:
        params["purposes"] = names
    for name, value in (("max_accesses", max_accesses), ("max_rows", max_rows)):
        if value.strip():
            if not value.strip().isdigit() or int(value) < 1:
                raise BadRequest(f"{name.replace('_', ' ')} must be a whole number of at least 1.", code="bad_offers")
            params[name] = int(value)
    for name, value in (("not_before", not_before), ("not_after", not_after)):
        if value.strip():
            try:
                when = datetime.fromisoformat(value.strip())
            except ValueError:
                raise BadRequest(f"{name.replace('_', ' ')} must be a date (YYYY-MM-DD).", code="bad_offers") from None
            params[name] = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).isoformat()
    if aggregation_only:
        policy = "aggregation-only"
        params = {k: v for k, v in params.items() if k == "purposes"}
    elif bbox.strip():
        try:
            box = [float(x) for x in bbox.split(",")]
        except ValueError:
            box = []
        if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
            raise BadRequest("The area must be min_lon,min_lat,max_lon,max_lat.", code="bad_offers")
        policy, params = "geo-restricted", {"bbox": box, **({"purposes": names} if names else {})}
    elif names:
        policy = "purpose-restricted"
    else:
        policy = "open-data"
        params.pop("not_before", None), params.pop("not_after", None)
    return {"id": offer_id, "policy_id": policy, "params": params}


@router.post("/assets/{asset_id}/offers/form")
def add_offer(asset_id: str, request: Request, offer_id: str = Form(..., max_length=64),
              purposes: str = Form("", max_length=1000), bbox: str = Form("", max_length=200),
              not_before: str = Form("", max_length=40), not_after: str = Form("", max_length=40),
              max_accesses: str = Form("", max_length=12), max_rows: str = Form("", max_length=12),
              aggregation_only: bool = Form(False), classification: str = Form("", max_length=16),
              principal: Principal = console_roles(*PROVIDER), session: Session = db_session) -> Response:
    """The offer form (no JSON to type): adds or replaces one offer, optionally reclassifies the asset,
    and publishes a new version like ``edit_offers``."""
    from broker.catalog import service

    latest = service._owned_latest(session, principal.org_id, asset_id)
    new = offer_from_form(offer_id, purposes, bbox, not_before, not_after, max_accesses, max_rows, aggregation_only)
    offers = [o for o in latest.offers if o.get("id") != offer_id] + [new]
    if classification and classification not in CLASSIFICATION_ORDER:
        raise BadRequest(f"Classification must be one of {', '.join(CLASSIFICATION_ORDER)}.", code="bad_offers")
    return _publish_offers(request, session, principal, asset_id, offers, classification=classification or None)


def _publish_offers(request: Request, session: Session, principal: Principal, asset_id: str,
                    parsed: list[Any], classification: str | None = None) -> Response:
    from pydantic import ValidationError

    from broker.catalog import service
    from broker.catalog.schemas import AssetMetadata

    runtime = get_runtime(request)
    latest = service._owned_latest(session, principal.org_id, asset_id)  # 404 / not_asset_owner / withdrawn
    bbox = latest.bbox
    fields = {"title": latest.title, "description": latest.description or "", "keywords": list(latest.keywords),
              "twin_category": latest.twin_category, "entity_type": latest.entity_type, "region": latest.region,
              "classification": classification or latest.classification, "domain": latest.domain,
              "bbox": list(bbox) if bbox and None not in bbox else None,
              "time_start": latest.time_start, "time_end": latest.time_end, "columns": list(latest.columns),
              "row_count": latest.row_count, "content_hash": latest.content_hash, "deid_report": latest.deid_report,
              "deid_report_hash": latest.deid_report_hash, "offers": parsed}
    if not latest.data_endpoint:
        raise BadRequest("This version has no connector endpoint; publish it again from the provider's "
                         "connector.", code="missing_data_endpoint")
    fields["data_endpoint"] = latest.data_endpoint  # the manifest is fetched and checked again
    try:
        AssetMetadata.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise BadRequest(f"The offers are not valid: {problems}", code="bad_offers") from None
    from broker.catalog.schemas import Offer

    if [Offer.model_validate(o).model_dump() for o in parsed] == \
            [Offer.model_validate(o).model_dump() for o in latest.offers] and \
            (classification or latest.classification) == latest.classification:
        return _redirect(request, "/assets", "The offers are unchanged; no new version published.")
    meta = AssetMetadata.model_validate(fields)
    asset = service.new_version(session, principal.org_id, asset_id, meta, settings=runtime.settings,
                                known_policy=lambda policy_id: runtime.known_policy(session, policy_id))
    return _redirect(request, "/assets", f"Offers updated: {asset.title} is now version {asset.version}.")
