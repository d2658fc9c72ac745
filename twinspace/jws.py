"""Compact EdDSA (Ed25519) JWS for the data plane's hot path: the per-pull proof of possession and
receipt, and the messages between broker and connector. Pure: keys and bytes in, claims out.

Why not PyJWT here: its decode parses a token twice when the header is read first (to find the
key), and re-serialises and re-validates generically; on a pull that was a third of the connector's
work. This module does one strict parse and one signature check, and the same claim checks as the
callers asked of PyJWT (required claims, ``exp``/``iat`` with leeway, exact string audience, issuer).
Tokens are standard RFC 7515 compact serialisations: PyJWT and any other library verify what this
module signs, and this module verifies what they sign (``tests/foundation/test_jws.py``).

Strictness: exactly three segments of unpadded base64url, a JSON-object header with ``alg`` exactly
``EdDSA`` and no ``crit``, a JSON-object payload, a 64-byte signature. Anything else is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
MAX_TOKEN = 65_536


class JWSError(ValueError):
    """Malformed, wrongly signed, or failing a claim check; ``reason`` names which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(segment: str) -> bytes:
    if not _B64URL.match(segment) or len(segment) % 4 == 1:
        raise JWSError("malformed")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise JWSError("malformed") from None


@lru_cache(maxsize=256)
def _header_segment(typ: str | None, kid: str | None) -> str:
    header: dict[str, Any] = {"alg": "EdDSA"}
    if typ is not None:
        header["typ"] = typ
    if kid is not None:
        header["kid"] = kid
    return _b64(json.dumps(header, separators=(",", ":")).encode())


def sign(private_key: Ed25519PrivateKey, claims: dict[str, Any], *, typ: str | None = None,
         kid: str | None = None) -> str:
    """``claims`` as a compact JWS signed with ``private_key`` (header ``alg``, ``typ``, ``kid``)."""
    payload = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
    signing_input = f"{_header_segment(typ, kid)}.{payload}"
    return f"{signing_input}.{_b64(private_key.sign(signing_input.encode('ascii')))}"


def parse(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """``(header, claims, signing_input, signature)`` — nothing verified yet but the shape."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise JWSError("malformed")
    parts = token.split(".")
    if len(parts) != 3:
        raise JWSError("malformed")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise JWSError("malformed") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JWSError("malformed")
    if header.get("alg") != "EdDSA" or "crit" in header:
        raise JWSError("algorithm")
    signature = _unb64(parts[2])
    if len(signature) != 64:
        raise JWSError("signature")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def header(token: str) -> dict[str, Any]:
    return parse(token)[0]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def verify(token: str, public_key: Ed25519PublicKey, *, audience: str | None = None, issuer: str | None = None,
           require: tuple[str, ...] = (), leeway: float = 0, now: float | None = None,
           parsed: tuple | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The verified ``(header, claims)``. Checks the signature, the ``require``d claims, ``exp`` and
    ``nbf`` (when present, with ``leeway``), ``iat`` (a number, not in the future), the audience (a
    string equal to ``audience``; a list is refused) and the issuer. ``parsed``: ``parse(token)``
    already done by the caller (to pick the key by ``kid``)."""
    head, claims, signing_input, signature = parsed or parse(token)
    try:
        public_key.verify(signature, signing_input)
    except InvalidSignature:
        raise JWSError("signature") from None
    for name in require:
        if name not in claims:
            raise JWSError("missing:" + name)
    now = time.time() if now is None else now
    if "exp" in claims:
        if not _number(claims["exp"]):
            raise JWSError("claims")
        if claims["exp"] <= now - leeway:
            raise JWSError("expired")
    if "nbf" in claims:
        if not _number(claims["nbf"]) or claims["nbf"] > now + leeway:
            raise JWSError("immature")
    if "iat" in claims:
        if not _number(claims["iat"]) or claims["iat"] > now + leeway:
            raise JWSError("immature")
    if audience is not None:
        if claims.get("aud") != audience or not isinstance(claims.get("aud"), str):
            raise JWSError("audience")
    if issuer is not None and claims.get("iss") != issuer:
        raise JWSError("issuer")
    return head, claims
