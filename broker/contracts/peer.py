"""Messages this broker sends to another DSP connector (consumer role): one POST or GET to an allowed
host, the reply read as a DSP document. The caller's access token at that connector is passed in and
never stored. ``TRANSPORT`` is replaceable (tests route it to another app in-process)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from broker.contracts.callbacks import host_allowed
from twinspace.errors import BadRequest, TwinSpaceError

log = logging.getLogger("twinspace.dsp.peer")


class PeerError(TwinSpaceError):
    """The other connector refused the message or could not be reached (502 unless it said 4xx)."""

    status, title, default_code = 502, "Bad Gateway", "peer_error"


def _httpx(method: str, url: str, body: dict[str, Any] | None, headers: dict[str, str]) -> tuple[int, Any]:
    import httpx

    response = httpx.request(method, url, json=body, headers=headers, timeout=15.0)
    try:
        return response.status_code, response.json() if response.content else None
    except ValueError:
        return response.status_code, None


# (method, url, body, headers) -> (status, parsed JSON body)
TRANSPORT: Callable[[str, str, dict[str, Any] | None, dict[str, str]], tuple[int, Any]] = _httpx


def check_peer(settings: Any, base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise BadRequest("The provider's DSP address must be an http(s) URL without credentials.",
                         code="invalid_provider_url")
    if not host_allowed(parts.hostname, list(getattr(settings, "dsp_peer_hosts", None) or [])):
        raise BadRequest("This broker does not talk to that host (TWINSPACE_DSP_PEER_HOSTS).",
                         code="peer_host_not_allowed")
    return base_url.rstrip("/")


def send(method: str, url: str, body: dict[str, Any] | None, token: str | None) -> Any:
    """The peer's JSON answer; PeerError (carrying the peer's DSP error code) otherwise."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        status, answer = TRANSPORT(method, url, body, headers)
    except Exception as exc:  # noqa: BLE001 - network failures become one error type
        log.warning("DSP peer %s unreachable: %s", urlsplit(url).netloc, type(exc).__name__)
        raise PeerError("The provider's connector could not be reached.", code="peer_unreachable") from None
    if status >= 300:
        code = answer.get("code") if isinstance(answer, dict) else None
        reason = answer.get("reason") if isinstance(answer, dict) else None
        error = PeerError(f"The provider answered {status}: {'; '.join(map(str, reason or []))[:300]}",
                          code=f"peer_{code}" if isinstance(code, str) else "peer_refused",
                          extra={"peer_status": status})
        if 400 <= status < 500:
            error.status = 409 if status == 409 else 400 if status != 404 else 404
        raise error
    return answer
