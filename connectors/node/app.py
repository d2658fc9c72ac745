"""The connector's HTTP API (docs/data-plane.md): well-known document, ownership proofs, manifests,
the pull route (the PEP in ``pep.py``), the broker's revocations of leased decisions, health. Every error is an RFC 9457 problem."""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from connectors.node import compute_api, push
from connectors.node.config import NodeConfig
from connectors.node.pep import POP_HEADER, TOKEN_HEADER, Enforcer
from connectors.node.store import HEX64
from twinspace.crypto import public_key_b64
from twinspace.dataplane import MANIFEST, OWNERSHIP, REVOCATION, sign_message, verify_message
from twinspace.errors import BadRequest, NotFound, PayloadTooLarge, ServiceUnavailable, TwinSpaceError

log = logging.getLogger("twinspace.connector")
PROBLEM = "application/problem+json"
RETRY_AFTER_SECONDS = 1  # a busy broker or a full store: retryable answers say when (429 and 503)


def problem_response(status: int, code: str, title: str, detail: str, extra: dict[str, Any] | None = None,
                     instance: str | None = None) -> JSONResponse:
    body = {"type": f"https://twinspace.dev/problems/{code}", "title": title, "status": status, "detail": detail,
            "code": code, **(extra or {})}
    if instance:
        body["instance"] = instance
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status in (429, 503) else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


class OwnershipRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nonce: str = Field(min_length=16, max_length=256)
    audience: str = Field(min_length=1, max_length=512)


def pull_query(params) -> tuple[str, str | None, int | None]:
    """``format``, ``columns`` and ``limit`` of a pull, each given at most once."""
    for name in params:
        if name not in ("format", "columns", "limit"):
            raise BadRequest(f"Unknown query parameter {name!r} (format, columns, limit).", code="invalid_query")
        if len(params.getlist(name)) > 1:
            raise BadRequest(f"The query parameter {name!r} is given more than once.", code="invalid_query")
    limit = params.get("limit")
    if limit is not None:
        if not limit.isascii() or not limit.isdigit() or len(limit) > 9:
            raise BadRequest("limit is a row count of 0 or more.", code="invalid_limit")
        limit = int(limit)
    return params.get("format", "csv"), params.get("columns"), limit


class RevocationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    notice: str = Field(min_length=1, max_length=1 << 20)


class BodyLimit:
    """ASGI middleware: refuse request bodies above the limit (by Content-Length, and while reading)."""

    def __init__(self, app, limit: int, compute_limit: int):
        self.app, self.limit, self.compute_limit = app, limit, compute_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = self.compute_limit if scope.get("path", "").startswith("/compute") else self.limit
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = True
                if too_big:
                    response = problem_response(413, "payload_too_large", "Payload Too Large",
                                                f"Request bodies are limited to {limit} bytes.")
                    return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"Request bodies are limited to {limit} bytes.")
            return message

        return await self.app(scope, limited, send)


CORS_ENV = "TWINSPACE_CONNECTOR_CORS_ORIGINS"
# What a browser consumer (the broker's console) may send and read on a pull: the two data-plane headers in,
# the receipt, row count and content hash out. No credentials: the token and the proof are the authority.
CORS_REQUEST_HEADERS = [TOKEN_HEADER, POP_HEADER]
CORS_EXPOSE_HEADERS = ["X-TwinSpace-Receipt", "X-TwinSpace-Rows", "X-TwinSpace-Content-Hash", "Content-Disposition"]


def cors_allow_list(origins) -> list[str]:
    """The browser origins allowed to pull (``scheme://host[:port]``, as a browser sends ``Origin``):
    a list, or one string separated by commas or spaces (the ``TWINSPACE_CONNECTOR_CORS_ORIGINS`` form).
    A wildcard, a path, a query or userinfo is refused: the list names exact origins."""
    from urllib.parse import urlsplit

    if isinstance(origins, str):
        origins = origins.replace(",", " ").split()
    out: list[str] = []
    for raw in origins or []:
        text = str(raw).strip()
        if not text:
            continue
        parts = urlsplit(text)
        if text == "*" or "*" in text or parts.scheme not in ("http", "https") or not parts.hostname \
                or parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"not a browser origin (scheme://host[:port]): {text!r}")
        port = parts.port
        default = {"http": 80, "https": 443}[parts.scheme]
        host = parts.hostname.lower()
        if ":" in host:
            host = f"[{host}]"
        origin = f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")
        if origin not in out:
            out.append(origin)
    return out


