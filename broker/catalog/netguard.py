"""The one way the broker calls a connector: ``twinspace.netguard`` with the broker's settings (the
allow-list ``TWINSPACE_CONNECTOR_ALLOW_NETWORKS``, ``connector_timeout_seconds``, the body cap)."""

from __future__ import annotations

from typing import Any

import httpx

from broker.settings import Settings
from twinspace import netguard as _core
from twinspace.netguard import CODE, DETAIL, Pinned, is_special, parse_ip_literal, unreachable  # noqa: F401


def check(endpoint: str, settings: Settings) -> Pinned:
    return _core.check(endpoint, settings.connector_allow_networks)


def allowed(addr, settings: Settings) -> bool:
    return _core.allowed(addr, settings.connector_allow_networks)


def request(settings: Settings, method: str, endpoint: str, path: str, *, json: Any = None,
            timeout: float | None = None, headers: dict[str, str] | None = None,
            max_bytes: int | None = None) -> httpx.Response:
    return _core.request(settings.connector_allow_networks, method, endpoint, path, json=json,
                         timeout=timeout if timeout is not None else settings.connector_timeout_seconds,
                         headers=headers,
                         max_bytes=max_bytes if max_bytes is not None else settings.max_query_body_bytes)
