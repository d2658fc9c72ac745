"""Connector registry routes (thin): ``POST /connectors`` (provider), ``GET /connectors``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, require_roles
from broker.catalog import endpoints
from broker.schemas import StrictModel

router = APIRouter(prefix="/connectors", tags=["connectors"])


class ConnectorIn(StrictModel):
    endpoint: str = Field(min_length=1, max_length=400)


@router.post("", status_code=201)
def register_connector(body: ConnectorIn, request: Request, principal: Principal = require_roles("provider"),
                       session: Session = db_session) -> dict[str, Any]:
    row = endpoints.register(session, get_runtime(request).settings, principal.org_id, body.endpoint)
    return endpoints.view(row)


@router.get("")
def list_connectors(principal: Principal = require_roles(*ALL_ROLES), session: Session = db_session) -> dict[str, Any]:
    rows = endpoints.list_connectors(session, org_id=principal.org_id, role=principal.role)
    return {"items": [endpoints.view(r) for r in rows]}
