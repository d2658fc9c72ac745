"""The compute side refuses what it must not process, with stable codes and no internals."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from twinspace.errors import BadRequest, Forbidden, PayloadTooLarge, TwinSpaceError, Unprocessable
from twinspace.privacy import he
from twinspace.privacy.params import MAX_CONTEXT_BYTES


def _code(exc_type, fn, *a, **kw) -> str:
    with pytest.raises(exc_type) as err:
        fn(*a, **kw)
    detail = err.value.detail.lower()
    assert "seal" not in detail and "tenseal" not in detail and "traceback" not in detail
    return err.value.code


def test_public_context_has_no_secret_or_galois_keys(keys):
    for k in keys.values():
        ctx = ts.context_from(k.public_context_bytes())
        assert not ctx.is_private() and ctx.is_public() and not ctx.has_galois_keys()


@pytest.mark.parametrize("scheme", ["bfv", "ckks"])
def test_context_with_secret_key_refused(scheme, keys):
    data = keys[scheme].context.serialize(save_secret_key=True)
    assert _code(BadRequest, he.load_public_context, data) == "context_has_secret_key"


@pytest.mark.parametrize("make", [
    lambda: ts.context(ts.SCHEME_TYPE.BFV, 8192, plain_modulus=1032193),          # other plain modulus
    lambda: ts.context(ts.SCHEME_TYPE.BFV, 4096, plain_modulus=1032193),          # smaller ring
    lambda: ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 60]),
    lambda: ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[40, 20, 40]),
])
def test_unknown_parameter_sets_refused(make):
    ctx = make()
    if ctx.seal_context().data.key_context_data().parms().scheme() == ts.SCHEME_TYPE.CKKS.value:
        ctx.global_scale = 2 ** 20
    ctx.make_context_public()
    assert _code(BadRequest, he.load_public_context, ctx.serialize()) == "context_parameters_not_allowed"


def test_ckks_with_other_scale_refused():
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2 ** 30
    ctx.make_context_public()
    assert _code(BadRequest, he.load_public_context, ctx.serialize()) == "context_parameters_not_allowed"


@pytest.mark.parametrize("data", [b"", b"garbage" * 100, "not bytes", None])
def test_malformed_context_refused(data):
    assert _code(BadRequest, he.load_public_context, data) == "context_malformed"


def test_truncated_and_flipped_context_refused(keys):
    good = keys["bfv"].public_context_bytes()
    assert _code(BadRequest, he.load_public_context, good[: len(good) // 2]) == "context_malformed"
    flipped = bytearray(good)
    for i in range(0, 64):
        flipped[i] ^= 0xFF
    assert _code(BadRequest, he.load_public_context, bytes(flipped)) == "context_malformed"


def test_oversize_context_refused():
    assert _code(PayloadTooLarge, he.load_public_context, b"\0" * (MAX_CONTEXT_BYTES + 1)) == "context_too_large"


def test_mask_from_other_parameters_refused(keys, pcs):
    # a CKKS chunk sent to a BFV query, and a chunk from a BFV context with another plain modulus
    ckks_chunk = keys["ckks"].encrypt_mask(np.ones(10))
    assert _code(BadRequest, he.masked_count, pcs["bfv"], ckks_chunk, 10, epsilon=None) == "ciphertext_malformed"
    other = ts.context(ts.SCHEME_TYPE.BFV, 8192, plain_modulus=1032193)
    chunk = [ts.bfv_vector(other, [1] * 8192).serialize()]
    assert _code(BadRequest, he.masked_count, pcs["bfv"], chunk, 10, epsilon=None) == "ciphertext_malformed"


def test_garbled_and_misshaped_masks_refused(keys, pcs):
    k, pc = keys["bfv"], pcs["bfv"]
    good = k.encrypt_mask(np.ones(10))
    assert _code(BadRequest, he.masked_count, pc, [good[0][:1000]], 10, epsilon=None) == "ciphertext_malformed"
    assert _code(BadRequest, he.masked_count, pc, [b"x" * 100], 10, epsilon=None) in {
        "ciphertext_malformed", "ciphertext_mismatch"}  # junk may parse as an empty vector
    assert _code(BadRequest, he.masked_count, pc, good * 2, 10, epsilon=None) == "mask_length_mismatch"
    assert _code(BadRequest, he.masked_count, pc, good, 20_000, epsilon=None) == "mask_length_mismatch"
    short = [ts.bfv_vector(k.context, [1] * 10).serialize()]  # not padded to the slot count
    assert _code(BadRequest, he.masked_count, pc, short, 10, epsilon=None) == "ciphertext_mismatch"


def test_bfv_refuses_non_integer_and_overflowing_values(keys, pcs):
    k, pc = keys["bfv"], pcs["bfv"]
    chunks = k.encrypt_mask(np.ones(3))
    assert _code(TwinSpaceError, he.masked_sum, pc, chunks, np.array([1.5, 2, 3]), bound=10,
                 epsilon=None) == "non_integer_values"
    assert _code(TwinSpaceError, he.masked_sum, pc, chunks, np.array([1, 2, 3]), bound=1e12,
                 epsilon=None) == "sum_may_overflow"


def test_secure_aggregate_refuses_too_few_or_duplicate_contributions(keys, pcs):
    pc = pcs["bfv"]
    a = he.encrypt_statistics(pc, np.arange(4))
    b = he.encrypt_statistics(pc, np.arange(4))
    assert _code(Forbidden, he.secure_aggregate, [a], 2, ctx=pc) == "too_few_providers"
    assert _code(Forbidden, he.secure_aggregate, [a, a, b], 3, ctx=pc) == "too_few_providers"
    assert _code(BadRequest, he.secure_aggregate, [a], 1, ctx=pc) == "invalid_min_providers"
    assert _code(BadRequest, he.secure_aggregate, [a, b"junk"], 2, ctx=pc) == "ciphertext_malformed"


def test_overflow_is_decided_from_public_facts_only(pcs):
    """``check_encodable`` sees the row count, the bound and epsilon — never the data — so its refusal
    cannot serve as an oracle."""
    with pytest.raises(Unprocessable) as err:
        he.check_encodable(pcs["bfv"], 1000, 10**9, 0.05)
    assert err.value.code == "sum_may_overflow"
    he.check_encodable(pcs["bfv"], 1000, 10**6, 0.05)
    he.check_encodable(pcs["ckks"], 1000, 10**9, 0.05)


def test_a_bfv_sum_whose_noise_could_wrap_is_refused(keys, pcs):
    """bound × rows fits the plaintext modulus, but the DP noise tail (bound/epsilon) would not."""
    k, pc = keys["bfv"], pcs["bfv"]
    chunks = k.encrypt_mask(np.ones(10))
    with pytest.raises(Unprocessable) as err:
        he.masked_sum(pc, chunks, np.ones(10, dtype=np.int64), bound=1e9, epsilon=0.05)
    assert err.value.code == "sum_may_overflow"
    he.masked_sum(pc, chunks, np.ones(10, dtype=np.int64), bound=1e9, epsilon=1.0)  # within range


def test_ckks_values_too_large_for_the_parameters_are_a_clear_refusal(keys, pcs):
    k, pc = keys["ckks"], pcs["ckks"]
    with pytest.raises(Unprocessable) as err:
        he.masked_sum(pc, k.encrypt_mask(np.ones(10)), np.ones(10), bound=1e16, epsilon=None)
    assert err.value.code == "values_too_large"
