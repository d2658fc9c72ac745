"""Authentication before anything else: a request to a guarded route without a validly signed broker
token is refused with 401 before its body is read or validated, so unauthenticated callers learn
nothing about route schemas. Role, org and key checks still happen in the route's ``RoleGuard``."""

from __future__ import annotations

from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.api.deps import CLAIMS_STATE
from broker.api.problems import problem_response
from twinspace.errors import Unauthorized
from twinspace.tokens import decode_access_token


class AuthGateMiddleware:
    def __init__(self, app: ASGIApp, fastapi_app, public_paths_check):
        self.app, self.fastapi_app, self.is_public = app, fastapi_app, public_paths_check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_public(scope):
            await self.app(scope, receive, send)
            return
        runtime = self.fastapi_app.state.runtime
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token:
                raise Unauthorized("This route needs a bearer access token.", code="missing_token")
            token = token.strip()
            claims = decode_access_token(token, runtime.broker_key.public_key(), issuer=runtime.settings.issuer,
                                         leeway=runtime.settings.clock_skew_seconds)
        except Unauthorized as exc:
            path = scope.get("path") or ""
            if path.startswith("/dsp/"):  # a DSP peer gets the protocol's error object
                from fastapi.responses import JSONResponse

                from twinspace.dsp.errors import error_object, protocol_of

                response = JSONResponse(error_object(protocol_of(path), code=exc.code, reason=exc.detail),
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
            else:
                response = problem_response(401, exc.code, "Unauthorized", exc.detail, path)
            await response(scope, receive, send)
            return
        # Verified once: the route's principal dependency reuses these claims for this exact token.
        scope.setdefault("state", {})[CLAIMS_STATE] = (token, claims)
        await self.app(scope, receive, send)


def public_checker(guarded_routes) -> callable:
    """A request is public unless it matches a guarded API route (docs, static files and 404s are public)."""

    def is_public(scope: Scope) -> bool:
        for route in guarded_routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return False
        return True

    return is_public
