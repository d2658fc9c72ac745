"""Request-body size limits, enforced before the body is parsed (pure ASGI, streaming-safe)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Refuse bodies above ``default_limit`` (``/queries`` routes get ``query_limit``) with a 413 problem."""

    def __init__(self, app: ASGIApp, default_limit: int, query_limit: int, query_prefix: str = "/queries"):
        self.app, self.default_limit, self.query_limit, self.query_prefix = app, default_limit, query_limit, query_prefix

    def limit_for(self, path: str) -> int:
        return self.query_limit if path.startswith(self.query_prefix) else self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        received = 0
        started = exceeded = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # The framework may have caught BodyTooLarge while reading (FastAPI turns body errors into
                # a 400): whatever it answers, the client gets the 413 (chunked bodies have no length).
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(send, limit)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send, limit)

    @staticmethod
    async def _reject(send: Send, limit: int) -> None:
        body = json.dumps({"type": "https://twinspace.dev/problems/payload_too_large", "title": "Payload Too Large",
                           "status": 413, "code": "payload_too_large",
                           "detail": f"The request body exceeds the limit of {limit} bytes."}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
