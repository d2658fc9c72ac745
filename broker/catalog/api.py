"""Catalog routes (thin): publish (metadata + the connector's manifest), new version, withdraw, search, get,
DCAT export."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, require_roles
from broker.catalog import export, service
from broker.catalog.schemas import AssetMetadata, Classification, TwinCategory
from twinspace.errors import BadRequest, NotFound
from broker.schemas import StrictModel

router = APIRouter(prefix="/catalog", tags=["catalog"])
COUNT_CAP = 1000  # a list counts at most this many matches unless exact_total=true (docs/catalog.md#queries)


class WithdrawIn(StrictModel):
    reason: str | None = None


def _bbox(value: str | None) -> list[float] | None:
    if not value:
        return None
    try:
        parts = [float(x) for x in value.split(",")]
    except ValueError as exc:
        raise BadRequest("bbox is min_lon,min_lat,max_lon,max_lat", code="bad_bbox") from exc
    if len(parts) != 4 or parts[0] > parts[2] or parts[1] > parts[3]:
        raise BadRequest("bbox is min_lon,min_lat,max_lon,max_lat with min <= max", code="bad_bbox")
    return parts


@router.post("/assets", status_code=201)
def publish(body: AssetMetadata, request: Request, principal: Principal = require_roles("provider"),
            session: Session = db_session) -> dict[str, Any]:
    runtime = get_runtime(request)
    asset = service.publish(session, principal.org_id, body, settings=runtime.settings,
                            known_policy=lambda policy_id: runtime.known_policy(session, policy_id))
    return service.asset_view(asset)


@router.post("/assets/{asset_id}/versions", status_code=201)
def new_version(asset_id: str, body: AssetMetadata, request: Request,
                principal: Principal = require_roles("provider"),
                session: Session = db_session) -> dict[str, Any]:
    runtime = get_runtime(request)
    asset = service.new_version(session, principal.org_id, asset_id, body, settings=runtime.settings,
                                known_policy=lambda policy_id: runtime.known_policy(session, policy_id))
    return service.asset_view(asset)


@router.post("/assets/{asset_id}/withdraw")
def withdraw(asset_id: str, body: WithdrawIn | None = None, principal: Principal = require_roles("provider"),
             session: Session = db_session) -> dict[str, Any]:
    asset = service.withdraw(session, principal.org_id, asset_id, body.reason if body else None)
    return service.asset_view(asset)


@router.get("/assets")
def search(q: str | None = Query(None, max_length=200), twin_category: TwinCategory | None = None,
           entity_type: str | None = Query(None, max_length=64), domain: str | None = Query(None, max_length=64),
           classification: Classification | None = None, provider: str | None = Query(None, max_length=64),
           bbox: str | None = Query(None, description="min_lon,min_lat,max_lon,max_lat (intersects)"),
           time_from: datetime | None = None, time_to: datetime | None = None,
           include_history: bool = False, limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0),
           cursor: str | None = Query(None, max_length=400, description="next_cursor of the previous page"),
           exact_total: bool = Query(False, description=f"count every match (O(matches)); by default counting "
                                                        f"stops after {COUNT_CAP} and total_exact is false"),
           principal: Principal = require_roles(*ALL_ROLES), session: Session = db_session) -> dict[str, Any]:
    page = service.search_page(session, org_id=principal.org_id, role=principal.role, org_type=principal.org_type,
                               attributes=principal.attributes, q=q, twin_category=twin_category,
                               entity_type=entity_type, domain=domain, classification=classification,
                               provider=provider, bbox=_bbox(bbox), time_from=time_from, time_to=time_to,
                               include_history=include_history, limit=limit, offset=offset, cursor=cursor,
                               count_cap=None if exact_total else COUNT_CAP)
    return {"items": [service.asset_view(a, full=False) for a in page.items], "total": page.total,
            "total_exact": page.total_exact, "limit": limit, "offset": offset, "next_cursor": page.next_cursor}


@router.get("/assets/{asset_id}")
def get_asset(asset_id: str, version: int | None = Query(None, ge=1), principal: Principal = require_roles(*ALL_ROLES),
              session: Session = db_session) -> dict[str, Any]:
    try:
        asset = service.get_asset(session, asset_id, version)
    except NotFound:
        asset = None
    if asset is None or not service.can_see(asset, org_id=principal.org_id, role=principal.role,
                                            org_type=principal.org_type, attributes=principal.attributes):
        raise NotFound(f"No asset {asset_id} visible to you.", code="asset_not_found")
    return service.asset_view(asset)


@router.get("/dcat", response_class=StreamingResponse,
            responses={200: {"content": {"application/ld+json": {}, "text/turtle": {}}}})
def dcat_catalog(request: Request, format: Literal["jsonld", "turtle"] | None = Query(
                     None, description="jsonld (default) or turtle; otherwise the Accept header decides"),
                 principal: Principal = require_roles(*ALL_ROLES)) -> StreamingResponse:
    """Everything the caller may see as DCAT-AP 3.0.1, streamed (complete at any catalog size)."""
    fmt = export.negotiate(format, request.headers.get("accept"))
    runtime = get_runtime(request)
    body = export.stream(runtime.engine, principal=principal, base_url=str(request.base_url).rstrip("/"),
                         fmt=fmt, operator=runtime.settings.issuer)
    return StreamingResponse(body, media_type=export.MEDIA_TYPES[fmt], headers={"Vary": "Accept"})
