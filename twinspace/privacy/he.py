"""Homomorphic-encryption side of privacy-preserving queries (runs where the provider's data is).

What reaches the consumer is always a FRESH encryption under its public context of numbers that are
already differentially private (``twinspace/privacy/mechanisms.py``), plus a fresh zero-sum blinding
vector from the OS CSPRNG (the consumer sums the slots): ``encrypt_result`` for plaintext-predicate
queries, ``encrypt_statistics`` for secure-aggregation contributions, and ``linear_score`` multiplies
the consumer's encrypted weights by an already noised vector. No ciphertext returned to the consumer
has a noise term that depends on the data beyond those DP values (circuit privacy by construction).

``masked_sums`` (encrypted 0/1 masks) is kept for benchmarks only; the broker refuses encrypted-mask
queries (docs/privacy-queries.md explains the noise channel of a crafted mask ciphertext).

Pure code: no HTTP, no database. Errors are ``twinspace.errors`` with stable codes and no internals.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tenseal as ts

from twinspace.errors import BadRequest, Forbidden, PayloadTooLarge, TwinSpaceError, Unprocessable
from twinspace.privacy import mechanisms
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
                     magnitude: float) -> bytes:
    """Add ONE fresh encryption of (zero-sum random vector + integer DP noise in a random slot).

    The blinding values come from the OS CSPRNG (``mechanisms.blinding_rng``); the noise from OpenDP's
    own sampler (discrete Laplace, Δ₁ = ``sensitivity``), so seeing the blinding reveals nothing of it."""
    s = pc.slots
    g = mechanisms.blinding_rng()
    j = g.randrange(s)
    noise = int(mechanisms.noisy_vector([0], max(1, int(np.ceil(sensitivity))), epsilon)[0]) if epsilon else 0
    if pc.scheme == "bfv":
        t = pc.params.plain_modulus
        r = [g.randrange(t) for _ in range(s - 1)]
        r.append((-sum(r)) % t)
        r[j] = (r[j] + noise) % t
        fresh = ts.bfv_vector(pc.ctx, [x - t if x > t // 2 else x for x in r])  # centred for the encoder
    else:
        sigma = CKKS_BLIND_FACTOR * max(magnitude, 1.0)
        r = np.array([g.gauss(0.0, sigma) for _ in range(s)])
        r -= r.mean()
        r[j] += noise
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


def encrypt_result(pc: PublicContext, value: int) -> bytes:
    """A released (already noised) integer as a FRESH encryption under the consumer's key, zero-sum
    blinded over the slots. Nothing but fresh encryptions goes into it, so its noise carries no trace
    of the data or of the computation (circuit privacy by construction)."""
    res = [0] * pc.slots
    res[0] = int(value)
    if pc.scheme == "bfv":
        acc = ts.bfv_vector(pc.ctx, res)
    else:
        acc = ts.ckks_vector(pc.ctx, [float(x) for x in res], scale=pc.params.global_scale ** 2)
    return _blind_and_noise(pc, acc, epsilon=None, sensitivity=1, magnitude=abs(float(value)))


# ---------------------------------------------------------------- query types

def masked_sums(pc: PublicContext, mask_chunks: Sequence[bytes], columns: Sequence[np.ndarray],
                bounds: Sequence[float], *, epsilon: float | None, parallel: bool | None = None) -> list[bytes]:
    """For each column: encrypted Σ mask_i · clip(values_i, ±bound) + discrete Laplace(2·bound/epsilon),
    zero-sum blinded, in one pass over the mask. ``epsilon`` is per output (the caller composes).

    NOT OFFERED TO CONSUMERS (``broker/privacy/service.py`` refuses every encrypted-mask query): the
    compute side cannot prove an encrypted mask is 0/1, and a crafted mask ciphertext's noise carries a
    weighted sum of the values past the DP noise (docs/privacy-queries.md). Kept for benchmarks.
    """
    columns = [np.asarray(v) for v in columns]
    if not columns or len(columns) != len(bounds) or len({len(v) for v in columns}) != 1:
        raise Unprocessable("Value columns and bounds must match.", code="invalid_values")
    rows = len(columns[0])
    _check_request(pc, mask_chunks, rows)
    if epsilon is not None:
        mechanisms.check_epsilon(epsilon)
    prepared = [_prepare_values(pc, v, b, 100 * b / epsilon if epsilon is not None else 0.0)  # e^-50 tail
                for v, b in zip(columns, bounds)]
    accs = _slotwise_sums(pc, mask_chunks, prepared, rows, parallel)
    return [_blind_and_noise(pc, acc, epsilon=epsilon, sensitivity=2 * b, magnitude=b * len(mask_chunks))
            for acc, b in zip(accs, bounds)]


def masked_sum(pc: PublicContext, mask_chunks: Sequence[bytes], values: np.ndarray, *,
               bound: float, epsilon: float | None, parallel: bool | None = None) -> bytes:
    """Encrypted Σ mask_i · clip(values_i, ±bound) + noise, zero-sum blinded (see ``masked_sums``)."""
    return masked_sums(pc, mask_chunks, [values], [bound], epsilon=epsilon, parallel=parallel)[0]


def masked_count(pc: PublicContext, mask_chunks: Sequence[bytes], n_rows: int, *,
                 epsilon: float | None, parallel: bool | None = None) -> bytes:
    """Encrypted number of selected rows (padding slots beyond ``n_rows`` are multiplied by 0)."""
    return masked_sum(pc, mask_chunks, np.ones(n_rows, dtype=np.int64), bound=1, epsilon=epsilon,
                      parallel=parallel)


def histogram(pc: PublicContext, mask_chunks: Sequence[bytes], categories: np.ndarray, n_bins: int, *,
              epsilon: float | None, parallel: bool | None = None) -> list[bytes]:
    """One encrypted (noised) count per category 0..n_bins-1 among the selected rows (see ``masked_sums``)."""
    categories = np.asarray(categories)
    if categories.ndim != 1 or categories.dtype.kind not in "iu":
        raise Unprocessable("Categories must be integer codes.", code="invalid_values")
    if not 1 <= n_bins <= 1024 or (len(categories) and (categories.min() < 0 or categories.max() >= n_bins)):
        raise Unprocessable("Category codes must be in [0, n_bins).", code="invalid_values")
    indicators = [(categories == b).astype(np.int64) for b in range(n_bins)]
    return masked_sums(pc, mask_chunks, indicators, [1] * n_bins, epsilon=epsilon, parallel=parallel)


def check_weights(pc: PublicContext, enc_weights: bytes) -> None:
    """A weights ciphertext is well formed (checked before any data is read)."""
    _load_ct(pc, enc_weights, "weights ciphertext")


def linear_score(pc: PublicContext, enc_weights: bytes, noised_features: Sequence[int]) -> bytes:
    """Encrypted w·x̃ for the consumer's private weights w and an ALREADY NOISED feature-sum vector x̃
    (``mechanisms.release_group_sums``). Whatever the weights ciphertext holds (even a crafted one whose
    noise term carries x̃ back), the consumer learns a post-processing of an ε-DP release."""
    x = [int(v) for v in noised_features]
    if not 1 <= len(x) <= pc.slots:
        raise Unprocessable(f"Features must be a vector of 1..{pc.slots} values.", code="invalid_values")
    ct = _load_ct(pc, enc_weights, "weights ciphertext")
    plain = x + [0] * (pc.slots - len(x))
    if pc.scheme == "ckks":
        plain = [float(v) for v in plain]
    try:
        acc = ct * plain
    except Exception:  # noqa: BLE001
        raise BadRequest("The weights do not match the encryption parameters.", code="ciphertext_mismatch") from None
    return _blind_and_noise(pc, acc, epsilon=None, sensitivity=1, magnitude=float(max(abs(v) for v in x) or 1))


def check_encodable(pc: PublicContext, rows: int, bound: int, epsilon: float) -> None:
    """Data-independent: can a noised sum of ``rows`` values in ±bound (fixed point) be encrypted without
    wrapping (BFV) or overflowing the encoder (CKKS)? Decided from public facts only, before data is read,
    so this refusal tells nothing about the data (the noise margin is e^-100-tail Laplace at this epsilon)."""
    margin = 200 * 2 * bound / epsilon + 10 ** 6
    limit = pc.params.plain_modulus // 2 if pc.scheme == "bfv" else 2.0 ** 100
    if bound * max(rows, 1) + margin >= limit:
        raise Unprocessable("The sum could overflow these encryption parameters; lower the bound or scale.",
                            code="sum_may_overflow")


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
           "linear_score", "encrypt_result", "check_weights", "check_encodable", "encrypt_statistics",
           "secure_aggregate", "check_ciphertext", "provider_statistics", "ALLOWED"]


def provider_statistics(values: np.ndarray, *, scheme: str, bound: float, scale: int, epsilon: float,
                        measure: str = "pure") -> np.ndarray:
    """What a provider's connector encrypts for a round: [noised Σ clip(v), noised count], integers in
    fixed point 10^scale whatever the scheme (``mechanisms.contribution_statistics``). Pure; runs on the
    provider's machine. ``scheme`` is accepted for the callers' symmetry: the noise never depends on it."""
    return mechanisms.contribution_statistics(values, bound=bound, scale=scale, cost=epsilon, measure=measure)
