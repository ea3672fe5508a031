"""The champion/challenger test: on-policy evidence from live traffic, valid however often it is looked at.

The service lets the challenger decide for a share of the customers who are not in the holdout, drawn again every
period (`offerlift.serving.decider.challenger_serves`), and logs for every decision which model decided and both
models' greedy arms under the same rules. One look (`look_difference`) compares the realized profit of the two
groups of one period:

- **Where the two policies act alike, nothing is compared.** A decision that exploited (not explored) for a
  customer whose champion and challenger greedy arms are equal got the same arm whichever model served it, so its
  expected profit is equal in both groups and its difference is exactly 0. The estimate is the difference of the
  group means of ``profit * informative`` (``informative`` = explored, or greedy arms differ): unbiased for the
  difference of the two policies as served, with the noise of the alike decisions removed (the variance shrinks
  about in proportion to the informative share).
- **Variance reduction (CUPED).** Pre-treatment covariates (e.g. the customer's spend before the decision and the
  champion's predicted profit without an offer) enter a pooled least-squares adjustment of the informative part,
  ``y - (z - mean z) @ theta`` with ``z = covariates * informative`` (Deng et al. 2013). It changes the variance,
  not the expectation: the covariates are fixed before the group is drawn.

Looks are combined with inverse-variance weights into one estimate ``D_t`` of the (weighted) mean difference, with
standard error ``se_t``. The one-sided bound is an always-valid confidence sequence: the normal mixture
martingale with a half-normal mixing distribution (Robbins 1970; Howard et al. 2021, "Time-uniform, nonparametric,
nonasymptotic confidence sequences"), ``M = 2 / sqrt(1 + tau) * exp(s**2 / 2) * Phi(s)``,
``s = z * sqrt(tau / (1 + tau))``, ``tau = c * N_t / n_star``; the lower bound is ``D_t - b(tau) * se_t`` where
``b`` solves ``M = 1 / alpha``. By Ville's inequality a challenger that is no better than the champion in every
period crosses it with probability at most ``alpha`` over any number of looks, so the test may be read after every
period and stopped at any time. ``n_star`` is the planned number of units of one look (a design choice, not a
fitted constant) and ``c`` the value that makes the boundary narrowest there (`mixture_tau`, computed from
``alpha``). As GrowthBook and Optimizely do, the variance is estimated from the data (asymptotic validity, checked
with the world's exact values in benchmarks/gate_bench.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from offerlift.features.errors import ConfigError, DataError


@dataclass(frozen=True)
class Look:
    """One period's on-policy comparison (values per unit of that period).

    Attributes:
        diff: challenger minus champion, realized profit per unit, CUPED-adjusted.
        var: its variance; ``var_unadjusted`` without the covariates, ``var_all`` comparing every decision (the plain
            difference of group means, for the record of what removing the alike decisions saved).
        units, informative: decisions compared, and those where the two policies could act differently.
        challenger_units, champion_units: decisions of each group.
    """

    diff: float
    var: float
    var_unadjusted: float
    var_all: float
    units: int
    informative: int
    challenger_units: int
    champion_units: int


def _group_diff(y: np.ndarray, by_challenger: np.ndarray) -> tuple[float, float]:
    a, b = y[by_challenger], y[~by_challenger]
    return float(a.mean() - b.mean()), float(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)


def look_difference(
    profit: np.ndarray,
    by_challenger: np.ndarray,
    explored: np.ndarray,
    champion_arm: np.ndarray,
    challenger_arm: np.ndarray,
    covariates: np.ndarray | None = None,
) -> Look:
    """Compare one period's decisions of the challenger's and the champion's groups (holdout left out).

    Args:
        profit: (n,) realized profit of each decision (margin x spend - coupon cost if redeemed - contact cost).
        by_challenger: (n,) True where the challenger decided.
        explored: (n,) True where the decision explored (group "explore").
        champion_arm, challenger_arm: (n,) the two models' greedy arms under the decision's rules.
        covariates: (n, p) pre-treatment covariates for CUPED, or None.
    """
    profit = np.asarray(profit, dtype=float)
    by_challenger = np.asarray(by_challenger, dtype=bool)
    n = profit.size
    for name, arr in (("by_challenger", by_challenger), ("explored", explored), ("champion_arm", champion_arm),
                      ("challenger_arm", challenger_arm)):  # fmt: skip
        if np.shape(arr) != (n,):
            raise DataError(f"{name} has shape {np.shape(arr)}, expected ({n},)")
    if not np.isfinite(profit).all():
        raise DataError(f"profit has {int((~np.isfinite(profit)).sum())} missing or infinite values")
    n_h = int(by_challenger.sum())
    if n_h < 2 or n - n_h < 2:
        raise DataError(f"a look needs at least 2 decisions in each group, got {n_h} and {n - n_h}")
    informative = np.asarray(explored, dtype=bool) | (np.asarray(champion_arm) != np.asarray(challenger_arm))
    y = profit * informative
    diff_raw, var_raw = _group_diff(y, by_challenger)
    _, var_all = _group_diff(profit, by_challenger)
    diff, var = diff_raw, var_raw
    if covariates is not None:
        Z = np.asarray(covariates, dtype=float).reshape(n, -1)
        if not np.isfinite(Z).all():
            raise DataError("covariates have missing or infinite values")
        Z = np.column_stack([Z * informative[:, None], informative.astype(float)])
        Zc = Z - Z.mean(axis=0)
        theta, *_ = np.linalg.lstsq(Zc, y - y.mean(), rcond=None)
        diff, var = _group_diff(y - Zc @ theta, by_challenger)
    return Look(diff, var, var_raw, var_all, n, int(informative.sum()), n_h, n - n_h)


@lru_cache(maxsize=4096)
def _boundary(tau: float, alpha: float) -> float:
    from scipy import optimize, special

    target = math.log(1.0 / alpha)

    def log_m(z: float) -> float:
        s = z * math.sqrt(tau / (1.0 + tau))
        return math.log(2.0) - 0.5 * math.log1p(tau) + s * s / 2.0 + float(special.log_ndtr(s)) - target

    return float(optimize.brentq(log_m, 0.0, 60.0, xtol=1e-10))


def onesided_boundary(tau: float, alpha: float) -> float:
    """The z value the one-sided half-normal-mixture confidence sequence must exceed at ``tau = rho**2 * I``."""
    if not tau > 0 or not 0 < alpha < 0.5:
        raise ConfigError(f"need tau > 0 and 0 < alpha < 0.5, got tau={tau!r}, alpha={alpha!r}")
    return _boundary(round(float(tau), 10), float(alpha))


@lru_cache(maxsize=64)
def mixture_tau(alpha: float) -> float:
    """The ``tau`` at which the boundary is narrowest (the mixture is tuned so that this is at ``n_star``)."""
    from scipy import optimize

    res = optimize.minimize_scalar(lambda t: _boundary(t, alpha), bounds=(1e-3, 1e4), method="bounded",
                                   options={"xatol": 1e-6})  # fmt: skip
    return float(res.x)


@dataclass(frozen=True)
class TrialConfig:
    """How the challenger is judged.

    Attributes:
        level: one-sided confidence (0.95: a challenger no better than the champion is promoted at most 5% of the
            time, however many looks).
        n_star: planned units of one look; the mixture is narrowest there.
        min_gain: the difference per unit the lower bound must exceed to promote.
        max_looks: after this many looks without a verdict the challenger is retired (a fresher one takes its
            place); stopping early never breaks the guarantee.
    """

    level: float = 0.95
    n_star: int = 90_000
    min_gain: float = 0.0
    max_looks: int = 3

    def __post_init__(self) -> None:
        if not 0.5 < self.level < 1:
            raise ConfigError(f"level must be in (0.5, 1), got {self.level!r}")
        if self.n_star < 10 or self.max_looks < 1:
            raise ConfigError(f"n_star must be >= 10 and max_looks >= 1, got {self.n_star!r}, {self.max_looks!r}")


@dataclass
class ChallengerTrial:
    """The running test of one challenger against one champion: its looks so far and the verdict they give."""

    challenger_version: str
    champion_version: str
    config: TrialConfig = field(default_factory=TrialConfig)
    looks: list[Look] = field(default_factory=list)

    def add(self, look: Look) -> dict[str, Any]:
        """Add a period's look; returns `evidence`."""
        if not (look.var > 0 and math.isfinite(look.var)):
            raise DataError(f"a look's variance must be positive and finite, got {look.var!r}")
        self.looks.append(look)
        return self.evidence()

    def evidence(self) -> dict[str, Any]:
        """The combined estimate, its always-valid one-sided bounds and the verdict.

        ``verdict`` is "promote" (lower bound above ``min_gain``), "worse" (upper bound below 0: the challenger is
        stopped), "retire" (``max_looks`` reached without either) or "continue"."""
        cfg = self.config
        if not self.looks:
            raise DataError("the test has no looks yet")
        w = np.array([1.0 / lk.var for lk in self.looks])
        d = np.array([lk.diff for lk in self.looks])
        diff = float((w * d).sum() / w.sum())
        se = float(1.0 / math.sqrt(w.sum()))
        units = int(sum(lk.units for lk in self.looks))
        alpha = 1.0 - cfg.level
        tau = mixture_tau(alpha) * units / cfg.n_star
        z_bound = onesided_boundary(tau, alpha)
        lower, upper = diff - z_bound * se, diff + z_bound * se
        if lower > cfg.min_gain:
            verdict = "promote"
        elif upper < 0.0:
            verdict = "worse"
        elif len(self.looks) >= cfg.max_looks:
            verdict = "retire"
        else:
            verdict = "continue"
        fixed = 1.0 - alpha
        from scipy import stats

        return {
            "challenger_version": self.challenger_version,
            "champion_version": self.champion_version,
            "looks": len(self.looks),
            "diff": diff,
            "se": se,
            "z": diff / se,
            "boundary_z": z_bound,
            "fixed_horizon_z": float(stats.norm.ppf(fixed)),
            "ci": [lower, upper],
            "units": units,
            "informative_units": int(sum(lk.informative for lk in self.looks)),
            "variance_kept": float(sum(lk.var for lk in self.looks) / sum(lk.var_all for lk in self.looks)),
            "mde": float((z_bound + stats.norm.ppf(0.8)) * se + cfg.min_gain),
            "level": cfg.level,
            "verdict": verdict,
            "promote": verdict == "promote",
            "per_look": [asdict(lk) for lk in self.looks],
        }
