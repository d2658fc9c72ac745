"""Differential privacy: Laplace mechanisms, an in-memory budget ledger, the k-threshold rule.

Pure code (no I/O). ``broker/privacy/ledger.py`` is the database-backed ledger shared by
replicas; ``PrivacyBudget`` here is the same reserve/commit/release logic for a single process
(provider-side connectors, tests, the demo) and uses the same error codes.
"""

from __future__ import annotations

import math
import secrets
import threading
from dataclasses import dataclass, field

import numpy as np

from twinspace.errors import BadRequest, Forbidden, TooManyRequests

_EPS = 1e-12  # float slack: a budget of 1.0 admits ten queries of 0.1
MAX_EPSILON_PER_QUERY = 10.0


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    # Fresh OS entropy per call unless a generator is injected (tests).
    return rng if rng is not None else np.random.default_rng(secrets.randbits(128))


def check_epsilon(epsilon: float) -> float:
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and 0 < epsilon <= MAX_EPSILON_PER_QUERY):
        raise BadRequest(f"epsilon per query must be in (0, {MAX_EPSILON_PER_QUERY:g}].", code="invalid_epsilon")
    return float(epsilon)


def laplace_scale(sensitivity: float, epsilon: float) -> float:
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise BadRequest("sensitivity must be a positive number.", code="invalid_sensitivity")
    return float(sensitivity) / check_epsilon(epsilon)


def laplace_noise(sensitivity: float, epsilon: float, size: int | None = None,
                  rng: np.random.Generator | None = None) -> float | np.ndarray:
    """Continuous Laplace noise with scale b = sensitivity / epsilon (for CKKS results)."""
    return _rng(rng).laplace(0.0, laplace_scale(sensitivity, epsilon), size)


def discrete_laplace_noise(sensitivity: float, epsilon: float, size: int | None = None,
                           rng: np.random.Generator | None = None) -> int | np.ndarray:
    """Integer-valued (discrete) Laplace noise, P(k) ∝ exp(-|k|/b), b = sensitivity/epsilon.

    Sampled as the difference of two geometric variables with p = 1 - exp(-1/b) (for integer
    counts/sums under BFV). epsilon-DP for integer queries with the given L1 sensitivity.
    """
    b = laplace_scale(sensitivity, epsilon)
    p = -math.expm1(-1.0 / b)
    g = _rng(rng)
    out = g.geometric(p, size) - g.geometric(p, size)
    return int(out) if size is None else out.astype(np.int64)


def discrete_laplace_std_mad(sensitivity: float, epsilon: float) -> float:
    """Expected |X| of the discrete Laplace: 2a/(1-a^2) with a = exp(-1/b) (→ b for large b)."""
    a = math.exp(-1.0 / laplace_scale(sensitivity, epsilon))
    return 2 * a / (1 - a * a)


def enforce_k_threshold(selected_rows: int, k: int) -> None:
    """Provider-side rule for plaintext predicates: refuse cohorts smaller than k (k ≥ 1)."""
    if k < 1:
        raise BadRequest("k must be at least 1.", code="invalid_k")
    if selected_rows < k:
        raise Forbidden("The query selects too few rows to be released.", code="cohort_too_small")


@dataclass(frozen=True)
class Reservation:
    key: str
    epsilon: float
    token: int = field(default_factory=lambda: secrets.randbits(64))


class PrivacyBudget:
    """Thread-safe epsilon ledger: reserve before running a query, commit on success, release on
    refusal/failure — a refused query costs nothing and concurrent queries never overspend."""

    def __init__(self, epsilon_total: float):
        if not (math.isfinite(epsilon_total) and epsilon_total > 0):
            raise BadRequest("The total privacy budget must be positive.", code="invalid_epsilon")
        self.epsilon_total = float(epsilon_total)
        self.epsilon_spent = 0.0
        self.epsilon_reserved = 0.0
        self.queries = 0
        self._open: dict[int, Reservation] = {}
        self._lock = threading.Lock()

    @property
    def remaining(self) -> float:
        with self._lock:
            return self.epsilon_total - self.epsilon_spent - self.epsilon_reserved

    def reserve(self, epsilon: float, key: str = "") -> Reservation:
        epsilon = check_epsilon(epsilon)
        with self._lock:
            if self.epsilon_spent + self.epsilon_reserved + epsilon > self.epsilon_total + _EPS:
                raise TooManyRequests("The agreement's privacy budget is exhausted; no query was run.",
                                      code="privacy_budget_exhausted")
            self.epsilon_reserved += epsilon
            r = Reservation(key, epsilon)
            self._open[r.token] = r
            return r

    def _close(self, r: Reservation) -> None:
        if self._open.pop(r.token, None) is None:
            raise BadRequest("Unknown or already settled reservation.", code="invalid_reservation")
        self.epsilon_reserved -= r.epsilon

    def commit(self, r: Reservation) -> None:
        with self._lock:
            self._close(r)
            self.epsilon_spent += r.epsilon
            self.queries += 1

    def release(self, r: Reservation) -> None:
        with self._lock:
            self._close(r)

    def run(self, epsilon: float, fn, /, *args, **kwargs):
        """Reserve, run ``fn``, commit on success, release on any exception (then re-raise)."""
        r = self.reserve(epsilon)
        try:
            out = fn(*args, **kwargs)
        except BaseException:
            self.release(r)
            raise
        self.commit(r)
        return out
