"""Budget allocation: exact envelope walk, near-optimal value, never over budget, streamed = in memory."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, milp

from offerlift.features.errors import ConfigError, PolicyError
from offerlift.serving.budget import (
    REL_GAP,
    Breakpoints,
    PriceSolver,
    SpillStore,
    allocate,
    chunk_breakpoints,
    plot_spend_curve,
    spend_curve,
)
from offerlift.serving.policy import PolicyConfig, decide

NO_RANDOM = PolicyConfig(holdout=0.0, explore=0.0)


def random_case(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    incr = rng.normal(0.5, 1.0, (n, k))
    incr[:, 0] = 0.0
    cost = rng.uniform(0.1, 3.0, (n, k))
    cost[:, 0] = 0.0
    allowed = rng.random((n, k)) < 0.8
    allowed[:, 0] = True
    return incr, cost, allowed


def greedy_spend(incr: np.ndarray, cost: np.ndarray, allowed: np.ndarray, policy: PolicyConfig = NO_RANDOM) -> float:
    n = incr.shape[0]
    return float(decide(incr, cost, allowed, np.ones(n), np.ones((n, 2)), policy).cost.sum())


def milp_optimum(incr: np.ndarray, cost: np.ndarray, allowed: np.ndarray, budget: float) -> float:
    """The exact multiple-choice knapsack optimum (one arm per customer, total cost <= budget)."""
    n, k = incr.shape
    one_each = np.kron(np.eye(n), np.ones(k))
    res = milp(
        -(incr * allowed).ravel(),
        constraints=[LinearConstraint(one_each, 1, 1), LinearConstraint(cost.ravel()[None, :], -np.inf, budget)],
        integrality=np.ones(n * k),
        bounds=Bounds(0, allowed.ravel().astype(float)),
    )
    assert res.success
    return -float(res.fun)


def test_allocation_is_within_one_percent_of_the_exact_optimum_and_never_over_budget():
    rng = np.random.default_rng(1)
    for _ in range(8):
        n, k = int(rng.integers(300, 400)), int(rng.integers(2, 7))
        incr, cost, allowed = random_case(rng, n, k)
        budget = rng.uniform(0.2, 0.9) * greedy_spend(incr, cost, allowed)
        alloc, arm = allocate(incr, cost, allowed, budget)
        rows = np.arange(n)
        spend, value = cost[rows, arm].sum(), incr[rows, arm].sum()
        assert spend <= budget
        assert spend == pytest.approx(alloc.spend, abs=1e-6)
        assert value == pytest.approx(alloc.value, abs=1e-6)
        assert value >= 0.99 * milp_optimum(incr, cost, allowed, budget)


def test_allocation_matches_brute_force_on_a_tiny_case_within_one_customer():
    rng = np.random.default_rng(7)
    incr, cost, allowed = random_case(rng, 6, 3)
    budget = 0.5 * greedy_spend(incr, cost, allowed)
    best = 0.0
    for choice in itertools.product(range(3), repeat=6):
        c = np.array(choice)
        if allowed[np.arange(6), c].all() and cost[np.arange(6), c].sum() <= budget:
            best = max(best, incr[np.arange(6), c].sum())
    alloc, arm = allocate(incr, cost, allowed, budget)
    assert cost[np.arange(6), arm].sum() <= budget
    assert best - alloc.value <= np.max(incr) + 1e-9  # the Lagrangian gap is at most one customer's step
    assert alloc.value <= best + 1e-9


def test_breakpoints_give_the_spend_and_value_of_decide_at_every_price():
    rng = np.random.default_rng(3)
    incr, cost, allowed = random_case(rng, 200, 6)
    policy = PolicyConfig(holdout=0.1, explore=0.2, fallback_arm=2)
    hu, u = rng.random(200), rng.random((200, 2))
    bp, base = chunk_breakpoints(incr, cost, allowed, hu, u, policy)
    lams = np.unique(bp.lam)
    for price in np.concatenate([[0.0], (lams[1:] + lams[:-1]) / 2, [lams.max() * 2]]):
        d = decide(incr, cost, allowed, hu, u, policy, price)
        fired = bp.lam < price
        assert d.cost.sum() == pytest.approx(base.cost + bp.d_cost[fired].sum(), abs=1e-9)
        assert d.incr.sum() == pytest.approx(base.value + bp.d_value[fired].sum(), abs=1e-9)


def test_breakpoints_of_one_customer_are_merged_when_closer_than_the_gap():
    incr = np.array([[0.0, 2.0, 2.0 - 1e-13, 1.0]])
    cost = np.array([[0.0, 2.0, 1.0, 0.5]])
    bp, _ = chunk_breakpoints(incr, cost, np.ones((1, 4), bool), np.ones(1), np.ones((1, 2)), NO_RANDOM)
    assert np.all(np.diff(bp.lam) > bp.lam[:-1] * REL_GAP)


def test_streamed_solver_equals_the_in_memory_solver():
    rng = np.random.default_rng(5)
    incr, cost, allowed = random_case(rng, 900, 5)
    policy = PolicyConfig(holdout=0.1, explore=0.1)
    hu, u = rng.random(900), rng.random((900, 2))
    budget = 0.4 * greedy_spend(incr, cost, allowed, policy)
    whole_bp, whole_base = chunk_breakpoints(incr, cost, allowed, hu, u, policy)
    whole = PriceSolver(whole_base, whole_bp.histogram, whole_bp.window).solve(budget)
    with SpillStore() as store:
        for s in range(0, 900, 250):
            part = slice(s, s + 250)
            store.add(*chunk_breakpoints(incr[part], cost[part], allowed[part], hu[part], u[part], policy, s))
        streamed = store.solver().solve(budget)
        narrow = store.solver(max_window=50).solve(budget)  # small windows: histogram refinement, shorter fill
        directory = store.directory
    assert not directory.exists()
    assert streamed.price == pytest.approx(whole.price, rel=1e-12)
    assert streamed.spend == pytest.approx(whole.spend, abs=1e-6)
    assert np.array_equal(streamed.rows, whole.rows)
    assert narrow.price == pytest.approx(whole.price, rel=1e-12)
    assert narrow.lagrangian_value == pytest.approx(whole.lagrangian_value, abs=1e-6)
    assert narrow.lagrangian_spend <= narrow.spend <= budget


def test_budget_above_the_unconstrained_spend_gives_price_zero():
    rng = np.random.default_rng(2)
    incr, cost, allowed = random_case(rng, 50, 4)
    alloc, arm = allocate(incr, cost, allowed, 1e9)
    assert alloc.price == 0.0
    assert np.array_equal(arm, decide(incr, cost, allowed, np.ones(50), np.ones((50, 2)), NO_RANDOM).arm)


def test_budget_below_the_unavoidable_spend_is_an_error_naming_it():
    rng = np.random.default_rng(2)
    incr, cost, allowed = random_case(rng, 100, 4)
    policy = PolicyConfig(holdout=0.0, explore=0.5)
    with pytest.raises(PolicyError, match="no price can avoid"):
        allocate(incr, cost, allowed, 0.01, policy, rng.random(100), rng.random((100, 2)))
    with pytest.raises(ConfigError, match="budget"):
        allocate(incr, cost, allowed, -1.0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 40),
    k=st.integers(2, 5),
    share=st.floats(0.0, 1.2),
)
def test_allocation_never_spends_more_than_the_budget(seed: int, n: int, k: int, share: float):
    rng = np.random.default_rng(seed)
    incr, cost, allowed = random_case(rng, n, k)
    incr = np.round(incr, 1)  # ties between arms and customers
    budget = share * greedy_spend(incr, cost, allowed)
    alloc, arm = allocate(incr, cost, allowed, budget)
    assert cost[np.arange(n), arm].sum() <= budget + 1e-12
    assert cost[np.arange(n), arm].sum() == pytest.approx(alloc.spend, abs=1e-9)


def test_spend_curve_rises_with_spend_and_plots():
    rng = np.random.default_rng(4)
    incr, cost, allowed = random_case(rng, 300, 5)
    bp, base = chunk_breakpoints(incr, cost, allowed, np.ones(300), np.ones((300, 2)), NO_RANDOM)
    curve = spend_curve(base, bp.histogram)
    assert curve["spend"].iloc[0] == pytest.approx(base.cost)
    assert curve["spend"].is_monotonic_decreasing
    assert curve["incremental_profit"].is_monotonic_decreasing
    alloc = PriceSolver(base, bp.histogram, bp.window).solve(base.cost / 2)
    fig = plot_spend_curve(curve, alloc)
    assert fig.axes[0].get_xlabel() == "expected spend"


def test_breakpoints_concat_and_window_select_by_price():
    a = Breakpoints(np.array([0, 1]), np.array([0.5, 2.0]), np.array([-1.0, -2.0]), np.array([-0.1, -0.2]))
    both = Breakpoints.concat([a, Breakpoints.empty()])
    assert len(both) == 2
    assert both.window(0.5, 2.0).row.tolist() == [0]
    count, dc, _ = both.histogram(np.array([0.0, 1.0, np.inf]))
    assert count.tolist() == [1, 1] and dc.tolist() == [-1.0, -2.0]
