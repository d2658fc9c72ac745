"""What every DSP route shares: the request body read as a DSP message (JSON-LD, schema, model) and
failures answered with the DSP error object of the route's protocol (``CatalogError``,
``ContractNegotiationError``, ``TransferError``), never an RFC 9457 problem or a traceback."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.api.jsonguard import BadJson, check_json
from twinspace.dsp.errors import error_object, protocol_of
from twinspace.dsp.messages import MessageProblem, uses_twin_context
from twinspace.errors import TwinSpaceError

LD = "application/json"
MAX_BODY = 1_000_000
log = logging.getLogger("twinspace.dsp")


def ld(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=LD, headers=headers)


def _pids(request: Request) -> dict[str, str | None]:
    found = dict(getattr(request.state, "dsp_pids", None) or {})
    pid = request.path_params.get("pid")
    if pid and "providerPid" not in found:
        found["providerPid"] = pid
    return found


def error_response(request: Request, status: int, code: str, reason: str) -> JSONResponse:
    pids = _pids(request)
    body = error_object(protocol_of(request.url.path), code=code, reason=reason,
                        provider_pid=pids.get("providerPid"), consumer_pid=pids.get("consumerPid"))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=LD, headers=headers)


class DspRoute(APIRoute):
    """An APIRoute whose failures (auth, validation, service errors) are DSP error objects."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def dsp_handler(request: Request):
            try:
                return await handler(request)
            except TwinSpaceError as exc:
                from broker.api.problems import _audit_refusal

                await run_in_threadpool(_audit_refusal, request, exc)
                return error_response(request, exc.status, exc.code, exc.detail)
            except MessageProblem as exc:
                if exc.pids:
                    request.state.dsp_pids = {**exc.pids, **(getattr(request.state, "dsp_pids", None) or {})}
                return error_response(request, 400, exc.code, str(exc))
            except RequestValidationError:
                return error_response(request, 400, "invalid_request", "The request parameters are invalid.")
            except StarletteHTTPException as exc:
                return error_response(request, exc.status_code if exc.status_code >= 400 else 400,
                                      f"http_{exc.status_code}", str(exc.detail)[:300])
            except Exception:  # noqa: BLE001 - a DSP peer gets an error object, the log gets the traceback
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                return error_response(request, 500, "internal_error", "The connector failed to handle this message.")

        return dsp_handler


async def message_body(request: Request) -> Any:
    """The JSON body of a DSP message (parsed as JSON-LD by the route with ``read``)."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise MessageProblem("The message is too large.", code="payload_too_large")
    try:
        check_json(raw or b"null")  # the same strict JSON as every other route (NaN, 1e400, surrogates, depth)
        body = json.loads(raw or b"null")
    except BadJson as exc:
        raise MessageProblem(f"The body is not acceptable JSON: {exc}.", code="malformed_json") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MessageProblem("The body is not JSON.", code="malformed_json") from None
    if isinstance(body, dict):
        request.state.dsp_pids = {k: body[k] for k in ("providerPid", "consumerPid") if isinstance(body.get(k), str)}
        request.state.dsp_twin = uses_twin_context(body)
    return body


def wants_extensions(request: Request) -> bool:
    """Answer with TwinSpace extensions only to a sender that used the TwinSpace context."""
    return bool(getattr(request.state, "dsp_twin", False))
