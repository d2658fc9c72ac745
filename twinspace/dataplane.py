"""The signed messages between the broker (control plane) and a provider's connector (data plane).
Pure: keys and claims in, compact EdDSA JWS out, and back. No I/O.

Every message is a JWT whose header ``typ`` names its kind, so one kind can never be replayed as
another; every one names its audience and is short-lived.

=================  ===========  ===========================  =========================================
kind (``typ``)     signed by    audience                     what it says
=================  ===========  ===========================  =========================================
ownership          provider     broker issuer                "I, org X, answer at endpoint E" (nonce)
manifest           provider     broker issuer                "E serves content H: N rows, these columns"
decision           broker       connector endpoint           a fresh policy decision for one pull
receipt            provider     broker issuer                what the connector served or computed
compute            broker       connector endpoint           "run this encrypted query" (body hash)
ack                consumer     broker issuer                "I received bytes with SHA-256 S"
revocation         broker       connector endpoint           "drop your leased decisions for these
                                                             transfers" (pushed when they change)
=================  ===========  ===========================  =========================================

The transfer token (``twinspace.transfer_tokens``) is the eighth: broker → connector audience, bound to
the consumer's key (``cnf``), presented with a fresh single-use proof of possession on every pull.

A decision with ``lease: true`` may serve every pull of the same transfer, token generation and format
until its ``exp`` (``TWINSPACE_DECISION_LEASE_SECONDS``); the broker pushes a revocation message the
moment the transfer, its agreement, the consumer or its key changes, and the connector drops the lease.

The audience of a connector is its normalised endpoint (``normalise_endpoint``): a token minted for
connector A is refused by connector B because B's endpoint differs.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from twinspace import jws
from twinspace.canonical import canonical_json
from twinspace.crypto import key_id
from twinspace.errors import BadRequest, Unauthorized

OWNERSHIP = "twinspace-ownership+jwt"
MANIFEST = "twinspace-manifest+jwt"
DECISION = "twinspace-decision+jwt"
RECEIPT = "twinspace-receipt+jwt"
COMPUTE = "twinspace-compute+jwt"
ACK = "twinspace-ack+jwt"
REVOCATION = "twinspace-revocation+jwt"
KINDS = (OWNERSHIP, MANIFEST, DECISION, RECEIPT, COMPUTE, ACK, REVOCATION)

LIFETIMES = {OWNERSHIP: 120, MANIFEST: 300, DECISION: 30, RECEIPT: 7 * 86400, COMPUTE: 60, ACK: 86400,
             REVOCATION: 60}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_endpoint(url: str) -> str:
    """One spelling per connector endpoint: scheme and host lower-case, default port dropped, no
    userinfo, query, fragment or trailing slash. Raises ``BadRequest`` for anything else."""
    if not isinstance(url, str) or len(url) > 2048 or any(ch.isspace() for ch in url):
        raise BadRequest("A connector endpoint is an http(s) URL.", code="invalid_endpoint")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise BadRequest("A connector endpoint is an http(s) URL with a host.", code="invalid_endpoint")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise BadRequest("A connector endpoint has no user info, query or fragment.", code="invalid_endpoint")
    try:
        port = parts.port
    except ValueError:
        raise BadRequest("The connector endpoint's port is not a number in 1-65535.", code="invalid_endpoint") from None
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def body_sha256(body: Any) -> str:
    """The hash a compute message binds: SHA-256 of the body's RFC 8785 form."""
    return hashlib.sha256(canonical_json(body)).hexdigest()


_KIDS: dict[int, tuple[Ed25519PrivateKey, str]] = {}


def signer_kid(private_key: Ed25519PrivateKey) -> str:
    """The RFC 7638 thumbprint of the signer's public key (computed once per key object)."""
    hit = _KIDS.get(id(private_key))
    if hit is None or hit[0] is not private_key:
        if len(_KIDS) > 256:
            _KIDS.clear()
        hit = _KIDS[id(private_key)] = (private_key, key_id(private_key.public_key()))
    return hit[1]


def sign_message(private_key: Ed25519PrivateKey, kind: str, *, issuer: str, audience: str,
                 claims: dict[str, Any], lifetime: int | None = None) -> str:
    """A compact JWS of ``kind``; ``iat``, ``exp`` and ``jti`` are added (``claims`` may set ``jti``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    now = int(time.time())
    body = {"jti": claims["jti"] if "jti" in claims else uuid.uuid4().hex, **claims, "iss": issuer,
            "aud": audience, "iat": now, "exp": now + (lifetime or LIFETIMES[kind])}
    return jws.sign(private_key, body, typ=kind, kid=signer_kid(private_key))


def _parse(token: str) -> tuple:
    try:
        parsed = jws.parse(token)
    except jws.JWSError:
        raise Unauthorized("The message must be an EdDSA TwinSpace message naming its key.",
                           code="invalid_message") from None
    header = parsed[0]
    if header.get("typ") not in KINDS or not isinstance(header.get("kid"), str):
        raise Unauthorized("The message must be an EdDSA TwinSpace message naming its key.", code="invalid_message")
    return parsed


def message_header(token: str) -> dict[str, Any]:
    """The unverified header (to find the signer's key by ``kid``); refuses anything but EdDSA."""
    return _parse(token)[0]


def unverified_claims(token: str) -> dict[str, Any]:
    """Claims before verification — only to find who claims to have signed (``iss``)."""
    try:
        return jws.parse(token)[1]
    except jws.JWSError:
        raise Unauthorized("The message is not a JWS.", code="invalid_message") from None


_MESSAGE_CLAIMS = ("iss", "aud", "iat", "exp", "jti")


def verify_message(token: str, public_key: Ed25519PublicKey, kind: str, *, audience: str,
                   issuer: str | None = None, leeway: int = 10) -> dict[str, Any]:
    """Signature, kind, exact audience (a list is refused), issuer when given, and time."""
    parsed = _parse(token)
    if parsed[0]["typ"] != kind:
        raise Unauthorized(f"Expected a {kind} message.", code="wrong_message_kind")
    try:
        _, claims = jws.verify(token, public_key, audience=audience, issuer=issuer, require=_MESSAGE_CLAIMS,
                               leeway=leeway, parsed=parsed)
    except jws.JWSError as exc:
        if exc.reason == "expired":
            raise Unauthorized("The message has expired.", code="expired_message") from None
        if exc.reason == "audience":
            raise Unauthorized("The message is for another audience.", code="wrong_audience") from None
        raise Unauthorized("The message's signature or claims are invalid.", code="invalid_message") from None
    return claims


def merge_obligations(*sources: dict[str, Any] | None) -> dict[str, Any]:
    """The strictest combination of ``max_rows`` / ``columns`` obligations: the smallest row limit and
    the intersection of the column lists (agreement, policy decision, quota)."""
    max_rows: int | None = None
    columns: list[str] | None = None
    for src in sources:
        if not src:
            continue
        limit = src.get("max_rows")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
            max_rows = limit if max_rows is None else min(max_rows, limit)
        if isinstance(src.get("columns"), list):
            cols = [str(c) for c in src["columns"]]
            columns = cols if columns is None else [c for c in columns if c in set(cols)]
    return {"max_rows": max_rows, "columns": columns}
