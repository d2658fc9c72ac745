"""The console sub-application: templates, static files, error pages, security headers, deny by default."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.api.problems import PROBLEM_JSON, _audit_refusal, install_problem_handlers
from broker.console.auth import csrf_token
from broker.console.views import HERE, templates
from broker.runtime import Runtime
from twinspace.errors import TwinSpaceError

CSP_TEMPLATE = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "connect-src 'self'{connectors}; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                "form-action 'self'")
CSP = CSP_TEMPLATE.format(connectors="")
OTHER_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                 (b"x-frame-options", b"DENY"), (b"cross-origin-opener-policy", b"same-origin")]
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), *OTHER_HEADERS]
# A connector origin as it may appear in connect-src: scheme, host (name, IPv4 or bracketed IPv6), port.
_ORIGIN = re.compile(r"^https?://(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$")


def connector_origins(runtime: Runtime) -> list[str]:
    """The origins of the verified connectors the broker knows (``ConnectorEndpoint``): the browser pulls
    data from them itself, so the console's ``connect-src`` admits exactly these, and nothing else."""
    from urllib.parse import urlsplit

    from sqlmodel import Session, select

    from broker.catalog.models import ConnectorEndpoint

    try:
        with Session(runtime.engine) as session:
            endpoints = session.exec(select(ConnectorEndpoint.endpoint)
                                     .where(ConnectorEndpoint.status == "verified")).all()
    except Exception:  # noqa: BLE001 - no table yet (fresh database): no connector origins
        return []
    out: list[str] = []
    for endpoint in endpoints:
        parts = urlsplit(str(endpoint))
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        if _ORIGIN.match(origin) and "@" not in parts.netloc and origin not in out:
            out.append(origin)
    return sorted(out)


def csp_for(origins: list[str]) -> str:
    return CSP_TEMPLATE.format(connectors="".join(" " + o for o in origins))


class SecurityHeaders:
    """Strict CSP (no inline script or style), no framing, no caching of pages that carry account data.
    ``connect-src`` names this origin and the registered connectors' (where the browser pulls data)."""

    def __init__(self, app: ASGIApp, runtime: Runtime | None = None):
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = "/static/" in scope.get("path", "")
        origins = [] if static or self.runtime is None else await run_in_threadpool(connector_origins, self.runtime)
        csp = csp_for(origins).encode()

        async def wrapped(message):
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"cache-control"] \
                    if not static else list(message.get("headers", []))
                headers += [(b"content-security-policy", csp), *OTHER_HEADERS]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, wrapped)


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and request.headers.get("x-requested-with") != "fetch"


def create_console_app(runtime: Runtime) -> FastAPI:
    from broker.api.routes import api_routes, assert_routes_guarded
    from broker.console import pages

    console = FastAPI(title="TwinSpace console", docs_url=None, redoc_url=None, openapi_url=None)
    console.state.runtime = runtime
    install_problem_handlers(console)

    @console.exception_handler(TwinSpaceError)
    async def _refused(request: Request, exc: TwinSpaceError):
        await run_in_threadpool(_audit_refusal, request, exc)
        if wants_html(request):
            root = request.scope.get("root_path", "")
            principal = getattr(request.state, "principal", None)
            # A signed-in user refused a page still gets a working header (its logout form needs the token).
            csrf = csrf_token(runtime, principal.token_id) if principal is not None else ""
            response = templates.TemplateResponse(
                request, "error.html", {"status": exc.status, "code": exc.code, "detail": exc.detail, "root": root,
                                        "principal": principal, "csrf": csrf},
                status_code=exc.status)
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Cookie realm="twinspace-console"'
            return response
        response = JSONResponse(exc.to_problem(request.url.path), status_code=exc.status, media_type=PROBLEM_JSON)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Cookie realm="twinspace-console"'
        return response

    console.include_router(pages.router)
    console.include_router(__import__("broker.console.profile_page", fromlist=["router"]).router)
    console.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    console.state.api_routes = api_routes(console.router)
    assert_routes_guarded(console.state.api_routes)  # deny by default, the same rule as the API
    console.add_middleware(SecurityHeaders, runtime=runtime)
    return console
