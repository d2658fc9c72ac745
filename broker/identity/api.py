"""Routes: token endpoint (RFC 7523 client assertions) and the participant registry."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import Field, ValidationError
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, public_route, require_roles
from broker.api.ratelimit import client_ip
from broker.audit import record_event
from twinspace.errors import BadRequest, TwinSpaceError
from broker.identity import service
from broker.identity.models import Org
from twinspace.roles import Role
from twinspace.tokens import ASSERTION_TYPE
from broker.runtime import Runtime
from broker.schemas import StrictModel
from broker.storage.db import session_scope

router = APIRouter(tags=["identity"])


class TokenRequest(StrictModel):
    grant_type: Literal["client_credentials"]
    client_assertion_type: Literal[ASSERTION_TYPE]  # type: ignore[valid-type]
    client_assertion: str = Field(min_length=20, max_length=8192)


class TokenResponse(StrictModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    org_id: str
    role: str


class KeyOut(StrictModel):
    kid: str
    public_key: str
    status: str
    created_at: datetime
    revoked_at: datetime | None = None


class OrgOut(StrictModel):
    id: str
    name: str
    role: str
    org_type: str
    status: str
    attributes: dict[str, Any]
    created_at: datetime
    keys: list[KeyOut] = []


class OrgCreate(StrictModel):
    name: str = Field(min_length=2, max_length=200, pattern=r"^[\w][\w .\-()&']*$")
    role: Role
    public_key: str = Field(min_length=43, max_length=44)
    org_type: str = Field("other", min_length=2, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    attributes: dict[str, Any] = Field(default_factory=dict, max_length=50)


class KeyCreate(StrictModel):
    public_key: str = Field(min_length=43, max_length=44)


class OrgStatusUpdate(StrictModel):
    status: Literal["active", "suspended"]


def _org_out(session: Session, org: Org) -> OrgOut:
    keys = [KeyOut(**k.model_dump(include={"kid", "public_key", "status", "created_at", "revoked_at"}))
            for k in service.org_keys(session, org.id)]
    return OrgOut(**org.model_dump(include={"id", "name", "role", "org_type", "status", "attributes",
                                            "created_at"}), keys=keys)


async def _token_request(request: Request) -> TokenRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "application/x-www-form-urlencoded":
            form = await request.form()
            data = {k: v for k, v in form.items()}
        elif content_type == "application/json":
            data = json.loads(await request.body())
        else:
            raise BadRequest("Send the token request as application/x-www-form-urlencoded (RFC 7523) or JSON.",
                             code="unsupported_media_type")
        return TokenRequest.model_validate(data)
    except (ValueError, ValidationError) as exc:
        if isinstance(exc, ValidationError):
            fields = sorted({".".join(map(str, e["loc"])) for e in exc.errors()})
            raise BadRequest(f"Invalid token request fields: {', '.join(fields)}.", code="invalid_request") from None
        raise BadRequest("The token request body is malformed.", code="malformed_body") from None


def _issue_token(runtime: Runtime, assertion: str) -> TokenResponse:
    """The whole exchange in one thread-pool hop and one unit of work (the replay claim included)."""
    try:
        with session_scope(runtime.engine) as session:
            grant = service.authenticate(session, runtime.settings, runtime.replay, runtime.broker_key, assertion)
            runtime.limiter.hit("auth_org", grant.org.id)
            return TokenResponse(access_token=grant.access_token, expires_in=grant.expires_in,
                                 org_id=grant.org.id, role=grant.org.role)
    except TwinSpaceError as exc:
        if exc.status != 503:  # an outage is not a decision about the caller
            with session_scope(runtime.engine) as session:
                record_event(session, "auth.denied", actor=None, outcome="deny", details={"code": exc.code})
        raise


@router.post("/auth/token", dependencies=[public_route], response_model=TokenResponse)
async def token(request: Request, runtime: Runtime = Depends(get_runtime)) -> TokenResponse:
    """Exchange a signed client assertion (private_key_jwt) for a short-lived access token."""
    runtime.limiter.hit("auth_ip", client_ip(request.scope))
    body = await _token_request(request)
    async with runtime.gate.slot():
        return await run_in_threadpool(_issue_token, runtime, body.client_assertion)


@router.get("/orgs/me", response_model=OrgOut)
def whoami(principal: Principal = require_roles(*ALL_ROLES), session: Session = db_session) -> OrgOut:
    return _org_out(session, service.get_org(session, principal.org_id))


@router.get("/orgs", response_model=list[OrgOut])
def list_orgs(role: Role | None = None, _: Principal = require_roles(*ALL_ROLES),
              session: Session = db_session) -> list[OrgOut]:
    """The participant directory: names, roles and public keys (needed to verify signatures offline)."""
    return [_org_out(session, o) for o in service.list_orgs(session, role.value if role else None)]


@router.get("/orgs/{org_id}", response_model=OrgOut)
def get_org(org_id: str, _: Principal = require_roles(*ALL_ROLES), session: Session = db_session) -> OrgOut:
    return _org_out(session, service.get_org(session, org_id))


@router.post("/orgs", response_model=OrgOut, status_code=201)
def create_org(body: OrgCreate, principal: Principal = require_roles("operator"),
               session: Session = db_session) -> OrgOut:
    """Onboard a participant with its public key (operator only)."""
    org, _ = service.register_org(session, name=body.name, role=body.role, public_key=body.public_key,
                                  org_type=body.org_type, attributes=body.attributes, actor=principal.org_id)
    return _org_out(session, org)


@router.patch("/orgs/{org_id}", response_model=OrgOut)
def update_org_status(org_id: str, body: OrgStatusUpdate, principal: Principal = require_roles("operator"),
                      session: Session = db_session) -> OrgOut:
    org = service.set_org_status(session, org_id, body.status, actor=principal.org_id)
    return _org_out(session, org)


@router.post("/orgs/me/keys", response_model=KeyOut, status_code=201)
def add_my_key(body: KeyCreate, principal: Principal = require_roles(*ALL_ROLES),
               session: Session = db_session) -> KeyOut:
    """Rotate: register a new public key for your own organisation."""
    key = service.add_key(session, principal.org_id, body.public_key, actor=principal.org_id)
    return KeyOut(**key.model_dump(include={"kid", "public_key", "status", "created_at", "revoked_at"}))


@router.post("/orgs/me/keys/{kid}/revoke", response_model=KeyOut)
def revoke_my_key(kid: str, principal: Principal = require_roles(*ALL_ROLES),
                  session: Session = db_session) -> KeyOut:
    key = service.revoke_key(session, principal.org_id, kid, actor=principal.org_id)
    return KeyOut(**key.model_dump(include={"kid", "public_key", "status", "created_at", "revoked_at"}))


@router.post("/orgs/{org_id}/keys/{kid}/revoke", response_model=KeyOut)
def revoke_key(org_id: str, kid: str, principal: Principal = require_roles("operator"),
               session: Session = db_session) -> KeyOut:
    """Operator revokes a compromised key of any organisation."""
    key = service.revoke_key(session, org_id, kid, actor=principal.org_id)
    return KeyOut(**key.model_dump(include={"kid", "public_key", "status", "created_at", "revoked_at"}))
