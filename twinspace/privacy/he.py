"""Compute side of privacy-preserving queries (runs where the provider's data is).

Protocol (encrypted-mask mode): the consumer sends a public TenSEAL context (no secret key, no
Galois keys) and a 0/1 row mask encrypted in chunks of ``slots`` rows. Here each chunk is
multiplied slot-wise by the plaintext provider values and the products are summed slot-wise
(no rotations, hence no Galois keys). Before returning, ONE fresh encryption is added carrying
(a) a random vector whose slots sum to zero (mod t for BFV) — the "zero-sum" blinding, so the
per-slot partial sums are hidden and the consumer learns only the total when it sums the slots —
and (b) differential-privacy Laplace noise in one random slot. See docs/privacy-queries.md for
what each party learns and the circuit-privacy caveat.

Plaintext-predicate mode (safer default, ``predicate_aggregate``): the predicate is evaluated in
clear on declared columns, the cohort must be ≥ k, DP noise is added and only the noised result is
freshly encrypted under the consumer's public context.

Pure code: no HTTP, no database. Errors are ``twinspace.errors`` with stable codes and no internals.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tenseal as ts

from twinspace.errors import BadRequest, Forbidden, PayloadTooLarge, TwinSpaceError, Unprocessable
from twinspace.privacy import dp
from twinspace.privacy.params import (ALLOWED, MAX_CIPHERTEXT_BYTES, MAX_CONTEXT_BYTES, MAX_REQUEST_BYTES,
                                   ParamSet, identify)

PARALLEL_MIN_ROWS = 262_144   # below this, process start-up costs more than it saves
MAX_WORKERS = max(1, os.cpu_count() or 1)  # TenSEAL holds the GIL: one process per core
CKKS_BLIND_FACTOR = 2.0 ** 12  # blinding std relative to the largest plausible slot value (precision trade-off)


@dataclass
class PublicContext:
    """A validated consumer public context."""
    ctx: ts.Context
    params: ParamSet
    raw: bytes

    @property
    def scheme(self) -> str:
        return self.params.scheme

    @property
    def slots(self) -> int:
        return self.params.slots


def load_public_context(data: bytes) -> PublicContext:
    """Deserialise and vet a consumer context: bytes only, size-capped, public, allow-listed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadRequest("The encryption context must be bytes.", code="context_malformed")
    data = bytes(data)
    if len(data) > MAX_CONTEXT_BYTES:
        raise PayloadTooLarge("The encryption context is too large.", code="context_too_large")
    if not data:
        raise BadRequest("The encryption context is empty.", code="context_malformed")
    try:
        ctx = ts.context_from(data)
    except Exception:  # noqa: BLE001 — never leak parser internals
        raise BadRequest("The encryption context could not be read.", code="context_malformed") from None
    try:
        private = ctx.is_private()
    except Exception:  # noqa: BLE001
        raise BadRequest("The encryption context could not be read.", code="context_malformed") from None
    if private:
        raise BadRequest("The encryption context carries a secret key; send the public context only.",
                         code="context_has_secret_key")
    try:
        params = identify(ctx)
        has_pk = ctx.is_public()
    except Exception:  # noqa: BLE001
        raise BadRequest("The encryption context could not be read.", code="context_malformed") from None
    if params is None:
        raise BadRequest("The encryption parameters are not on the allow-list.",
                         code="context_parameters_not_allowed")
    if not has_pk:
        raise BadRequest("The encryption context has no public key.", code="context_malformed")
    if params.scheme == "ckks":
        ctx.auto_rescale = False  # keep products at scale 2^80: no rescale bias, exact scale on decode
    return PublicContext(ctx, params, data)


