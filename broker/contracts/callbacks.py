"""Asynchronous DSP callbacks: a message for the peer at its ``callbackAddress`` (``.../negotiations/
{consumerPid}/offers`` and so on) is queued on the session and sent only after the transaction that
made the state change commits, so a peer is never told about a state that was rolled back.

The callback host must be allowed (``TWINSPACE_DSP_PEER_HOSTS``): the broker does not post to
hosts a peer picks. A consumer hosted by this broker uses ``urn:twinspace:broker-hosted`` (no
callback: it reads its messages here). ``SENDER`` is the transport (tests point it at another app)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import event
from sqlmodel import Session

from twinspace.errors import BadRequest

HOSTED = "urn:twinspace:broker-hosted"
log = logging.getLogger("twinspace.dsp.callbacks")


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    import httpx

    response = httpx.post(url, json=body, headers=headers, timeout=10.0)
    if response.status_code >= 300:
        log.warning("DSP callback %s answered %s", urlsplit(url).path, response.status_code)


def _send_in_background(url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    def run() -> None:
        try:
            _post(url, body, headers)
        except Exception:  # noqa: BLE001 - a peer that is down does not fail our transaction
            log.exception("DSP callback to %s failed", urlsplit(url).netloc)

    threading.Thread(target=run, daemon=True, name="dsp-callback").start()


# (url, body, headers) -> None. Replaced in tests by a synchronous in-process transport.
SENDER: Callable[[str, dict[str, Any], dict[str, str]], None] = _send_in_background


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower()
    for entry in allowed:
        entry = entry.lower()
        if entry == "*" or host == entry or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False


def check_address(settings: Any, address: str | None) -> str | None:
    """The callback address to keep (None for a broker-hosted consumer); BadRequest when refused."""
    if address is None or address == HOSTED:
        return None
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("callbackAddress must be an http(s) URL (or urn:twinspace:broker-hosted).",
                         code="invalid_callback")
    if parts.username or parts.password or parts.fragment:
        raise BadRequest("callbackAddress must not carry credentials or a fragment.", code="invalid_callback")
    if not host_allowed(parts.hostname, list(getattr(settings, "dsp_peer_hosts", None) or [])):
        raise BadRequest("This broker does not call back to that host (TWINSPACE_DSP_PEER_HOSTS).",
                         code="callback_host_not_allowed")
    return address.rstrip("/")


def queue(session: Session, address: str | None, path: str, body: dict[str, Any],
          headers: dict[str, str] | None = None) -> None:
    """Send ``body`` to ``address + path`` once the session's transaction commits."""
    if not address:
        return
    session.info.setdefault("dsp_outbox", []).append((address + path, body, dict(headers or {})))


@event.listens_for(Session, "after_commit")
def _flush_outbox(session) -> None:
    outbox = session.info.pop("dsp_outbox", None)
    for url, body, headers in outbox or []:
        try:
            SENDER(url, body, headers)
        except Exception:  # noqa: BLE001
            log.exception("DSP callback to %s failed", urlsplit(url).netloc)


@event.listens_for(Session, "after_rollback")
def _drop_outbox(session) -> None:
    session.info.pop("dsp_outbox", None)
