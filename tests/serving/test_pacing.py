"""The pacing price: bounded, rises when spend runs ahead, does not depend on the request rate, spreads a budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offerlift.features.errors import ConfigError
from offerlift.serving.pacing import PacingConfig, PacingState, spend_error, update_price
from offerlift.serving.policy import PolicyConfig, decide

CONFIG = PacingConfig(kp=20.0, ki=10.0, horizon_hours=1.0, max_price=10.0)
shares = st.floats(0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(st.floats(-20, 20), st.floats(0, 20), shares, shares, st.floats(0, 1e5), st.floats(0, 1e5))
def test_price_and_integral_stay_within_bounds(integral, price, committed, elapsed, t0, dt):
    state = PacingState(integral=integral, price=price, ts=t0)
    new = update_price(state, committed * 100.0, 100.0, elapsed, t0 + dt, CONFIG)
    assert 0.0 <= new.integral <= CONFIG.max_price
    assert 0.0 <= new.price <= CONFIG.max_price
    assert new.ts == t0 + dt


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 10), shares, shares, shares, st.floats(0, 7200))
def test_more_spend_never_lowers_the_price(integral, a, b, elapsed, dt):
    state = PacingState(integral=integral, ts=0.0)
    low, high = sorted((a, b))
    p_low = update_price(state, low * 50.0, 50.0, elapsed, dt, CONFIG).price
    p_high = update_price(state, high * 50.0, 50.0, elapsed, dt, CONFIG).price
    assert p_high >= p_low


@settings(max_examples=100, deadline=None)
@given(st.floats(-0.5, 0.5), st.integers(1, 50), st.floats(1.0, 3000.0))
def test_integral_depends_on_elapsed_time_not_on_the_number_of_updates(error, splits, seconds):
    """k updates over an interval with the same spend move the integral as much as one update (no rate effect)."""
    elapsed = 0.5
    committed = (elapsed + error) * 100.0
    one = update_price(PacingState(integral=5.0, ts=0.0), committed, 100.0, elapsed, seconds, CONFIG)
    many = PacingState(integral=5.0, ts=0.0)
    for i in range(1, splits + 1):
        many = update_price(many, committed, 100.0, elapsed, seconds * i / splits, CONFIG)
    if 0.0 < one.integral < CONFIG.max_price and 0.0 < many.integral < CONFIG.max_price:
        assert many.integral == pytest.approx(one.integral, abs=1e-9)
        assert many.price == pytest.approx(one.price, abs=1e-9)


def test_on_schedule_the_price_stays_put_and_behind_schedule_it_falls_to_zero():
    on = update_price(PacingState(integral=2.0, ts=0.0), 50.0, 100.0, 0.5, 3600.0, CONFIG)
    assert on.integral == pytest.approx(2.0) and on.price == pytest.approx(2.0)
    state = PacingState(integral=2.0, ts=0.0)
    for hour in range(1, 6):
        state = update_price(state, 10.0, 100.0, 0.5, hour * 3600.0, CONFIG)
    assert state.price == 0.0 and state.integral == 0.0


def test_spend_error_and_config_validation():
    assert spend_error(30.0, 100.0, 0.5) == pytest.approx(-0.2)
    assert spend_error(0.0, 0.0, 0.25) == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="horizon_hours"):
        PacingConfig(horizon_hours=0.0)
    with pytest.raises(ConfigError, match="max_price"):
        PacingConfig(max_price=-1.0)


def run_campaign(paced: bool, seed: int = 0, hours: float = 24.0, n: int = 2400, budget: float = 300.0):
    """Customers arrive uniformly over the period; the policy is greedy under the pacing price and the budget.

    Returns (share of the budget spent at each arrival, total incremental profit, final spend).
    """
    rng = np.random.default_rng(seed)
    k = 4
    cost = np.tile([0.0, 1.0, 2.0, 4.0], (n, 1))
    incr = np.column_stack([np.zeros(n), rng.gamma(2.0, 0.6, (n, k - 1)) * cost[:, 1:] ** 0.6])
    config = PolicyConfig(holdout=0.0, explore=0.0)
    state, spent, value = PacingState(), 0.0, 0.0
    share = np.empty(n)
    for i in range(n):
        t = hours * 3600.0 * i / n
        price = 0.0
        if paced:
            state = update_price(state, spent, budget, i / n, t, CONFIG)
            price = state.price
        allowed = (cost[i] <= budget - spent)[None, :]
        d = decide(incr[i : i + 1], cost[i : i + 1], allowed, np.ones(1), np.ones((1, 2)), config, price)
        spent += float(d.cost[0])
        value += float(d.incr[0])
        share[i] = spent / budget
    return share, value, spent


def test_pacing_spreads_the_budget_over_the_period_and_buys_more_uplift():
    share_greedy, value_greedy, spent_greedy = run_campaign(paced=False)
    share_paced, value_paced, spent_paced = run_campaign(paced=True)
    n = len(share_paced)
    assert spent_greedy <= 300.0 and spent_paced <= 300.0
    assert share_greedy[n // 5] > 0.99  # without pacing the budget is gone after a fifth of the period
    for q in (0.25, 0.5, 0.75):  # with pacing the spend tracks the time-proportional target
        assert abs(share_paced[int(q * n)] - q) < 0.1
    assert share_paced[-1] > 0.9
    assert value_paced > 1.2 * value_greedy  # the price keeps the cost-efficient arms for everyone
