"""The champion/challenger test: the look's estimate is unbiased and leaner than the plain difference, the
confidence sequence keeps its level over many looks, and the verdicts follow the bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from offerlift.features.errors import ConfigError, DataError
from offerlift.training.challenger_gate import (
    ChallengerTrial,
    Look,
    TrialConfig,
    look_difference,
    mixture_tau,
    onesided_boundary,
)


def mixture_by_quadrature(z: float, tau: float) -> float:
    """The half-normal mixture of exp(lambda S - lambda^2 I / 2), integrated numerically (I = 1, rho^2 = tau)."""
    rho = math.sqrt(tau)

    def f(lam):
        return math.exp(lam * z - lam * lam / 2) * 2 * stats.norm.pdf(lam / rho) / rho

    return integrate.quad(f, 0, np.inf)[0]


@pytest.mark.parametrize("tau", [0.3, 2.0, 6.7, 40.0])
def test_the_boundary_solves_the_mixture_written_as_an_integral(tau):
    z = onesided_boundary(tau, 0.05)
    assert mixture_by_quadrature(z, tau) == pytest.approx(1 / 0.05, rel=1e-6)
    # above the fixed-horizon z and below the symmetric two-sided mixture's boundary at the same level
    two_sided = math.sqrt((1 + tau) / tau * 2 * math.log(math.sqrt(1 + tau) / 0.05))
    assert stats.norm.ppf(0.95) < z < two_sided


def test_mixture_tau_is_where_the_boundary_is_narrowest():
    c = mixture_tau(0.05)
    z = onesided_boundary(c, 0.05)
    assert all(onesided_boundary(c * k, 0.05) >= z - 1e-9 for k in (0.5, 0.8, 1.25, 2.0))


def test_false_promotions_stay_below_the_level_over_many_looks():
    """Gaussian looks with a true difference of 0 (the hardest null), eight looks of unequal size, 20,000 runs:
    the share of runs whose lower bound ever exceeds 0 is at most 5% (plus Monte Carlo error)."""
    rng = np.random.default_rng(0)
    runs, looks = 20_000, 8
    units = rng.integers(5_000, 40_000, size=looks)
    var = 1.0 / units
    d = rng.normal(0.0, np.sqrt(var), size=(runs, looks))
    w = 1.0 / var
    cum_w, cum_wd = np.cumsum(w), np.cumsum(d * w, axis=1)
    diff, se = cum_wd / cum_w, 1 / np.sqrt(cum_w)
    c = mixture_tau(0.05)
    bounds = np.array([onesided_boundary(c * n / 20_000, 0.05) for n in np.cumsum(units)])
    crossed = ((diff - bounds * se) > 0).any(axis=1)
    assert crossed.mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)
    # the naive fixed-horizon bound read after every look does not hold its level
    naive = ((diff - stats.norm.ppf(0.95) * se) > 0).any(axis=1)
    assert naive.mean() > 0.1


def test_a_look_without_alike_decisions_or_covariates_is_the_plain_difference_of_means():
    rng = np.random.default_rng(1)
    n = 1000
    profit, by = rng.normal(size=n), rng.random(n) < 0.5
    arms = np.arange(n) % 3
    look = look_difference(profit, by, np.zeros(n, bool), arms, (arms + 1) % 3)
    a, b = profit[by], profit[~by]
    assert look.diff == pytest.approx(a.mean() - b.mean())
    assert look.var == pytest.approx(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert look.informative == n and look.var == pytest.approx(look.var_all)


def simulate_look(rng, n=20_000, share_alike=0.7, effect=0.2, with_covariate=True):
    """Two policies that act alike on 70% of customers (exploit, same arm) and differ on the rest, where the
    challenger's arm is better by `effect`; profit = base + effect (on challenger's differing units) + noise."""
    base = rng.normal(5, 3, size=n)  # what the customer would spend anyway (a covariate sees part of it)
    alike = rng.random(n) < share_alike
    by = rng.random(n) < 0.5
    profit = base + effect * (by & ~alike) + rng.normal(0, 4, size=n)
    arm_c = np.where(alike, 1, 2)
    arm_h = np.where(alike, 1, 3)
    cov = (base + rng.normal(0, 1, n))[:, None] if with_covariate else None
    return look_difference(profit, by, np.zeros(n, bool), arm_c, arm_h, cov), effect * (1 - share_alike)


def test_dropping_alike_decisions_and_cuped_keep_the_estimate_unbiased_and_shrink_its_variance():
    rng = np.random.default_rng(2)
    looks, truth = zip(*(simulate_look(rng) for _ in range(400)), strict=True)
    diffs = np.array([lk.diff for lk in looks])
    assert diffs.mean() == pytest.approx(truth[0], abs=4 * diffs.std() / math.sqrt(len(diffs)))
    # the reported variance is the variance over repetitions
    assert diffs.var() == pytest.approx(np.mean([lk.var for lk in looks]), rel=0.2)
    lk = looks[0]
    assert lk.var < 0.5 * lk.var_unadjusted < 0.5 * lk.var_all  # covariate and dropping both help here
    assert lk.informative == pytest.approx(0.3 * lk.units, rel=0.05)


def test_explored_decisions_are_always_compared():
    n = 100
    profit = np.arange(n, dtype=float)
    by = np.arange(n) % 2 == 0
    explored = np.arange(n) < 10
    look = look_difference(profit, by, explored, np.zeros(n, int), np.zeros(n, int))
    assert look.informative == 10
    y = profit * explored
    assert look.diff == pytest.approx(y[by].mean() - y[~by].mean())


def test_verdicts_follow_the_bounds():
    cfg = TrialConfig(level=0.95, n_star=10_000, max_looks=2)
    big = Look(diff=1.0, var=0.01, var_unadjusted=0.02, var_all=0.04, units=10_000, informative=5000,
               challenger_units=5000, champion_units=5000)  # fmt: skip
    t = ChallengerTrial("2", "1", cfg)
    assert t.add(big)["verdict"] == "promote"
    worse = ChallengerTrial("2", "1", cfg)
    assert worse.add(Look(-1.0, 0.01, 0.02, 0.04, 10_000, 5000, 5000, 5000))["verdict"] == "worse"
    unsure = ChallengerTrial("2", "1", cfg)
    e = unsure.add(Look(0.05, 0.01, 0.02, 0.04, 10_000, 5000, 5000, 5000))
    assert e["verdict"] == "continue" and e["ci"][0] < 0 < e["ci"][1]
    assert e["boundary_z"] > e["fixed_horizon_z"] and e["variance_kept"] == pytest.approx(0.25)
    assert unsure.add(Look(0.05, 0.01, 0.02, 0.04, 10_000, 5000, 5000, 5000))["verdict"] == "retire"


def test_bad_input_is_refused():
    with pytest.raises(DataError, match="2 decisions in each group"):
        look_difference(np.ones(3), np.array([True, False, False]), np.zeros(3, bool), np.zeros(3), np.zeros(3))
    with pytest.raises(DataError, match="missing"):
        look_difference(np.array([1.0, np.nan, 1, 1]), np.array([1, 1, 0, 0], bool), np.zeros(4, bool),
                        np.zeros(4), np.zeros(4))  # fmt: skip
    with pytest.raises(ConfigError):
        TrialConfig(level=0.4)
    with pytest.raises(DataError, match="no looks"):
        ChallengerTrial("2", "1").evidence()
