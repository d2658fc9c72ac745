"""Smoke test for benchmarks/he_bench.py: its core measurement computes the right masked SUM.

Correctness only (speed targets live in the benchmark itself): ~2000 rows through the real
consumer client and compute-side code, decrypted result vs numpy.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "he_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("he_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("he_bench", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("scheme", ["bfv", "ckks"])
def test_measure_he_matches_numpy(bench, scheme, keys):
    values, mask = bench.make_table(2000, seed=7)
    want = int(np.dot(mask, values))
    assert 0 < want < 1000 * 2000
    r = bench.measure_he(scheme, values, mask, keys[scheme], parallel=False)
    assert r.want == want and r.rows == r.measured_rows == 2000
    if scheme == "bfv":
        assert isinstance(r.got, int) and r.got == want
    else:
        assert abs(r.got - want) <= 1e-6 * want
    assert r.rel_error <= 1e-6
    # bytes on the wire: public context + one chunk up (2000 rows < slots), one ciphertext down
    assert r.upload_bytes > len(keys[scheme].public_context_bytes()) and r.download_bytes > 0
    assert min(r.encrypt_s, r.compute_s, r.decrypt_s) > 0


def test_plain_and_paillier_paths_are_exact(bench):
    values, mask = bench.make_table(2000, seed=7)
    want = int(np.dot(mask, values))
    assert bench.measure_plain(values, mask).got == want
    # Paillier with a small key on a few rows: checks the homomorphic Σ enc(m_i)·v_i logic
    few_v, few_m = values[:12], mask[:12]
    r = bench.measure_paillier(few_v, few_m, bench.paillier_keypair(512))
    assert r.got == int(np.dot(few_m, few_v)) and r.abs_error == 0
    assert r.upload_bytes == 64 + 12 * 128 and r.download_bytes == 128
    big = bench.extrapolate(r, 1200, want=0)
    assert big.extrapolated and big.upload_bytes == 64 + 1200 * 128
    assert big.encrypt_s == pytest.approx(r.encrypt_s * 100)