def create_node_app(config: NodeConfig, cors_origins: list[str] | str | None = None) -> FastAPI:
    """``cors_origins``: browser origins allowed to pull (the console of the broker); default the config's
    ``cors_origins`` if it has one, else ``TWINSPACE_CONNECTOR_CORS_ORIGINS``; none: no CORS at all."""
    pep = Enforcer(config)
    if cors_origins is None:
        cors_origins = getattr(config, "cors_origins", None) or os.environ.get(CORS_ENV, "")
    origins = cors_allow_list(cors_origins)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        config.outbox.start(config.outbox_interval)
        try:
            yield
        finally:
            config.receipts.close()
            config.outbox.stop()

    app = FastAPI(title="TwinSpace connector", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.config = config
    app.state.enforcer = pep

    @app.exception_handler(TwinSpaceError)
    async def twinspace_error(request: Request, exc: TwinSpaceError):
        return problem_response(exc.status, exc.code, exc.title, exc.detail, exc.extra, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return problem_response(422, "invalid_request", "Unprocessable Content",
                                "The request does not match the expected shape.", {"errors": errors[:20]},
                                request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        return problem_response(exc.status_code, code, str(exc.detail), str(exc.detail), None, request.url.path)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return problem_response(500, "internal_error", "Internal Server Error",
                                "The connector failed to handle the request.", None, request.url.path)

    @app.get("/.well-known/twinspace-connector")
    def well_known() -> dict[str, Any]:
        return {"endpoint": config.endpoint, "org_id": config.org_id, "kid": config.kid,
                "public_key": public_key_b64(config.public_key)}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.post("/ownership")
    def ownership(body: OwnershipRequest) -> dict[str, str]:
        proof = sign_message(config.private_key, OWNERSHIP, issuer=config.org_id, audience=body.audience,
                             claims={"endpoint": config.endpoint, "nonce": body.nonce, "org": config.org_id})
        return {"proof": proof}

    @app.get("/assets/{sha256}/manifest")
    def manifest(sha256: str) -> dict[str, str]:
        if not HEX64.match(sha256):
            raise BadRequest("An asset is named by its SHA-256 (64 lower-case hex digits).", code="invalid_sha256")
        data = config.store.read(sha256)
        if data is None:
            raise NotFound("No file with this SHA-256 is served here.", code="data_not_found")
        import pyarrow as pa

        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
        return {"manifest": sign_message(config.private_key, MANIFEST, issuer=config.org_id,
                                         audience=config.broker_issuer,
                                         claims={"endpoint": config.endpoint, "org": config.org_id, "sha256": sha256,
                                                 "rows": table.num_rows, "bytes": len(data), "columns": columns})}

    async def pull(request: Request):
        """The hot path runs in the event loop without a thread hop: token (verified once), proof, a lease,
        a small answer from memory; the broker is asked (in a worker thread) only when no lease covers it.
        Query: ``format`` (csv, json, parquet), ``columns`` (comma-separated), ``limit`` (rows)."""
        pid = request.path_params["pid"]
        if len(pid) > 256:
            raise BadRequest("The transfer id is too long.", code="invalid_transfer_id")
        format, columns, limit = pull_query(request.query_params)
        headers = request.headers
        admitted = pep.admit(pid, token=headers.get(TOKEN_HEADER), proof=headers.get(POP_HEADER), fmt=format,
                             columns=columns, limit=limit)
        decided = pep.leased(admitted)
        if decided is None or not pep.has_plan(admitted, decided[0]):
            def decide_and_plan():  # a broker round trip, a file to hash or an answer to encode: not in the loop
                config.outbox.flush()
                return pep.plan(admitted, *(decided or pep.decide(admitted.claims, pid, format)))

            plan = await run_in_threadpool(decide_and_plan)
        else:
            plan = pep.plan(admitted, *decided)
        if plan.body is None:
            return StreamingResponse(pep.stream(plan), media_type=plan.media_type, headers=plan.headers())
        try:
            loop = asyncio.get_running_loop()
            for future in pep.finish(plan, nbytes=len(plan.body), sha256=plan.body_sha256, complete=True, loop=loop):
                await (future if isinstance(future, asyncio.Future) else asyncio.wrap_future(future))
        except Exception:  # noqa: BLE001 - the claim or the receipt could not be made durable: serve nothing
            log.exception("pull %s not served: its receipt or proof claim is not durable", plan.receipt_id)
            raise ServiceUnavailable("The connector cannot record this pull right now; try again.",
                                     code="connector_storage") from None
        return Response(plan.body, media_type=plan.media_type, headers=plan.headers())

    # A plain Starlette route: the hot path needs no dependency solving or parameter models (its query is
    # parsed by ``pull_query``); errors still become problems through the app's exception handlers.
    app.router.routes.insert(0, Route("/dataplane/transfers/{pid}", pull, methods=["GET"], name="pull"))

    @app.post("/dataplane/revocations")
    def revocations(body: RevocationRequest) -> dict[str, Any]:
        """The broker: drop the leased decisions of these transfers (they changed; docs/data-plane.md#leases)."""
        claims = verify_message(body.notice, config.broker_key(), REVOCATION, audience=config.endpoint,
                                issuer=config.broker_issuer, leeway=config.leeway)
        tpids = claims.get("tpids")
        if not isinstance(tpids, list) or len(tpids) > 100_000 or not all(isinstance(t, str) for t in tpids):
            raise BadRequest("A revocation names its transfers (tpids).", code="invalid_revocation")
        dropped = pep.leases.revoke(tpids)
        log.info("revocation of %d transfer(s) from the broker: %d lease(s) dropped", len(tpids), dropped)
        return {"transfers": len(tpids), "leases_dropped": dropped}

    app.include_router(push.router_for(config, pep))
    app.include_router(compute_api.router_for(config))

    app.state.cors_origins = origins
    return BodyLimitApp(app, config, origins)


def BodyLimitApp(app: FastAPI, config: NodeConfig, cors_origins: list[str] | None = None) -> FastAPI:
    app.add_middleware(BodyLimit, limit=config.max_body_bytes, compute_limit=config.max_compute_body_bytes)
    if cors_origins:  # outermost: preflights and refusals carry the CORS headers too
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET"],
                           allow_headers=CORS_REQUEST_HEADERS, expose_headers=CORS_EXPOSE_HEADERS,
                           allow_credentials=False, max_age=600)
    return app
