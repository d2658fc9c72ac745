"""Client assertions (RFC 7523 private_key_jwt) in, broker access tokens (EdDSA JWT) out.

Only EdDSA is accepted in either direction, so ``alg=none`` and HS256 key-confusion tricks fail.
``aud`` must be exactly the expected audience: a list that merely contains it is refused
(``strict_aud``), so a token minted for several services is never accepted here.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from twinspace.crypto import key_id
from twinspace.errors import Unauthorized

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ["EdDSA"]


@dataclass(frozen=True)
class AssertionClaims:
    org_id: str
    kid: str
    jti: str
    exp: int


def unverified_kid(assertion: str) -> str:
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise Unauthorized("The client assertion is not a well-formed JWT.", code="invalid_assertion") from None
    if header.get("alg") not in ALGORITHMS:
        raise Unauthorized("Client assertions must be signed with EdDSA (Ed25519).", code="invalid_assertion")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 64:
        raise Unauthorized("The client assertion header must name the signing key (kid).", code="invalid_assertion")
    return kid


def verify_assertion(assertion: str, public_key: Ed25519PublicKey, *, org_id: str, kid: str,
                     audience: str, max_lifetime: int, leeway: int) -> AssertionClaims:
    """Check signature, iss = sub = org, audience, expiry and a lifetime of at most ``max_lifetime``."""
    try:
        claims = jwt.decode(assertion, public_key, algorithms=ALGORITHMS, audience=audience, leeway=leeway,
                            options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"], "strict_aud": True})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("The client assertion has expired.", code="expired_assertion") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized("The client assertion names another audience.", code="invalid_assertion") from None
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"The client assertion is invalid: {type(exc).__name__}.",
                           code="invalid_assertion") from None
    if claims["iss"] != org_id or claims["sub"] != org_id:
        raise Unauthorized("The assertion's iss and sub must both be the key owner's org id.",
                           code="invalid_assertion")
    if not isinstance(claims["exp"], int) or not isinstance(claims["iat"], int):
        raise Unauthorized("exp and iat must be integers.", code="invalid_assertion")
    if claims["exp"] - claims["iat"] > max_lifetime:
        raise Unauthorized(f"Client assertions may live at most {max_lifetime} s.", code="assertion_lifetime_too_long")
    if claims["iat"] > time.time() + leeway:
        raise Unauthorized("The client assertion was issued in the future.", code="invalid_assertion")
    jti = claims["jti"]
    if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
        raise Unauthorized("jti must be a string of 8 to 128 characters.", code="invalid_assertion")
    return AssertionClaims(org_id=org_id, kid=kid, jti=jti, exp=claims["exp"])


def make_assertion(private_key: Ed25519PrivateKey, *, org_id: str, audience: str, lifetime: int = 60,
                   kid: str | None = None) -> str:
    """What a participant (SDK, CLI, tests) sends to ``/auth/token``."""
    now = int(time.time())
    claims = {"iss": org_id, "sub": org_id, "aud": audience, "iat": now, "exp": now + lifetime,
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, private_key, algorithm="EdDSA",
                      headers={"kid": kid or key_id(private_key.public_key())})


def issue_access_token(broker_key: Ed25519PrivateKey, *, issuer: str, org_id: str, role: str,
                       org_key_kid: str, ttl: int, extra: dict[str, Any] | None = None) -> tuple[str, int]:
    now = int(time.time())
    claims = {"iss": issuer, "aud": issuer, "sub": org_id, "role": role, "iat": now, "exp": now + ttl,
              "jti": uuid.uuid4().hex, "token_use": "access", "cnf": {"kid": org_key_kid}}
    claims.update(extra or {})
    token = jwt.encode(claims, broker_key, algorithm="EdDSA", headers={"kid": key_id(broker_key.public_key())})
    return token, ttl


def decode_access_token(token: str, broker_public: Ed25519PublicKey, *, issuer: str, leeway: int) -> dict[str, Any]:
    try:
        claims = jwt.decode(token, broker_public, algorithms=ALGORITHMS, audience=issuer, issuer=issuer,
                            leeway=leeway,
                            options={"require": ["iss", "aud", "sub", "exp", "iat", "jti"], "strict_aud": True})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("The access token has expired.", code="expired_token") from None
    except jwt.PyJWTError:
        raise Unauthorized("The access token is invalid.", code="invalid_token") from None
    if claims.get("token_use") != "access":
        raise Unauthorized("This token is not an access token.", code="invalid_token")
    return claims
