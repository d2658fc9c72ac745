"""Transfer tokens and proofs of possession (pure: keys in, claims out).

* **Transfer token** — EdDSA JWT by the broker, ``token_use=transfer``, audience the provider
  connector's normalised endpoint (``twinspace.dataplane.normalise_endpoint``), bound to one transfer
  process (``tpid``), its agreement (``agr``), the consumer (``sub``), the provider (``prv``), the asset
  version (``asset``) and the consumer's key (``cnf.kid``, the RFC 7638 thumbprint, and ``cnf.x``, the
  raw public key, so the connector checks the proof offline). Short-lived, and reusable until it
  expires (as an RFC 9449 access token is): what makes each request single-use is its proof.
* **Proof of possession** (DPoP-like, RFC 9449 in spirit) — on every data-plane request the consumer
  sends a fresh JWT signed with the key named by ``cnf.kid``: header ``typ=twinspace-pop+jwt``, claims
  ``htm`` (method), ``htu`` (request path), ``iat``, ``jti`` (single use) and ``ath`` (base64url
  SHA-256 of the transfer token). A stolen token is useless without the private key; a captured
  request cannot be replayed (jti), nor its proof reused for another token (ath) or path (htu).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from twinspace import jws
from twinspace.crypto import b64url, key_id
from twinspace.errors import Unauthorized

POP_TYP = "twinspace-pop+jwt"
ALGORITHMS = ["EdDSA"]


def issue_transfer_token(broker_key: Ed25519PrivateKey, *, issuer: str, audience: str, consumer_id: str,
                         consumer_kid: str, consumer_key: str, provider_id: str, transfer_id: str,
                         agreement_id: str, asset: dict[str, Any], generation: int, ttl: int,
                         not_after: float | None = None) -> tuple[str, int]:
    """``audience``: the connector's normalised endpoint; ``consumer_key``: the raw public key (b64url)."""
    now = int(time.time())
    exp = now + ttl
    if not_after is not None:
        exp = min(exp, int(not_after))
    claims = {"iss": issuer, "aud": audience, "sub": consumer_id, "iat": now, "exp": exp,
              "jti": uuid.uuid4().hex, "token_use": "transfer", "tpid": transfer_id, "agr": agreement_id,
              "prv": provider_id, "gen": generation, "asset": asset,
              "cnf": {"kid": consumer_kid, "x": consumer_key}}
    token = jwt.encode(claims, broker_key, algorithm="EdDSA", headers={"kid": key_id(broker_key.public_key())})
    return token, exp


_TOKEN_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "jti")


def decode_transfer_token(token: str, broker_public: Ed25519PublicKey, *, issuer: str, audience: str,
                          leeway: int) -> dict[str, Any]:
    """At the connector: ``audience`` is its own normalised endpoint (a token for another is refused)."""
    try:
        _, claims = jws.verify(token, broker_public, audience=audience, issuer=issuer, require=_TOKEN_CLAIMS,
                               leeway=leeway)
    except jws.JWSError as exc:
        if exc.reason == "expired":
            raise Unauthorized("The transfer token has expired; request a new one.",
                               code="expired_transfer_token") from None
        if exc.reason == "audience":
            raise Unauthorized("The transfer token is for another connector.", code="wrong_audience") from None
        raise Unauthorized("The transfer token is invalid.", code="invalid_transfer_token") from None
    if claims.get("token_use") != "transfer" or not isinstance(claims.get("cnf"), dict):
        raise Unauthorized("This is not a transfer token.", code="invalid_transfer_token")
    return claims


def token_hash(token: str) -> str:
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def make_pop(private_key: Ed25519PrivateKey, *, method: str, path: str, token: str) -> str:
    """What the consumer (SDK) sends in ``TwinSpace-PoP`` with each data-plane request."""
    claims = {"htm": method.upper(), "htu": path, "iat": int(time.time()), "jti": uuid.uuid4().hex,
              "ath": token_hash(token)}
    return jws.sign(private_key, claims, typ=POP_TYP, kid=key_id(private_key.public_key()))


def parse_pop(proof: str) -> tuple[str, tuple]:
    """``(kid, parsed)`` of a proof: its key id (to match the token's ``cnf``) and the parse to verify."""
    try:
        parsed = jws.parse(proof)
    except jws.JWSError:
        raise Unauthorized(f"The proof of possession must be an EdDSA {POP_TYP} naming its key.",
                           code="invalid_pop") from None
    header = parsed[0]
    if header.get("typ") != POP_TYP or not isinstance(header.get("kid"), str):
        raise Unauthorized(f"The proof of possession must be an EdDSA {POP_TYP} naming its key.", code="invalid_pop")
    return header["kid"], parsed


def verify_pop(proof: str, public_key: Ed25519PublicKey, *, method: str, path: str, token: str,
               max_age: int, leeway: int, parsed: tuple | None = None, ath: str | None = None) -> dict[str, Any]:
    """Check signature, method, path, token hash and freshness; the caller enforces single use of ``jti``.
    ``parsed``: from ``parse_pop`` (the proof is parsed once); ``ath``: ``token_hash(token)``, when known."""
    try:
        _, claims = jws.verify(proof, public_key, require=("iat", "jti"), leeway=leeway,
                               parsed=parsed or parse_pop(proof)[1])
    except jws.JWSError:
        raise Unauthorized("The proof of possession does not verify with the token's key.", code="invalid_pop") from None
    if claims.get("htm") != method.upper() or claims.get("htu") != path:
        raise Unauthorized("The proof of possession is for another request.", code="invalid_pop")
    if claims.get("ath") != (ath or token_hash(token)):
        raise Unauthorized("The proof of possession is for another token.", code="invalid_pop")
    iat = claims.get("iat")
    now = time.time()
    if not isinstance(iat, int) or isinstance(iat, bool) or iat > now + leeway or iat < now - max_age - leeway:
        raise Unauthorized("The proof of possession is stale; make a fresh one per request.", code="stale_pop")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
        raise Unauthorized("The proof of possession needs a jti of 8-128 characters.", code="invalid_pop")
    return claims
