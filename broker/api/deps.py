"""Request-scoped dependencies: the DB session, the authenticated principal and role guards.

Deny by default: ``create_app`` refuses to start if any route lacks a ``require_roles`` guard
or the explicit ``public_route`` marker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from broker.audit import defer_appends, has_pending
from twinspace.errors import Forbidden, Unauthorized
from broker.identity.service import active_key
from twinspace.tokens import decode_access_token
from broker.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="Broker access token from POST /auth/token")


@dataclass(frozen=True)
class Principal:
    org_id: str
    role: str
    org_name: str
    token_id: str
    cnf_kid: str
    attributes: dict[str, Any] = field(default_factory=dict)
    org_type: str = "other"


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _finish(session: Session, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back when it raises.

    The request first takes a database slot (``broker.storage.gate``), waiting in the event loop —
    without a thread or a connection — so sessions never outnumber pooled connections. The commit
    is shielded: a client that disconnects cannot leave a half-finished unit of work holding its
    connection.
    """
    runtime = get_runtime(request)
    async with runtime.gate.slot():
        session = Session(runtime.engine, expire_on_commit=False)
        session.info["twinspace_runtime"] = runtime  # what work after the commit needs (broker.transfer.notices)
        defer_appends(session)
        try:
            yield session
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(_finish, session, False)
            raise
        with anyio.CancelScope(shield=True):
            if session.in_transaction() or session.new or session.dirty or session.deleted or has_pending(session):
                await run_in_threadpool(_finish, session, True)
            else:  # nothing was read or written since the principal check: no thread hop needed
                session.close()


# The one way routes get the session. Scope "function": the transaction commits (or fails) before the
# response is sent, so a client never sees a success whose writes are not durable, and its next request
# reads its own writes (FastAPI's default for yield dependencies ends them after the response).
db_session = Depends(get_session, scope="function")

# Where the auth gate leaves the claims it verified, so a request verifies its access token once.
CLAIMS_STATE = "twinspace_access_claims"


def verified_claims(request: Request, token: str) -> dict[str, Any]:
    """The access token's claims: from the auth gate when it verified this very token, else verified now."""
    runtime = get_runtime(request)
    seen = request.scope.get("state", {}).get(CLAIMS_STATE)
    if seen is not None and seen[0] == token:
        return seen[1]
    return decode_access_token(token, runtime.broker_key.public_key(), issuer=runtime.settings.issuer,
                               leeway=runtime.settings.clock_skew_seconds)


def principal_from_claims(claims: dict[str, Any], session: Session) -> Principal:
    """Re-check, on every request, that the org and its key are still valid (revocation is immediate)."""
    kid = (claims.get("cnf") or {}).get("kid")
    if not isinstance(kid, str):
        raise Unauthorized("The access token is not bound to a key.", code="invalid_token")
    org, _key = active_key(session, kid)
    if org.id != claims["sub"] or org.role != claims.get("role"):
        raise Unauthorized("The access token does not match the registry.", code="invalid_token")
    return Principal(org_id=org.id, role=org.role, org_name=org.name, token_id=claims["jti"], cnf_kid=kid,
                     attributes=dict(org.attributes or {}), org_type=org.org_type)


def authenticate_token(token: str, runtime: Runtime, session: Session) -> Principal:
    """Verify a broker token and re-check the registry (console sessions; bearer routes use the gate)."""
    claims = decode_access_token(token, runtime.broker_key.public_key(), issuer=runtime.settings.issuer,
                                 leeway=runtime.settings.clock_skew_seconds)
    return principal_from_claims(claims, session)


def _registry_check(claims: dict[str, Any], session: Session) -> Principal:
    try:
        return principal_from_claims(claims, session)
    finally:
        # End the read transaction at once: the connection goes back to the pool instead of being
        # held while the request waits for its next thread-pool hop.
        session.rollback()


async def current_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
                            session: Session = db_session) -> Principal:
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("This route needs a bearer access token.", code="missing_token")
    claims = verified_claims(request, credentials.credentials)
    principal = await run_in_threadpool(_registry_check, claims, session)
    request.state.principal = principal
    return principal


class RoleGuard:
    """Dependency that admits only the listed roles; its presence marks a route as guarded."""

    def __init__(self, roles: tuple[str, ...]):
        if not roles:
            raise ValueError("a guarded route must allow at least one role")
        self.roles = roles

    async def __call__(self, principal: Principal = Depends(current_principal)) -> Principal:
        if principal.role not in self.roles:
            raise Forbidden(f"This route is for {', '.join(self.roles)}; you are {principal.role}.",
                            code="wrong_role")
        return principal


def require_roles(*roles: str) -> Any:
    return Depends(RoleGuard(tuple(roles)))


ALL_ROLES = ("provider", "consumer", "auditor", "operator")


def public_marker() -> None:
    """Marks a route as deliberately unauthenticated."""


public_route = Depends(public_marker)
