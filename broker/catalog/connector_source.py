"""Connector-hosted assets: the broker fetches the de-identified table from the provider's own
connector (``twinspace connector serve``) instead of keeping it in the vault.

Each fetch is ``GET <data_endpoint>/data/<content sha256>`` with a short-lived EdDSA JWT signed by
the broker key (``aud = twinspace-connector``, ``sha256`` = the requested hash), which the connector
checks against the broker's public key. The broker checks the bytes against the asset's published
content hash before anything is used, so a connector cannot swap the data behind a signed agreement.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from functools import lru_cache
from pathlib import Path

import httpx
import jwt

from twinspace.crypto import key_id, load_private_key
from twinspace.errors import Forbidden, ServiceUnavailable
from broker.settings import Settings

AUDIENCE = "twinspace-connector"
TOKEN_TTL_SECONDS = 60
FETCH_TIMEOUT_SECONDS = 30.0


@lru_cache(maxsize=8)
def _broker_key(path: str, mtime: float):
    return load_private_key(Path(path))


def fetch_token(settings: Settings, content_hash: str) -> str:
    path = settings.effective_broker_key_file
    key = _broker_key(str(path), path.stat().st_mtime)
    now = int(time.time())
    return jwt.encode({"iss": settings.issuer, "aud": AUDIENCE, "sha256": content_hash, "iat": now,
                       "exp": now + TOKEN_TTL_SECONDS, "jti": uuid.uuid4().hex},
                      key, algorithm="EdDSA", headers={"kid": key_id(key.public_key()), "typ": "JWT"})


def data_url(endpoint: str, content_hash: str) -> str:
    return f"{endpoint.rstrip('/')}/data/{content_hash}"


def check_host(endpoint: str, settings: Settings) -> None:
    """Refuse connector endpoints outside ``settings.connector_hosts`` (when set), so a provider cannot
    point the broker at other hosts of its network."""
    allowed = [h.lower() for h in settings.connector_hosts]
    if not allowed:
        return
    host = (httpx.URL(endpoint).host or "").lower()
    if not any(host == a or (a.startswith(".") and host.endswith(a)) for a in allowed):
        raise Forbidden("This broker does not fetch connector data from that host.",
                        code="connector_host_not_allowed")


def fetch(endpoint: str, content_hash: str, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> bytes:
    """The table bytes whose SHA-256 is ``content_hash``, from the provider's connector; a clear 503
    problem when the connector is down, refuses, or serves other bytes. Nothing is cached."""
    check_host(endpoint, settings)
    limit = settings.catalog_max_upload_bytes
    headers = {"Authorization": f"Bearer {fetch_token(settings, content_hash)}"}
    digest, chunks, size = hashlib.sha256(), [], 0
    try:
        with httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, transport=transport, follow_redirects=False) as http:
            with http.stream("GET", data_url(endpoint, content_hash), headers=headers) as response:
                if response.status_code != 200:
                    raise ServiceUnavailable(f"The provider's connector answered {response.status_code}.",
                                             code="connector_refused")
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ServiceUnavailable("The provider's connector sent more than the catalog limit.",
                                                 code="connector_data_mismatch")
                    digest.update(chunk)
                    chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"The provider's connector is unreachable ({type(exc).__name__}).",
                                 code="connector_unavailable") from None
    if digest.hexdigest() != content_hash:
        raise ServiceUnavailable("The provider's connector served data that does not match the asset's "
                                 "content hash; nothing is served.", code="connector_data_mismatch")
    return b"".join(chunks)
