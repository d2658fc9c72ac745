"""Console sessions: the broker access token in a Secure, HttpOnly, SameSite=Strict cookie, verified on
every request exactly like a bearer token (signature, expiry, org and key still active), plus CSRF
protection (a synchroniser token bound to the session) and logout revocation."""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timezone

from fastapi import Depends, Request
from sqlmodel import Session

from broker.api.deps import Principal, RoleGuard, authenticate_token, db_session, get_runtime
from broker.runtime import Runtime
from twinspace.crypto import b64url, sign
from twinspace.errors import Forbidden, Unauthorized

SESSION_COOKIE = "ts_console"
LOGIN_COOKIE = "ts_console_login"
COOKIE_PATH = "/console"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_REVOKED_PREFIX = "console-logout:"


def csrf_token(runtime: Runtime, token_id: str) -> str:
    """Synchroniser token: the broker's (deterministic) Ed25519 signature over the session's token id.
    Replicas share the broker key, so any replica can check it; it changes with every session."""
    return b64url(sign(runtime.broker_key, b"twinspace-console-csrf\x00" + token_id.encode()))[:43]


def revoke_session(runtime: Runtime, token_id: str) -> None:
    ttl = runtime.settings.access_token_ttl_seconds + 2 * runtime.settings.clock_skew_seconds
    runtime.replay.claim(_REVOKED_PREFIX + token_id, ttl)


def session_revoked(runtime: Runtime, session: Session, token_id: str) -> bool:
    """Logged-out sessions are remembered in the shared replay store (database or Redis) until they expire."""
    key = _REVOKED_PREFIX + token_id
    client = getattr(runtime.replay, "client", None)
    if client is not None:  # RedisReplayStore
        return bool(client.exists(f"twinspace:jti:{key}"))
    from broker.identity.models import UsedAssertion

    row = session.get(UsedAssertion, key)
    if row is None:
        return False
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=timezone.utc)
    return expires > datetime.now(timezone.utc)


def same_origin(request: Request) -> bool:
    """Defence in depth beside SameSite=Strict and the CSRF token: a browser's Origin must be ours."""
    origin = request.headers.get("origin")
    if origin is None:  # not a browser, or an old one: the CSRF token still has to match
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def check_csrf(request: Request, expected: str) -> None:
    if request.method in SAFE_METHODS:
        return
    if not same_origin(request):
        raise Forbidden("Cross-origin console requests are refused.", code="csrf_origin")
    supplied = request.headers.get("x-csrf-token")
    if supplied is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        supplied = (await request.form()).get("csrf")
    if not isinstance(supplied, str) or not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise Forbidden("Missing or wrong CSRF token; reload the page and try again.", code="csrf_failed")


def session_principal(request: Request, session: Session) -> Principal:
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise Unauthorized("Log in to the console first.", code="missing_session")
    runtime = get_runtime(request)
    principal = authenticate_token(token, runtime, session)
    if session_revoked(runtime, session, principal.token_id):
        raise Unauthorized("This console session was logged out.", code="session_ended")
    request.state.principal = principal
    return principal


class ConsoleGuard(RoleGuard):
    """``RoleGuard`` for console routes: the principal comes from the session cookie (same verification
    as a bearer token), the same roles are enforced, and state-changing requests need the CSRF token."""

    async def __call__(self, request: Request, session: Session = db_session) -> Principal:  # type: ignore[override]
        principal = session_principal(request, session)
        if principal.role not in self.roles:
            raise Forbidden(f"This page is for {', '.join(self.roles)}; you are {principal.role}.", code="wrong_role")
        await check_csrf(request, csrf_token(get_runtime(request), principal.token_id))
        return principal


def console_roles(*roles: str):
    return Depends(ConsoleGuard(tuple(roles)))


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)
