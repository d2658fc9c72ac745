"""Login with a private key that never leaves the browser, logout, the home page."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import Field
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, public_route
from broker.console.auth import (COOKIE_PATH, LOGIN_COOKIE, SESSION_COOKIE, console_roles, new_login_nonce,
                                 revoke_session, same_origin)
from broker.console.views import _redirect, _root, _secure_cookie, render, templates
from broker.schemas import StrictModel
from twinspace.errors import Forbidden, TwinSpaceError

router = APIRouter()


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
