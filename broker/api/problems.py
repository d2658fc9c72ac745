"""Every error leaves the broker as an RFC 9457 problem document with a stable ``code``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout

from twinspace.errors import TwinSpaceError

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("twinspace.errors")

_HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               406: "not_acceptable", 413: "payload_too_large", 415: "unsupported_media_type"}


def problem_response(status: int, code: str, title: str, detail: str, instance: str | None = None,
                     **extra) -> JSONResponse:
    body = {"type": f"https://twinspace.dev/problems/{code}", "title": title, "status": status,
            "detail": detail, "code": code}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=_headers(status, body))


def _headers(status: int, body: dict) -> dict[str, str] | None:
    if status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if status in (429, 503):  # overload, rate limits, a dependency down: tell clients when to come back
        return {"Retry-After": str(body.get("retry_after") or 2)}
    return None


def _validation_errors(exc: RequestValidationError) -> list[dict]:
    # Echo locations and messages, never the submitted values (they may be secrets or row data).
    return [{"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()]


def _audit_refusal(request: Request, exc: TwinSpaceError) -> None:
    """Refusals are security events too. The request's own transaction was rolled back, so the
    entry is appended on its own (durably) — a denied publish or transfer still leaves a trace."""
    if request.url.path == "/auth/token" or exc.status == 503:  # the token endpoint records auth.denied
        return  # itself; 503 is overload or an outage, not a decision about the caller
    from broker.audit import log_event

    principal = getattr(request.state, "principal", None)
    engine = request.app.state.runtime.engine
    try:
        for event in getattr(exc, "audit_events", ()):  # e.g. the deny decision behind a policy refusal
            log_event(engine, event["kind"], **{k: v for k, v in event.items() if k != "kind"})
        log_event(engine, "request.refused", actor=getattr(principal, "org_id", None),
                  outcome="deny", details={"method": request.method, "path": request.url.path,
                                           "status": exc.status, "code": exc.code})
    except Exception:  # noqa: BLE001 - never mask the refusal itself
        log.exception("could not audit a refused request")


def _retry_after(request: Request) -> int:
    runtime = getattr(request.app.state, "runtime", None)
    return getattr(getattr(runtime, "settings", None), "retry_after_seconds", 2)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(TwinSpaceError)
    async def _twinspace(request: Request, exc: TwinSpaceError):
        if exc.status != 503:
            await run_in_threadpool(_audit_refusal, request, exc)
        body = exc.to_problem(request.url.path)
        return JSONResponse(body, status_code=exc.status, media_type=PROBLEM_JSON,
                            headers=_headers(exc.status, body))

    @app.exception_handler(SQLAlchemyTimeout)
    async def _pool_timeout(request: Request, exc: SQLAlchemyTimeout):
        log.warning("database pool exhausted on %s %s", request.method, request.url.path)
        return problem_response(503, "database_busy", "Service Unavailable",
                                "The database is at capacity; retry shortly.", request.url.path,
                                retry_after=_retry_after(request))

    @app.exception_handler(DBAPIError)
    async def _database_down(request: Request, exc: DBAPIError):
        if not (exc.connection_invalidated or isinstance(exc, OperationalError)):
            return await _unexpected(request, exc)
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
        return problem_response(503, "database_unavailable", "Service Unavailable",
                                "The database is unavailable or locked; retry shortly.", request.url.path,
                                retry_after=_retry_after(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = _validation_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return problem_response(400, "malformed_json", "Bad Request", "The request body is not valid JSON.",
                                    request.url.path)
        return problem_response(422, "validation_failed", "Unprocessable Content",
                                "The request does not match the expected schema.", request.url.path,
                                errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return problem_response(exc.status_code, code, code.replace("_", " ").capitalize(), str(exc.detail),
                                request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal_error", "Internal Server Error",
                                "The broker failed to handle this request; it has been logged.", request.url.path)
