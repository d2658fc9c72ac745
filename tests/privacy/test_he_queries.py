"""Encrypted query results match plaintext numpy (BFV exactly, CKKS to 1e-6 relative before noise)."""

from __future__ import annotations

import numpy as np
import pytest

from twinspace.privacy import he

SCHEMES = ["bfv", "ckks"]
N = 10_000  # > one chunk for both schemes (8192 / 4096 slots), last chunk partial


def _data(scheme, n=N, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 2, n)
    values = rng.integers(-500, 1000, n) if scheme == "bfv" else rng.normal(100, 300, n)
    return rng, mask, values


def _close(scheme, got, want, rel=1e-6):
    if scheme == "bfv":
        assert isinstance(got, int) and got == want
    else:
        assert abs(got - want) <= rel * max(abs(want), 1.0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_masked_sum_and_count(scheme, keys, pcs):
    k, pc = keys[scheme], pcs[scheme]
    _, mask, values = _data(scheme)
    chunks = k.encrypt_mask(mask)
    assert len(chunks) == -(-N // k.slots)
    _close(scheme, k.decrypt_sum(he.masked_sum(pc, chunks, values, bound=2000, epsilon=None)),
           int((mask * values).sum()) if scheme == "bfv" else float((mask * values).sum()))
    _close(scheme, k.decrypt_sum(he.masked_count(pc, chunks, N, epsilon=None)), int(mask.sum()))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_values_are_clipped_to_the_declared_bound(scheme, keys, pcs):
    k, pc = keys[scheme], pcs[scheme]
    values = np.array([5, 10_000, -10_000, 7])
    got = k.decrypt_sum(he.masked_sum(pc, k.encrypt_mask(np.ones(4)), values, bound=100, epsilon=None))
    _close(scheme, got, 5 + 100 - 100 + 7)


def test_padding_slots_do_not_count(keys, pcs):
    """A mask with 1s in the padding beyond the table's rows does not inflate the count."""
    k, pc = keys["bfv"], pcs["bfv"]
    mask = np.ones(k.slots)  # claims 8192 rows; the table has 100
    assert k.decrypt_sum(he.masked_count(pc, k.encrypt_mask(mask), 100, epsilon=None)) == 100


@pytest.mark.parametrize("scheme", SCHEMES)
def test_zero_sum_blinding_hides_slot_partials(scheme, keys, pcs):
    k, pc = keys[scheme], pcs[scheme]
    _, mask, values = _data(scheme)
    v = values if scheme == "ckks" else values.astype(np.int64)
    ct = he.masked_sum(pc, k.encrypt_mask(mask), v, bound=2000, epsilon=None)
    slots = k.decrypt_slots(ct)
    chunks = -(-N // k.slots)
    padded = np.zeros(chunks * k.slots)
    padded[:N] = mask * v
    partial = padded.reshape(chunks, k.slots).sum(axis=0)  # what the slots would hold without blinding
    if scheme == "bfv":
        t = k.params.plain_modulus
        matches = sum(int(s) % t == int(p) % t for s, p in zip(slots, partial))
    else:
        matches = int(np.sum(np.abs(slots - partial) < 1.0))
    assert matches <= 3  # individual slots look random; only their sum is meaningful


@pytest.mark.parametrize("scheme", SCHEMES)
def test_histogram(scheme, keys, pcs):
    k, pc = keys[scheme], pcs[scheme]
    rng, mask, _ = _data(scheme, n=5000)
    cats = rng.integers(0, 5, 5000)
    cts = he.histogram(pc, k.encrypt_mask(mask), cats, 5, epsilon=None)
    assert len(cts) == 5
    for b, ct in enumerate(cts):
        _close(scheme, k.decrypt_sum(ct), int(((cats == b) & (mask == 1)).sum()))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_linear_score(scheme, keys, pcs):
    """w · x̃ for an (already noised) integer vector x̃, with BFV integer or CKKS real weights."""
    k, pc = keys[scheme], pcs[scheme]
    rng = np.random.default_rng(3)
    x = rng.integers(0, 1000, 32)
    w = rng.integers(-50, 50, 32) if scheme == "bfv" else rng.normal(size=32)
    want = int(w @ x) if scheme == "bfv" else float(w @ x)
    _close(scheme, k.decrypt_sum(he.linear_score(pc, k.encrypt_weights(w), x)), want)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_secure_aggregate(scheme, keys, pcs):
    k, pc = keys[scheme], pcs[scheme]
    rng = np.random.default_rng(4)
    stats = [rng.integers(0, 1000, 64) for _ in range(4)]
    if scheme == "ckks":
        stats = [s + rng.random(64) for s in stats]
    agg = he.secure_aggregate([he.encrypt_statistics(pc, s) for s in stats], 3, ctx=pc)
    got = k.decrypt_slots(agg)[:64].astype(float)
    want = np.sum(stats, axis=0)
    assert np.allclose(got, want, rtol=1e-6, atol=1e-6 if scheme == "ckks" else 0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_released_value_is_a_fresh_blinded_encryption(scheme, keys, pcs):
    """``encrypt_result``: the consumer sums the slots to get the value; no single slot shows it."""
    k, pc = keys[scheme], pcs[scheme]
    ct = he.encrypt_result(pc, 123_456)
    assert round(k.decrypt_sum(ct)) == 123_456
    assert np.sum(np.abs(k.decrypt_slots(ct).astype(float) - 123_456) < 0.5) <= 1


def test_parallel_path_matches_serial(keys, pcs):
    k, pc = keys["bfv"], pcs["bfv"]
    _, mask, values = _data("bfv", n=3 * 8192)
    chunks = k.encrypt_mask(mask)
    want = int((mask * values).sum())
    assert k.decrypt_sum(he.masked_sum(pc, chunks, values, bound=2000, epsilon=None, parallel=True)) == want


@pytest.mark.parametrize("parallel", [False, True])
def test_one_pass_over_the_mask_serves_several_columns(keys, pcs, parallel):
    """masked_sums reads each mask chunk once for every column, serially or in worker processes."""
    k, pc = keys["bfv"], pcs["bfv"]
    _, mask, values = _data("bfv", n=2 * 8192 + 5)
    chunks = k.encrypt_mask(mask)
    other = (values % 7).astype(np.int64)
    outs = he.masked_sums(pc, chunks, [values, np.ones(len(values), dtype=np.int64), other], [2000, 1, 10],
                          epsilon=None, parallel=parallel)
    assert [k.decrypt_sum(o) for o in outs] == [int((mask * values).sum()), int(mask.sum()),
                                                int((mask * other).sum())]


def test_dp_noise_is_inside_the_ciphertext(keys, pcs):
    """With epsilon the decrypted count differs from the truth by integer Laplace noise."""
    k, pc = keys["bfv"], pcs["bfv"]
    mask = np.ones(200)
    chunks = k.encrypt_mask(mask)
    outs = [k.decrypt_sum(he.masked_count(pc, chunks, 200, epsilon=0.5)) for _ in range(8)]
    assert all(isinstance(o, int) for o in outs)
    assert len(set(outs)) > 1 and all(abs(o - 200) < 60 for o in outs)
