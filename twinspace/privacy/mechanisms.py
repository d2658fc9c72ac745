"""Differential-privacy mechanisms built from OpenDP, under a written-down neighbouring relation.

Neighbouring relation: **substitution** (OpenDP ``change_one_distance``). The row count of an asset is
public in the catalog, so two datasets are neighbours when they have the same number of rows and
differ in the values of exactly one row. Every sensitivity below is derived from that relation:

- a clamped sum of n values in [-B, B]: one row moves from -B to +B, so Δ₁ = 2B (OpenDP derives it
  from ``make_metric_unbounded >> make_clamp >> make_sum``; ``sum_sensitivity`` returns its map(1));
- a predicate count (a 0/1 indicator per row): Δ₁ = 1;
- per-group sums of F features, each clamped to [-B, B]: the row may leave one group and join
  another, so Δ₁ = 2·B·F over the whole vector of groups × features; per-group counts: Δ₁ = 2.

Mechanisms: the discrete Laplace (pure ε-DP, ``MaxDivergence``) or the discrete Gaussian (ρ-zCDP,
``ZeroConcentratedDivergence``) from OpenDP, on integers only. Real values (CKKS paths) are encoded
to fixed point (× 10^scale, rounded) first and the noised integer is what gets encrypted, so there is
no floating-point mechanism anywhere (Mironov 2012). OpenDP samples from its own cryptographically
secure generator; the visible blinding values of the HE protocol come from ``blinding_rng`` (the
operating system's CSPRNG through ``secrets``), never from the noise generator.

Pure code: no I/O, no database, no HTTP; the broker and the provider's connector both call it. The terms checked
before any mechanism runs (measures, epsilon range, the refusal) are in ``dp_terms.py``, re-exported
here, so the broker's request models and query authorisation need neither numpy nor OpenDP.
"""

from __future__ import annotations

import math
import secrets
from functools import lru_cache
from typing import Sequence

import numpy as np
import opendp.prelude as odp

from twinspace.errors import BadRequest
from twinspace.privacy.dp_terms import (MAX_EPSILON_PER_QUERY, MEASURES, MIN_EPSILON_PER_QUERY,  # noqa: F401
                                        NEIGHBOURING, REFUSED, QueryRefused, check_epsilon, check_measure)

odp.enable_features("contrib")

THRESHOLD_SHARE = 0.25               # of a query's ε spent on the noisy cohort count (when one is needed)


def blinding_rng() -> secrets.SystemRandom:
    """The generator for visible HE blinding values: the OS CSPRNG, separate from OpenDP's sampler."""
    return secrets.SystemRandom()


def to_fixed_point(values: np.ndarray, scale: int) -> np.ndarray:
    """Real values → integers (× 10^scale, rounded; non-finite → 0, contributing nothing)."""
    v = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    return np.rint(v * 10 ** int(scale)).astype(np.int64)


def fixed_bound(bound: float, scale: int) -> int:
    """The clamping bound in the same fixed point (rounded up, at least 1)."""
    return max(1, int(math.ceil(float(bound) * 10 ** int(scale))))


# ------------------------------------------------------------------------------------ OpenDP chains
@lru_cache(maxsize=256)
def _sum_transformation(n: int, low: int, high: int):
    """Sized vector of n integers under substitution → clamp to [low, high] → sum (OpenDP)."""
    domain = odp.vector_domain(odp.atom_domain(T="i64"), size=n)
    return (odp.t.make_metric_unbounded(domain, odp.change_one_distance())
            >> odp.t.then_clamp(bounds=(low, high)) >> odp.t.then_sum())


def sum_sensitivity(n: int, low: int, high: int) -> int:
    """Δ₁ of the clamped sum under substitution, as OpenDP derives it (high − low)."""
    return int(_sum_transformation(int(n), int(low), int(high)).map(1))


