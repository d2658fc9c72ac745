"""Rate limits per organisation and per client IP (the ``limits`` library; Redis storage when the
broker has Redis, so every replica counts against the same window), answered 429 + Retry-After.

Authentication: every attempt counts against its IP; issued tokens count against their org (an
attacker cannot spend a victim org's allowance with forged assertions). Data routes (``/dataplane``,
``/queries``): each request counts against the org of its verified access token and its IP.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse_many, storage, strategies
from starlette.types import ASGIApp, Receive, Scope, Send

from twinspace.errors import TooManyRequests

log = logging.getLogger("twinspace.ratelimit")
DATA_PREFIXES = ("/dataplane/", "/queries")


class RateLimited(TooManyRequests):
    default_code = "rate_limited"


class RateLimiter:
    def __init__(self, settings):
        uri = settings.rate_limit_storage_url or settings.redis_url or "memory://"
        if uri.startswith("redis") and "socket_timeout" not in uri:
            uri += ("&" if "?" in uri else "?") + "socket_timeout=0.5&socket_connect_timeout=0.5"
        self.storage = storage.storage_from_string(uri)
        self.strategy = strategies.FixedWindowRateLimiter(self.storage)
        self.rules: dict[str, list[RateLimitItem]] = {
            "auth_ip": _parse(settings.rate_limit_auth_ip), "auth_org": _parse(settings.rate_limit_auth_org),
            "data_ip": _parse(settings.rate_limit_data_ip), "data_org": _parse(settings.rate_limit_data_org)}

    def hit(self, rule: str, key: str) -> None:
        """Count one request; raise ``RateLimited`` (429, Retry-After) when a window is exhausted."""
        for item in self.rules[rule]:
            try:
                allowed = self.strategy.hit(item, rule, key)
                if allowed:
                    continue
                reset, _remaining = self.strategy.get_window_stats(item, rule, key)
            except Exception:  # noqa: BLE001 - storage down: fail open, replay protection still holds
                log.warning("rate-limit storage unavailable; %s not enforced", rule)
                return
            retry = max(1, math.ceil(reset - time.time()))
            raise RateLimited(f"Too many requests ({item}); retry in {retry} s.", extra={"retry_after": retry})


def _parse(spec: str) -> list[RateLimitItem]:
    return parse_many(spec) if spec and spec.strip() else []


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


class DataRateLimitMiddleware:
    """Per-org and per-IP limits on data routes; runs inside the auth gate (it reads verified claims)."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter):
        self.app, self.limiter = app, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith(DATA_PREFIXES):
            from broker.api.deps import CLAIMS_STATE
            from broker.api.problems import problem_response

            seen = scope.get("state", {}).get(CLAIMS_STATE)
            try:
                self.limiter.hit("data_ip", client_ip(scope))
                if seen is not None:
                    self.limiter.hit("data_org", str(seen[1].get("sub")))
            except RateLimited as exc:
                retry = exc.extra["retry_after"]
                response = problem_response(429, exc.code, exc.title, exc.detail, path, retry_after=retry)
                response.headers["Retry-After"] = str(retry)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
