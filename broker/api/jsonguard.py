"""Strict JSON at the boundary, for every route: a 400 problem, never a 500, for bodies that Python's
``json`` accepts but nothing downstream can handle.

Refused: NaN / Infinity literals and numbers that overflow a double (``1e400``), lone UTF-16
surrogates (``"\\ud800"``, they cannot be encoded, hashed or signed), invalid UTF-8, integers outside
the I-JSON range (RFC 7493 §2.2: ±(2^53−1); RFC 8785 canonical JSON and the policy engine need
them exact as doubles) and nesting deeper than ``MAX_DEPTH``. The body is read once (the size
limit middleware runs first), checked, and replayed to the route unchanged.
"""

from __future__ import annotations

import json

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_DEPTH = 64
MAX_SAFE_INT = 2**53 - 1
FULL_CHECK_BYTES = 1 << 20  # larger bodies (encrypted queries) get the fast checks only
# Dataspace Protocol routes answer bad JSON with a DSP error object: they run ``check_json`` themselves
# (``broker.contracts.dsp.message_body``), so that a DSP peer never gets an RFC 9457 problem instead.
DSP_PREFIX = "/dsp/"


class BadJson(ValueError):
    pass


def _int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_SAFE_INT:
        raise BadJson("an integer is outside the interoperable range ±(2^53-1)")
    return value


def _constant(name: str):
    raise BadJson(f"{name} is not JSON")


def _depth_ok(value, limit: int = MAX_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def check_json(body: bytes) -> None:
    """Raise ``BadJson`` with a reason when ``body`` is not strict, interoperable JSON."""
    try:
        value = orjson.loads(body)  # NaN/Infinity, overflowing numbers, lone surrogates, bad UTF-8, depth
    except orjson.JSONDecodeError as exc:
        raise BadJson(str(exc).split(":", 1)[0]) from None
    if len(body) > FULL_CHECK_BYTES:
        return
    try:
        json.loads(body, parse_int=_int, parse_constant=_constant)  # exact integers (orjson rounds them)
    except RecursionError:
        raise BadJson("the document is nested too deeply") from None
    except ValueError as exc:
        raise BadJson(str(exc) if isinstance(exc, BadJson) else "the body is not valid JSON") from None
    if not _depth_ok(value):
        raise BadJson(f"the document is nested deeper than {MAX_DEPTH} levels")


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


class StrictJsonMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS") or not _is_json(scope)
                or scope.get("path", "").startswith(DSP_PREFIX)):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if body:
            try:
                check_json(body)
            except BadJson as exc:
                from broker.api.problems import problem_response

                response = problem_response(400, "malformed_json", "Bad Request",
                                            f"The request body is not acceptable JSON: {exc}.", scope.get("path"))
                await response(scope, receive, send)
                return
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


def _replay(messages: list[Message], receive: Receive | None = None) -> Receive:
    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        if receive is not None:
            return await receive()
        return {"type": "http.disconnect"}

    return replayed