def _scale(sensitivity: float, cost: float, measure: str) -> float:
    """Noise scale for a privacy cost (ε for pure DP, ρ for zCDP) at a given sensitivity."""
    if measure == "pure":
        return float(sensitivity) / cost              # discrete Laplace: ε = Δ₁ / b
    return float(sensitivity) / math.sqrt(2 * cost)   # discrete Gaussian: ρ = Δ₂² / (2σ²)


@lru_cache(maxsize=256)
def _sum_measurement(n: int, low: int, high: int, cost: float, measure: str):
    t = _sum_transformation(n, low, high)
    noise = odp.m.then_laplace if measure == "pure" else odp.m.then_gaussian
    m = t >> noise(scale=_scale(t.map(1), cost, measure))
    if m.map(1) > cost * (1 + 1e-9):  # OpenDP's own privacy map must agree with the calibration
        raise BadRequest("The mechanism could not be calibrated.", code="invalid_epsilon")
    return m


def noisy_sum(values: np.ndarray, low: int, high: int, cost: float, measure: str = "pure") -> int:
    """OpenDP measurement: clamp each of the n integers to [low, high], sum, add discrete noise."""
    values = np.asarray(values, dtype=np.int64)
    m = _sum_measurement(len(values), int(low), int(high), float(cost), check_measure(measure))
    return int(m(values.tolist()))


@lru_cache(maxsize=256)
def _vector_measurement(size: int, l1: int, cost: float, measure: str):
    domain = odp.vector_domain(odp.atom_domain(T="i64"), size=size)
    if measure == "pure":
        m = odp.m.make_laplace(domain, odp.l1_distance(T="i64"), scale=_scale(l1, cost, "pure"))
    else:  # Δ₂ ≤ Δ₁ for integer vectors: calibrating on Δ₁ is conservative
        m = odp.m.make_gaussian(domain, odp.l2_distance(T="i64"), scale=_scale(l1, cost, "zcdp"))
    if m.map(l1) > cost * (1 + 1e-9):
        raise BadRequest("The mechanism could not be calibrated.", code="invalid_epsilon")
    return m


def noisy_vector(values: Sequence[int], l1_sensitivity: int, cost: float, measure: str = "pure") -> np.ndarray:
    """OpenDP discrete noise on an integer vector whose L1 sensitivity (under substitution) is given."""
    values = [int(v) for v in values]
    m = _vector_measurement(len(values), int(l1_sensitivity), float(cost), check_measure(measure))
    return np.array(m(values), dtype=object)


def noise_scale(sensitivity: float, cost: float, measure: str = "pure") -> float:
    """The scale (b or σ) a query of this sensitivity and cost is noised with (shown to consumers)."""
    return _scale(sensitivity, cost, check_measure(measure))


def split(cost: float, needs_threshold: bool) -> tuple[float, float]:
    """(cost of the noisy cohort count, cost of the value): sequential composition, they add up."""
    if not needs_threshold:
        return 0.0, cost
    return cost * THRESHOLD_SHARE, cost * (1 - THRESHOLD_SHARE)


def cohort_released(selected: np.ndarray, k: int, cost: float, measure: str = "pure") -> bool:
    """The k-threshold decided on a *noisy* count (so the decision itself is DP, and not an oracle)."""
    if k < 1:
        raise BadRequest("k must be at least 1.", code="invalid_k")
    indicator = np.asarray(selected, dtype=bool).astype(np.int64)
    return noisy_sum(indicator, 0, 1, cost, measure) >= k


def compose(costs: Sequence[float], measure: str = "pure") -> float:
    """Total privacy loss of several releases: ε add up under pure DP, ρ add up under zCDP (basic
    sequential composition — what OpenDP's privacy filter does; checked against it in the tests)."""
    check_measure(measure)
    return float(math.fsum(costs))


def zcdp_to_approx_dp(rho: float, delta: float) -> float:
    """ε of (ε, δ)-DP implied by ρ-zCDP (Bun & Steinke 2016, prop. 1.3), for showing consumers."""
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))


