"""The FastAPI application factory."""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI

from broker import __version__
from broker.api.routes import api_routes, assert_routes_guarded, is_public
from broker.api.gate import AuthGateMiddleware, public_checker
from broker.api.jsonguard import StrictJsonMiddleware
from broker.api.limits import BodySizeLimitMiddleware
from broker.api.ratelimit import DataRateLimitMiddleware, RateLimiter
from broker.api.problems import install_problem_handlers
from broker.policy.service import policy_exists
from broker.runtime import Runtime
from broker.settings import Settings, get_settings

# Each feature exposes `router` in one module; add one line per feature.
ROUTERS = [
    "broker.api.health",
    "broker.identity.api",
    "broker.audit.api",
    "broker.catalog.api",
    "broker.catalog.connectors_api",
    "broker.policy.api",
    "broker.contracts.api",
    "broker.transfer.api",
    "broker.privacy.api",
    "broker.console.routes",
]


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    runtime = runtime or Runtime.start(settings)
    app = FastAPI(title="TwinSpace broker", version=__version__,
                  description="Trusted data space for digital-twin city assets.")
    app.state.runtime = runtime
    runtime.known_policy = lambda session, policy_id: policy_exists(session, policy_id, runtime.settings)
    _load_policy_bundle(runtime)
    install_problem_handlers(app)
    for module_path in ROUTERS:
        app.include_router(importlib.import_module(module_path).router)
    app.state.api_routes = api_routes(app.router)
    assert_routes_guarded(app.state.api_routes)
    app.add_middleware(StrictJsonMiddleware)  # innermost: after authentication, inside the size limit
    if runtime.limiter is None:
        runtime.limiter = RateLimiter(settings)
    app.add_middleware(DataRateLimitMiddleware, limiter=runtime.limiter)  # inside the gate: reads its claims
    app.add_middleware(AuthGateMiddleware, fastapi_app=app,
                       public_paths_check=public_checker([r for r in app.state.api_routes if not is_public(r)]))
    app.add_middleware(BodySizeLimitMiddleware, default_limit=settings.max_body_bytes,
                       query_limit=settings.max_query_body_bytes)
    return app


def _load_policy_bundle(runtime: Runtime) -> None:
    """A configured signed bundle is verified before the first request (a bad one stops the start-up) and its
    revision is logged, so an auditor sees which rules decided from when."""
    from broker.audit import log_event
    from broker.policy.engine import bundle_info

    info = bundle_info(runtime.settings)
    if info is not None:
        log_event(runtime.engine, "policy.bundle_loaded", actor="broker", details=info)


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1, settings: Settings | None = None) -> None:
    """Run the broker under uvicorn with bounded shutdown: on SIGTERM it stops accepting, lets in-flight
    requests finish for ``graceful_shutdown_seconds``, then exits anyway (a stuck client cannot hold it)."""
    import uvicorn

    settings = settings or get_settings()
    uvicorn.run("broker.app:create_app", factory=True, host=host, port=port, workers=workers,
                timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
                timeout_keep_alive=5, log_level=settings.log_level.lower())
    from twinspace.shutdown import exit_after_shutdown

    exit_after_shutdown()
