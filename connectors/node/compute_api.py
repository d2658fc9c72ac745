"""``POST /compute/queries``: an encrypted query computed on this connector's own rows, for the broker.

The body is ``{"token": <compute message>, "request": <ComputeRequest>}``. The connector checks, in
order, and answers 401 for any failure of the first three:

1. the message: signed by the broker's key, kind ``twinspace-compute+jwt``, audience this connector's
   endpoint, issuer the broker, not expired;
2. ``body_sha256`` is the SHA-256 of the request's RFC 8785 form, and the request's query id,
   agreement, consumer and asset are the message's;
3. the message's ``jti`` is claimed once (a replay is refused);
4. the asset's content hash is a file this connector serves (404 otherwise);
5. the plan (``connectors/node/compute.py``): data-independent checks, a 4xx problem with its own
   code (the broker charges nothing);
6. the computation: reads data, noises, encrypts under the consumer's public context; answered or
   refused (200 either way; a refusal's reason goes into the receipt only).

Both outcomes carry a ``twinspace-receipt+jwt`` signed by the provider key for the broker.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from connectors.node import compute
from twinspace.dataplane import COMPUTE, RECEIPT, body_sha256, sign_message, verify_message
from twinspace.errors import BadRequest, NotFound, PayloadTooLarge, TwinSpaceError, Unauthorized
from twinspace.privacy import he
from twinspace.privacy.queries import ComputeRequest, b64decode, b64encode

log = logging.getLogger("twinspace.connector.compute")
PATH = "/compute/queries"


def _problem(exc: TwinSpaceError) -> JSONResponse:
    return JSONResponse(exc.to_problem(PATH), status_code=exc.status, media_type="application/problem+json")


def verify_compute(config: Any, token: Any, request: Any) -> dict[str, Any]:
    """Steps 1-3 of the module docstring; the message's claims. Raises ``Unauthorized``."""
    if not isinstance(token, str) or not token:
        raise Unauthorized("A compute message signed by the broker is required.", code="missing_compute_token")
    claims = verify_message(token, config.broker_key(), COMPUTE, audience=config.endpoint,
                            issuer=config.broker_issuer, leeway=config.leeway)
    if not isinstance(request, dict) or claims.get("body_sha256") != body_sha256(request):
        raise Unauthorized("The request is not the one the broker signed.", code="body_mismatch")
    asset = request.get("asset") if isinstance(request.get("asset"), dict) else {}
    if (claims.get("query_id") != request.get("query_id") or claims.get("agr") != request.get("agreement_id")
            or claims.get("sub") != request.get("consumer_id") or claims.get("asset") != asset):
        raise Unauthorized("The request does not match the compute message.", code="body_mismatch")
    if not config.claims.claim(f"compute:{claims['jti']}", float(claims["exp"]) + config.leeway):
        raise Unauthorized("This compute message was already used.", code="replayed_compute_token")
    return claims


def receipt(config: Any, body: ComputeRequest, outcome: compute.Outcome) -> str:
    """The provider's signed account of what it computed (for the broker's audit log)."""
    claims = {"kind": "query", "query_id": body.query_id, "agr": body.agreement_id, "sub": body.consumer_id,
              "asset": body.asset.model_dump(), "rows": outcome.rows, "outcome": outcome.outcome,
              "result_sha256": outcome.result_sha256 if outcome.outcome == "answered" else None}
    if outcome.reason is not None:
        claims["reason"] = outcome.reason
    message = sign_message(config.private_key, RECEIPT, issuer=config.org_id, audience=config.broker_issuer,
                           claims=claims)
    return message


def handle(config: Any, payload: Any) -> dict[str, Any]:
    """The whole route without HTTP: the answer, or a ``TwinSpaceError`` (4xx)."""
    if not isinstance(payload, dict) or set(payload) - {"token", "request"}:
        raise BadRequest("The body is {token, request}.", code="invalid_compute_request")
    verify_compute(config, payload.get("token"), payload.get("request"))
    try:
        body = ComputeRequest.model_validate(payload["request"])
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})[:10]
        raise BadRequest("The compute request is invalid: " + ", ".join(fields), code="invalid_compute_request") \
            from None
    table = config.store.table(body.asset.content_hash)
    if table is None:
        raise NotFound("This connector does not serve that asset content.", code="asset_not_served")
    ctx = he.load_public_context(b64decode(body.context, "encryption context"))
    run = compute.plan(ctx, body.query, table, compute.Terms.of(body.terms))  # 4xx: nothing charged
    outcome = run()                                                           # reads data: charged
    if outcome.outcome == "refused":
        log.info("query %s refused (%s)", body.query_id, outcome.reason)
        return {"outcome": "refused", "rows": outcome.rows, "receipt": receipt(config, body, outcome)}
    return {"outcome": "answered", "rows": outcome.rows, "facts": outcome.facts,
            "results": {name: b64encode(ct) for name, ct in outcome.results.items()},
            "receipt": receipt(config, body, outcome)}


def router_for(config: Any) -> APIRouter:
    """The compute route of one connector (``app.include_router(router_for(config))``)."""
    router = APIRouter(tags=["compute"])
    limit = int(getattr(config, "max_compute_body_bytes", 64 * 1024 * 1024))

    @router.post(PATH)
    async def compute_query(request: Request):
        try:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise PayloadTooLarge("The compute request is too large.", code="payload_too_large")
            raw = bytearray()
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > limit:
                    raise PayloadTooLarge("The compute request is too large.", code="payload_too_large")
            try:
                payload = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise BadRequest("The body is not JSON.", code="invalid_compute_request") from None
            return await run_in_threadpool(handle, config, payload)
        except TwinSpaceError as exc:
            return _problem(exc)

    return router
