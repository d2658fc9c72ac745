"""Laplace mechanisms have the right scale; the budget is enforced and refusals cost nothing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from twinspace.errors import BadRequest, Forbidden, TooManyRequests
from twinspace.privacy import dp, he


@pytest.mark.parametrize("sensitivity,epsilon", [(1.0, 0.5), (100.0, 2.0)])
def test_laplace_scale_statistically(sensitivity, epsilon):
    rng = np.random.default_rng(11)
    x = dp.laplace_noise(sensitivity, epsilon, size=20_000, rng=rng)
    b = sensitivity / epsilon
    # for Laplace(0, b): E|X| = b and Var = 2b²
    assert abs(np.mean(np.abs(x)) - b) / b < 0.03
    assert abs(np.mean(x)) < 0.05 * b
    assert abs(np.var(x) - 2 * b * b) / (2 * b * b) < 0.1


@pytest.mark.parametrize("sensitivity,epsilon", [(1.0, 0.2), (10.0, 1.0), (1.0, 1.0)])
def test_discrete_laplace_scale_statistically(sensitivity, epsilon):
    rng = np.random.default_rng(12)
    x = dp.discrete_laplace_noise(sensitivity, epsilon, size=20_000, rng=rng)
    assert x.dtype == np.int64
    expected = dp.discrete_laplace_std_mad(sensitivity, epsilon)  # 2a/(1-a²), a = e^(-ε/Δ)
    assert abs(np.mean(np.abs(x)) - expected) / expected < 0.03
    if sensitivity / epsilon >= 5:  # close to the continuous scale when b is not tiny
        assert abs(np.mean(np.abs(x)) - sensitivity / epsilon) / (sensitivity / epsilon) < 0.03
    # symmetric, and P(0)/P(1) = e^(ε/Δ)
    assert abs(np.mean(x)) < 0.05 * expected + 0.02
    p0, p1 = np.mean(x == 0), np.mean(x == 1)
    assert abs(np.log(p0 / p1) - epsilon / sensitivity) < 0.1


def test_single_draw_types():
    assert isinstance(dp.discrete_laplace_noise(1, 1), int)
    assert isinstance(dp.laplace_noise(1, 1), float)


@pytest.mark.parametrize("eps", [0, -1, float("nan"), float("inf"), 11])
def test_invalid_epsilon(eps):
    with pytest.raises(BadRequest) as err:
        dp.laplace_noise(1, eps)
    assert err.value.code == "invalid_epsilon"


def test_budget_reserve_commit_release():
    b = dp.PrivacyBudget(1.0)
    r = b.reserve(0.4)
    assert b.remaining == pytest.approx(0.6)
    b.commit(r)
    r = b.reserve(0.5)
    b.release(r)  # refused query: nothing spent
    assert b.remaining == pytest.approx(0.6) and b.queries == 1
    with pytest.raises(TooManyRequests) as err:
        b.reserve(0.7)
    assert err.value.code == "privacy_budget_exhausted"
    assert b.remaining == pytest.approx(0.6)
    with pytest.raises(BadRequest) as err:
        b.commit(r)  # already settled
    assert err.value.code == "invalid_reservation"


def test_budget_admits_exactly_ten_tenths():
    b = dp.PrivacyBudget(1.0)
    for _ in range(10):
        b.commit(b.reserve(0.1))
    with pytest.raises(TooManyRequests):
        b.reserve(0.1)


def test_budget_never_overspends_under_concurrency():
    b = dp.PrivacyBudget(1.0)
    ok, refused = [], []
    start = threading.Barrier(16)

    def worker():
        start.wait()
        try:
            r = b.reserve(0.25)
        except TooManyRequests:
            refused.append(1)
            return
        ok.append(1)
        b.commit(r)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(ok) == 4 and len(refused) == 12
    assert b.epsilon_spent == pytest.approx(1.0) and b.epsilon_reserved == pytest.approx(0.0)


def test_refused_query_is_not_debited(pcs):
    """A predicate below k is refused by the provider and the reservation is released."""
    b = dp.PrivacyBudget(1.0)
    values = np.arange(50)
    small = np.zeros(50, dtype=bool)
    small[:3] = True
    with pytest.raises(Forbidden) as err:
        b.run(0.5, he.predicate_aggregate, pcs["bfv"], values, small, k=5, epsilon=0.5, bound=100)
    assert err.value.code == "cohort_too_small"
    assert b.remaining == pytest.approx(1.0) and b.queries == 0
    b.run(0.5, he.predicate_aggregate, pcs["bfv"], values, ~small, k=5, epsilon=0.5, bound=100)
    assert b.remaining == pytest.approx(0.5) and b.queries == 1


def test_k_threshold_rule():
    dp.enforce_k_threshold(5, 5)
    with pytest.raises(Forbidden) as err:
        dp.enforce_k_threshold(4, 5)
    assert err.value.code == "cohort_too_small"
    with pytest.raises(BadRequest):
        dp.enforce_k_threshold(4, 0)