def _load_ct(pc: PublicContext, data: bytes, what: str = "ciphertext"):
    if not isinstance(data, (bytes, bytearray)):
        raise BadRequest(f"The {what} must be bytes.", code="ciphertext_malformed")
    if len(data) > MAX_CIPHERTEXT_BYTES:
        raise PayloadTooLarge(f"A {what} is too large.", code="ciphertext_too_large")
    try:
        ct = (ts.bfv_vector_from if pc.scheme == "bfv" else ts.ckks_vector_from)(pc.ctx, bytes(data))
        size = ct.size()
    except Exception:  # noqa: BLE001
        raise BadRequest(f"A {what} could not be read or does not match the encryption parameters.",
                         code="ciphertext_malformed") from None
    if size != pc.slots:
        raise BadRequest(f"A {what} has the wrong number of slots.", code="ciphertext_mismatch")
    return ct


def check_ciphertext(pc: PublicContext, data: bytes, what: str = "ciphertext") -> None:
    """Refuse bytes that are not one well-formed ciphertext of ``pc``'s parameters and slot count."""
    _load_ct(pc, data, what)


def _check_request(pc: PublicContext, chunks: Sequence[bytes], rows: int) -> None:
    if not isinstance(chunks, (list, tuple)):
        raise BadRequest("The mask must be a list of ciphertexts.", code="ciphertext_malformed")
    if sum(len(c) for c in chunks if isinstance(c, (bytes, bytearray))) > MAX_REQUEST_BYTES:
        raise PayloadTooLarge("The encrypted mask is too large.", code="request_too_large")
    expected = max(1, -(-rows // pc.slots))
    if len(chunks) != expected:
        raise BadRequest("The encrypted mask does not cover the dataset's rows.", code="mask_length_mismatch")


def _prepare_values(pc: PublicContext, values: np.ndarray, bound: float, noise_margin: float = 0.0) -> np.ndarray:
    """Clip to [-bound, bound] (the DP sensitivity) and check encodability; pad to whole chunks."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise Unprocessable("Values must be one-dimensional.", code="invalid_values")
    if not (np.isfinite(bound) and bound > 0):
        raise Unprocessable("The value bound must be positive.", code="invalid_bound")
    if values.dtype.kind not in "biuf" or (values.dtype.kind == "f" and not np.all(np.isfinite(values))):
        raise Unprocessable("Values must be finite numbers.", code="invalid_values")
    v = np.clip(values, -bound, bound)
    n = max(1, -(-len(v) // pc.slots)) * pc.slots
    if pc.scheme == "bfv":
        if v.dtype.kind == "f" and not np.all(np.mod(v, 1) == 0):
            raise Unprocessable("BFV values must be integers (scale them to fixed point).",
                                code="non_integer_values")
        # the noised total must stay inside (-t/2, t/2) or it would wrap silently
        if bound * max(len(v), 1) + noise_margin + 10**6 >= pc.params.plain_modulus // 2:
            raise Unprocessable("The sum could overflow the plaintext modulus.", code="sum_may_overflow")
        out = np.zeros(n, dtype=np.int64)
    else:
        out = np.zeros(n, dtype=float)
    out[:len(v)] = v
    return out


# ---------------------------------------------------------------- slot-wise products (maybe parallel)

def _partial_sums(pc: PublicContext, chunks: Sequence[bytes], columns: Sequence[np.ndarray]) -> list:
    """For each value column c: Σ_chunks chunk ⊙ c_chunk. Each chunk is read once for all columns (one
    uploaded mask serves a sum, a count and every histogram bin)."""
    accs: list = [None] * len(columns)
    s = pc.slots
    for i, c in enumerate(chunks):
        ct = _load_ct(pc, c, "mask chunk")
        for j, values in enumerate(columns):
            plain = values[i * s:(i + 1) * s]
            plain = [int(x) for x in plain] if pc.scheme == "bfv" else plain.tolist()
            try:
                prod = ct * plain
                accs[j] = prod if accs[j] is None else accs[j] + prod
            except Exception:  # noqa: BLE001 — crafted ciphertext (e.g. other scale / level)
                raise BadRequest("A mask chunk does not match the encryption parameters.",
                                 code="ciphertext_mismatch") from None
    return accs


_WORKER_CTX: dict[bytes, PublicContext] = {}


def _worker(ctx_raw: bytes, chunks: list[bytes], columns: list[np.ndarray]) -> tuple:
    """Runs in a worker process. Errors travel back as (class name, detail, code) tuples because
    TwinSpaceError's keyword-only code does not survive pickling."""
    try:
        key = hashlib.sha256(ctx_raw).digest()
        pc = _WORKER_CTX.get(key)
        if pc is None:
            _WORKER_CTX.clear()
            pc = _WORKER_CTX[key] = load_public_context(ctx_raw)
        return ("ok", [acc.serialize() for acc in _partial_sums(pc, chunks, columns)])
    except TwinSpaceError as e:
        return ("err", type(e).__name__, e.detail, e.code)


_POOL: ProcessPoolExecutor | None = None


def _pool() -> ProcessPoolExecutor:
    global _POOL
    if _POOL is None:
        import multiprocessing as mp
        _POOL = ProcessPoolExecutor(max_workers=MAX_WORKERS,
                                    mp_context=mp.get_context("spawn"))
    return _POOL


def _shutdown_pool() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=False, cancel_futures=True)
        _POOL = None


def _slotwise_sums(pc: PublicContext, chunks: Sequence[bytes], columns: Sequence[np.ndarray], rows: int,
                   parallel: bool | None = None) -> list:
    """``_partial_sums`` in worker processes when the table is large (TenSEAL holds the GIL, so
    threads would not help): each worker takes a contiguous range of chunks for every column."""
    workers = min(MAX_WORKERS, len(chunks))
    if parallel is None:
        parallel = rows >= PARALLEL_MIN_ROWS and workers > 1
    if not parallel or workers < 2:
        return _partial_sums(pc, chunks, columns)
    # validate everything up front so a bad chunk gives the same error as in the serial path
    for c in chunks:
        if not isinstance(c, (bytes, bytearray)):
            raise BadRequest("A mask chunk must be bytes.", code="ciphertext_malformed")
    bounds = np.linspace(0, len(chunks), workers + 1).astype(int)
    s = pc.slots
    futures = [_pool().submit(_worker, pc.raw, list(chunks[a:b]), [v[a * s:b * s] for v in columns])
               for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    try:
        results = [f.result() for f in futures]
    except BrokenProcessPool:  # a worker died (e.g. OOM): drop the pool, compute here instead
        _shutdown_pool()
        return _partial_sums(pc, chunks, columns)
    for res in results:
        if res[0] == "err":
            raise {"BadRequest": BadRequest, "PayloadTooLarge": PayloadTooLarge}.get(res[1], BadRequest)(
                res[2], code=res[3])
    accs: list = [None] * len(columns)
    for res in results:
        for j, data in enumerate(res[1]):
            part = _load_ct(pc, data, "partial result")
            accs[j] = part if accs[j] is None else accs[j] + part
    return accs


# ---------------------------------------------------------------- blinding + DP noise

def _blind_and_noise(pc: PublicContext, acc, *, epsilon: float | None, sensitivity: float,
                     magnitude: float, rng: np.random.Generator | None = None) -> bytes:
    """Add ONE fresh encryption of (zero-sum random vector + DP noise in a random slot)."""
    s = pc.slots
    g = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    j = int(g.integers(s))
    if pc.scheme == "bfv":
        t = pc.params.plain_modulus
        r = g.integers(0, t, size=s, dtype=np.int64)
        r[-1] = 0
        r[-1] = (-int(r.sum(dtype=object))) % t
        r = np.where(r > t // 2, r - t, r)  # centred int64 for the encoder
        if epsilon is not None:
            r[j] = int(r[j]) + dp.discrete_laplace_noise(sensitivity, epsilon, rng=g)
        fresh = ts.bfv_vector(pc.ctx, [int(x) for x in r])
    else:
        r = g.normal(0.0, CKKS_BLIND_FACTOR * max(magnitude, 1.0), size=s)
        r -= r.mean()
        if epsilon is not None:
            r[j] += dp.laplace_noise(sensitivity, epsilon, rng=g)
        # the products were not rescaled: they sit at scale^2 on the top level
        try:
            fresh = ts.ckks_vector(pc.ctx, r.tolist(), scale=pc.params.global_scale ** 2)
        except ValueError:  # "encoded values are too large": bound × rows beyond what CKKS-8192 holds
            raise Unprocessable("The values are too large for these encryption parameters; lower the bound.",
                                code="values_too_large") from None
    try:
        return (acc + fresh).serialize()
    except Exception:  # noqa: BLE001
        raise BadRequest("The ciphertexts do not match the encryption parameters.",
                         code="ciphertext_mismatch") from None


# ---------------------------------------------------------------- query types

def masked_sums(pc: PublicContext, mask_chunks: Sequence[bytes], columns: Sequence[np.ndarray],
                bounds: Sequence[float], *, epsilon: float | None, parallel: bool | None = None,
                rng: np.random.Generator | None = None) -> list[bytes]:
    """For each column: encrypted Σ mask_i · clip(values_i, ±bound) + Laplace(bound/epsilon), zero-sum
    blinded, in one pass over the mask. ``epsilon`` is per output (the caller composes).

    ``epsilon=None`` disables DP noise (only for trusted consumers / tests). DP holds for 0/1
    masks; the compute side cannot verify that an encrypted mask is 0/1 (see the docs).
    """
    columns = [np.asarray(v) for v in columns]
    if not columns or len(columns) != len(bounds) or len({len(v) for v in columns}) != 1:
        raise Unprocessable("Value columns and bounds must match.", code="invalid_values")
    rows = len(columns[0])
    _check_request(pc, mask_chunks, rows)
    if epsilon is not None:
        dp.check_epsilon(epsilon)
    prepared = [_prepare_values(pc, v, b, 50 * b / epsilon if epsilon is not None else 0.0)  # e^-50 tail
                for v, b in zip(columns, bounds)]
    accs = _slotwise_sums(pc, mask_chunks, prepared, rows, parallel)
    return [_blind_and_noise(pc, acc, epsilon=epsilon, sensitivity=b, magnitude=b * len(mask_chunks), rng=rng)
            for acc, b in zip(accs, bounds)]


def masked_sum(pc: PublicContext, mask_chunks: Sequence[bytes], values: np.ndarray, *,
               bound: float, epsilon: float | None, parallel: bool | None = None,
               rng: np.random.Generator | None = None) -> bytes:
    """Encrypted Σ mask_i · clip(values_i, ±bound) + Laplace(bound/epsilon), zero-sum blinded."""
    return masked_sums(pc, mask_chunks, [values], [bound], epsilon=epsilon, parallel=parallel, rng=rng)[0]


def masked_count(pc: PublicContext, mask_chunks: Sequence[bytes], n_rows: int, *,
                 epsilon: float | None, parallel: bool | None = None,
                 rng: np.random.Generator | None = None) -> bytes:
    """Encrypted number of selected rows (padding slots beyond ``n_rows`` are multiplied by 0)."""
    return masked_sum(pc, mask_chunks, np.ones(n_rows, dtype=np.int64), bound=1, epsilon=epsilon,
                      parallel=parallel, rng=rng)


def histogram(pc: PublicContext, mask_chunks: Sequence[bytes], categories: np.ndarray, n_bins: int, *,
              epsilon: float | None, parallel: bool | None = None,
              rng: np.random.Generator | None = None) -> list[bytes]:
    """One encrypted (noised) count per category 0..n_bins-1 among the selected rows.

    Each row falls in exactly one bin, so noise Laplace(1/epsilon) per bin gives epsilon-DP for the
    whole histogram (parallel composition). Bins are fixed by ``n_bins`` so that the set of
    categories present is not revealed.
    """
    categories = np.asarray(categories)
    if categories.ndim != 1 or categories.dtype.kind not in "iu":
        raise Unprocessable("Categories must be integer codes.", code="invalid_values")
    if not 1 <= n_bins <= 1024 or (len(categories) and (categories.min() < 0 or categories.max() >= n_bins)):
        raise Unprocessable("Category codes must be in [0, n_bins).", code="invalid_values")
    indicators = [(categories == b).astype(np.int64) for b in range(n_bins)]
    return masked_sums(pc, mask_chunks, indicators, [1] * n_bins, epsilon=epsilon, parallel=parallel, rng=rng)


def linear_score(pc: PublicContext, enc_weights: bytes, features: np.ndarray, *,
                 bound: float | None = None, epsilon: float | None = None,
                 rng: np.random.Generator | None = None) -> bytes:
    """Encrypted w·x for the consumer's private weights w and one provider feature vector x.

    With ``epsilon``, Laplace noise of scale ``bound/epsilon`` is added (``bound`` = sensitivity
    of the score, which depends on the weights the provider cannot see; the consumer declares it
    in the agreement).
    """
    x = np.asarray(features)
    if x.ndim != 1 or len(x) == 0 or len(x) > pc.slots:
        raise Unprocessable(f"Features must be a vector of 1..{pc.slots} values.", code="invalid_values")
    if epsilon is not None and bound is None:
        raise BadRequest("A sensitivity bound is required with epsilon.", code="invalid_sensitivity")
    ct = _load_ct(pc, enc_weights, "weights ciphertext")
    xb = np.abs(x).max() if len(x) else 1.0
    v = _prepare_values(pc, x, float(max(xb, 1.0)))
    plain = [int(a) for a in v] if pc.scheme == "bfv" else v.tolist()
    try:
        acc = ct * plain
    except Exception:  # noqa: BLE001
        raise BadRequest("The weights do not match the encryption parameters.", code="ciphertext_mismatch") from None
    return _blind_and_noise(pc, acc, epsilon=epsilon, sensitivity=bound or 1.0,
                            magnitude=float(xb), rng=rng)


# ---------------------------------------------------------------- plaintext-predicate mode

def predicate_aggregate(pc: PublicContext, values: np.ndarray, predicate: np.ndarray, *, k: int,
                        epsilon: float, bound: float, kind: str = "sum",
                        rng: np.random.Generator | None = None) -> bytes:
    """Safer default: plaintext predicate on declared columns, cohort ≥ k, DP noise, then a fresh
    encryption of the noised result (zero-sum spread over the slots) under the consumer's key."""
    predicate = np.asarray(predicate, dtype=bool)
    values = np.asarray(values)
    if predicate.shape != values.shape or values.ndim != 1:
        raise Unprocessable("Predicate and values must have the same length.", code="invalid_values")
    dp.enforce_k_threshold(int(predicate.sum()), k)
    dp.check_epsilon(epsilon)
    if kind == "count":
        total, sens = int(predicate.sum()), 1.0
    elif kind == "sum":
        v = _prepare_values(pc, values, bound, 50 * bound / epsilon)[:len(values)]
        total, sens = (int(v[predicate].sum()) if pc.scheme == "bfv" else float(v[predicate].sum())), bound
    else:
        raise BadRequest("kind must be 'sum' or 'count'.", code="invalid_query")
    g = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    if pc.scheme == "bfv":
        noised = total + dp.discrete_laplace_noise(sens, epsilon, rng=g)
        res = np.zeros(pc.slots, dtype=np.int64)
        res[0] = noised
        acc = ts.bfv_vector(pc.ctx, [int(a) for a in res])
    else:
        noised = total + dp.laplace_noise(sens, epsilon, rng=g)
        res = np.zeros(pc.slots)
        res[0] = noised
        acc = ts.ckks_vector(pc.ctx, res.tolist(), scale=pc.params.global_scale ** 2)
    return _blind_and_noise(pc, acc, epsilon=None, sensitivity=sens, magnitude=abs(noised), rng=g)


# ---------------------------------------------------------------- secure aggregation

def encrypt_statistics(pc: PublicContext, stats: np.ndarray) -> bytes:
    """Provider side of secure aggregation: encrypt a statistics vector under the consumer's key."""
    stats = np.asarray(stats)
    if stats.ndim != 1 or not 1 <= len(stats) <= pc.slots:
        raise Unprocessable(f"Statistics must be a vector of 1..{pc.slots} values.", code="invalid_values")
    padded = np.zeros(pc.slots, dtype=np.int64 if pc.scheme == "bfv" else float)
    if pc.scheme == "bfv" and not np.all(np.mod(stats, 1) == 0):
        raise Unprocessable("BFV statistics must be integers.", code="non_integer_values")
    padded[:len(stats)] = stats
    if pc.scheme == "bfv":
        return ts.bfv_vector(pc.ctx, [int(a) for a in padded]).serialize()
    return ts.ckks_vector(pc.ctx, padded.tolist()).serialize()


def secure_aggregate(ciphertexts: Sequence[bytes], min_providers: int, *, ctx: PublicContext) -> bytes:
    """Broker side: add the providers' ciphertexts; never release fewer than ``min_providers``
    distinct contributions (a single provider's ciphertext could be decrypted by the consumer)."""
    if not isinstance(min_providers, int) or min_providers < 2:
        raise BadRequest("min_providers must be at least 2.", code="invalid_min_providers")
    if not isinstance(ciphertexts, (list, tuple)):
        raise BadRequest("Ciphertexts must be a list.", code="ciphertext_malformed")
    if sum(len(c) for c in ciphertexts if isinstance(c, (bytes, bytearray))) > MAX_REQUEST_BYTES:
        raise PayloadTooLarge("Too much ciphertext data.", code="request_too_large")
    digests = {hashlib.sha256(bytes(c)).digest() for c in ciphertexts if isinstance(c, (bytes, bytearray))}
    if len(ciphertexts) < min_providers or len(digests) < len(ciphertexts):
        raise Forbidden("Too few distinct provider contributions to release an aggregate.",
                        code="too_few_providers")
    acc = None
    for c in ciphertexts:
        ct = _load_ct(ctx, c, "provider ciphertext")
        try:
            acc = ct if acc is None else acc + ct
        except Exception:  # noqa: BLE001
            raise BadRequest("A provider ciphertext does not match the encryption parameters.",
                             code="ciphertext_mismatch") from None
    return acc.serialize()


__all__ = ["PublicContext", "load_public_context", "masked_sums", "masked_sum", "masked_count", "histogram",
           "linear_score", "predicate_aggregate", "encrypt_statistics", "secure_aggregate", "check_ciphertext",
           "ALLOWED"]


def scaled_bound(bound: float, scheme: str, scale: int) -> float:
    """The clipping bound in the units the scheme computes in (BFV: fixed-point integers)."""
    return float(np.ceil(bound * 10 ** scale)) if scheme == "bfv" else float(bound)


def provider_statistics(values: np.ndarray, *, scheme: str, bound: float, scale: int, epsilon: float,
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """What a provider's connector encrypts for a round: [Σ clip(v), count], each with DP noise
    (epsilon split over the two statistics). Pure; runs on the provider's machine."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    b = scaled_bound(bound, scheme, scale)
    if scheme == "bfv":
        clipped = np.clip(np.rint(v * 10 ** scale), -b, b).astype(np.int64)
        return np.array([int(clipped.sum()) + dp.discrete_laplace_noise(b, epsilon / 2, rng=rng),
                         len(v) + dp.discrete_laplace_noise(1, epsilon / 2, rng=rng)], dtype=np.int64)
    clipped = np.clip(v, -b, b)
    return np.array([clipped.sum() + dp.laplace_noise(b, epsilon / 2, rng=rng),
                     len(v) + dp.laplace_noise(1, epsilon / 2, rng=rng)])
