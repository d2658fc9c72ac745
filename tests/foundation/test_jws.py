"""twinspace.jws, the data plane's compact EdDSA JWS: interoperable with PyJWT both ways, and strict."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinspace import jws
from twinspace.crypto import generate_key

KEY = generate_key()
PUB = KEY.public_key()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


claims_strategy = st.dictionaries(st.text(min_size=1, max_size=8),
                                  st.one_of(st.integers(-2**53, 2**53), st.text(max_size=20), st.booleans(), st.none(),
                                            st.lists(st.integers(0, 9), max_size=3)), max_size=6)


@settings(max_examples=60, deadline=None)
@given(claims_strategy)
def test_what_one_signs_the_other_verifies(claims):
    ours = jws.sign(KEY, claims, typ="t+jwt", kid="k1")
    assert jwt.decode(ours, PUB, algorithms=["EdDSA"], options={"verify_aud": False, "verify_exp": False,
                                                                 "verify_iat": False, "verify_nbf": False}) == claims
    assert jwt.get_unverified_header(ours) == {"alg": "EdDSA", "typ": "t+jwt", "kid": "k1"}
    theirs = jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": "k2"})
    head, got = jws.verify(theirs, PUB)
    assert got == claims and head["kid"] == "k2"


def test_claim_checks_match_what_the_callers_asked_of_pyjwt():
    now = int(time.time())
    token = jws.sign(KEY, {"iss": "b", "aud": "c", "iat": now, "exp": now + 60, "jti": "j"})
    assert jws.verify(token, PUB, audience="c", issuer="b", require=("jti",))[1]["jti"] == "j"
    for kwargs, reason in (({"audience": "other"}, "audience"), ({"issuer": "x"}, "issuer"),
                           ({"require": ("sub",)}, "missing:sub"), ({"now": now + 61}, "expired"),
                           ({"now": now - 30}, "immature")):
        with pytest.raises(jws.JWSError) as err:
            jws.verify(token, PUB, **kwargs)
        assert err.value.reason == reason
    assert jws.verify(token, PUB, now=now + 65, leeway=10)  # within the leeway
    listed = jws.sign(KEY, {"aud": ["c"], "exp": now + 60})
    with pytest.raises(jws.JWSError, match="audience"):
        jws.verify(listed, PUB, audience="c")  # a list is refused, even one naming us
    with pytest.raises(jws.JWSError):
        jws.verify(jws.sign(KEY, {"exp": True}), PUB)  # booleans are not times


def test_malformed_forged_and_other_algorithms_are_refused():
    token = jws.sign(KEY, {"a": 1})
    head, body, sig = token.split(".")
    other = generate_key()
    none_head = _b64(b'{"alg":"none"}')
    bad = [
        "", "a.b", token + ".x", f"{head}.{body}.{sig}=", f"{head}=.{body}.{sig}", f"{head}.{body}.{sig[:-4]}",
        f"{head}.{_b64(json.dumps({'a': 2}).encode())}.{sig}",  # payload changed
        jws.sign(other, {"a": 1}),  # another key
        f"{none_head}.{body}.",
        jwt.encode({"a": 1}, "secret-key-of-at-least-32-bytes!!", algorithm="HS256"),
        f"{_b64(json.dumps({'alg': 'EdDSA', 'crit': ['x']}).encode())}.{body}.{sig}",
        f"{_b64(b'[1]')}.{body}.{sig}", f"{head}.{_b64(b'[1]')}.{sig}", f"{head}.{_b64(b'{')}.{sig}",
        f"{head}.{_b64(b'[' * 100000)}.{sig}", "x" * 70_000,
    ]
    for token in bad:
        with pytest.raises(jws.JWSError):
            jws.verify(token, PUB)