# ------------------------------------------------------------------------------------ releases
def release_predicate(values: np.ndarray, selected: np.ndarray, *, kind: str, bound: int, k: int,
                      cost: float, measure: str = "pure") -> int:
    """A noised sum or count over the rows a plaintext predicate selects, or ``QueryRefused``.

    ``values``: one integer (fixed point) per row, clamped here to [-bound, bound]. The cohort rule is
    decided on a noisy count; for a count the released noisy count is itself thresholded (no extra
    cost), for a sum the count takes ``THRESHOLD_SHARE`` of the cost. Unselected rows contribute 0,
    so the released sum is the OpenDP clamped-sum measurement over all n rows (Δ₁ = 2·bound)."""
    selected = np.asarray(selected, dtype=bool)
    if kind == "count":
        noisy = noisy_sum(selected.astype(np.int64), 0, 1, cost, measure)
        if noisy < k:
            raise QueryRefused("noisy_cohort_below_k")
        return noisy
    if kind != "sum":
        raise BadRequest("kind must be 'sum' or 'count'.", code="invalid_query")
    c_threshold, c_value = split(cost, True)
    if not cohort_released(selected, k, c_threshold, measure):
        raise QueryRefused("noisy_cohort_below_k")
    x = np.where(selected, np.clip(np.asarray(values, dtype=np.int64), -bound, bound), 0)
    return noisy_sum(x, -bound, bound, c_value, measure)


def release_group_sums(features: np.ndarray, groups: np.ndarray | None, n_groups: int, *, bound: int, k: int,
                       cost: float, measure: str = "pure") -> dict[int, np.ndarray]:
    """Noised per-group sums of F clamped features: {group index: F noised integers}.

    ``groups``: the group index of every row (``n_groups`` = "not a listed group", never released);
    None means one group of every row (n is public: no threshold, the whole cost on the sums).
    Under substitution the row may change group: Δ₁ = 2·bound·F for the sums, 2 for the counts."""
    x = np.clip(np.asarray(features, dtype=np.int64), -bound, bound)
    if x.ndim != 2:
        raise BadRequest("Features must be a rows × features matrix.", code="invalid_values")
    n, f = x.shape
    if groups is None:
        sums = noisy_vector(x.sum(axis=0).tolist(), 2 * bound * f, cost, measure)
        return {0: sums}
    groups = np.asarray(groups, dtype=np.int64)
    c_threshold, c_value = split(cost, True)
    counts = np.bincount(groups, minlength=n_groups + 1)[:n_groups]
    noisy_counts = noisy_vector(counts.tolist(), 2, c_threshold, measure)
    sums = np.zeros((n_groups, f), dtype=np.int64)
    inside = groups < n_groups
    np.add.at(sums, groups[inside], x[inside])
    noisy = noisy_vector(sums.reshape(-1).tolist(), 2 * bound * f, c_value, measure).reshape(n_groups, f)
    released = {g: noisy[g] for g in range(n_groups) if noisy_counts[g] >= k}
    if not released:
        raise QueryRefused("every_noisy_group_count_below_k")
    return released


def contribution_statistics(values: np.ndarray, *, bound: float, scale: int, cost: float,
                            measure: str = "pure") -> np.ndarray:
    """A provider's secure-aggregation contribution: [noised Σ clamp(v) in fixed point 10^scale, noised
    count of the rows with a finite value]. The cost is split evenly over the two (sequential
    composition); both are integers, whatever the scheme they are then encrypted with."""
    raw = np.asarray(values, dtype=float)
    valid = np.isfinite(raw)
    b = fixed_bound(bound, scale)
    return np.array([noisy_sum(to_fixed_point(raw, scale), -b, b, cost / 2, measure),
                     noisy_sum(valid.astype(np.int64), 0, 1, cost / 2, measure)], dtype=object)
