"""Catalog routes (thin): uploads, publish, new version, withdraw, search, get, DCAT export."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, require_roles
from broker.catalog import dcat, service
from broker.catalog.schemas import AssetMetadata, Classification, TwinCategory, UploadOut
from twinspace.errors import BadRequest, NotFound
from broker.schemas import StrictModel

router = APIRouter(prefix="/catalog", tags=["catalog"])


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


@router.post("/uploads", status_code=201, response_model=UploadOut)
def create_upload(principal: Principal = require_roles("provider"), session: Session = db_session) -> Any:
    upload = service.create_upload(session, principal.org_id)
    return {"upload_id": upload.id, "max_part_bytes": service.MAX_PART_BYTES}


@router.put("/uploads/{upload_id}/parts/{part}")
async def put_part(upload_id: str, part: int, request: Request, principal: Principal = require_roles("provider"),
                   session: Session = db_session) -> dict[str, Any]:
    data = await request.body()
    runtime = get_runtime(request)
    size = await run_in_threadpool(service.add_upload_part, session, principal.org_id, upload_id, part, data,
                                   settings=runtime.settings)
    return {"upload_id": upload_id, "part": part, "bytes_received": size}


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


def _search(session: Session, principal: Principal, **filters: Any) -> tuple[list, int]:
    return service.search(session, org_id=principal.org_id, role=principal.role, org_type=principal.org_type,
                          attributes=principal.attributes, **filters)


@router.get("/assets")
def search(q: str | None = Query(None, max_length=200), twin_category: TwinCategory | None = None,
           entity_type: str | None = Query(None, max_length=64), domain: str | None = Query(None, max_length=64),
           classification: Classification | None = None, provider: str | None = Query(None, max_length=64),
           bbox: str | None = Query(None, description="min_lon,min_lat,max_lon,max_lat (intersects)"),
           time_from: datetime | None = None, time_to: datetime | None = None,
           include_history: bool = False, limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0),
           principal: Principal = require_roles(*ALL_ROLES), session: Session = db_session) -> dict[str, Any]:
    page, total = _search(session, principal, q=q, twin_category=twin_category, entity_type=entity_type,
                          domain=domain, classification=classification, provider=provider, bbox=_bbox(bbox),
                          time_from=time_from, time_to=time_to, include_history=include_history,
                          limit=limit, offset=offset)
    return {"items": [service.asset_view(a) for a in page], "total": total, "limit": limit, "offset": offset}


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


@router.get("/dcat")
def dcat_catalog(principal: Principal = require_roles(*ALL_ROLES),
                 session: Session = db_session) -> JSONResponse:
    page, _ = _search(session, principal, limit=10_000, offset=0)
    return JSONResponse(dcat.catalog(page), media_type="application/ld+json")
