"""Calibration statistics: how much signal a randomized experiment carries, computed the same way on every source.

The simulated world is calibrated against the real experiments (Hillstrom, Starbucks) with these statistics, so
one function computes each of them on any :class:`~offerlift.features.experiment.Experiment`:

- :func:`signal_stats`: the best single arm's incremental profit per unit over no offer, its share of the
  no-offer profit per unit, and the **signal per unit** = that increment divided by the standard deviation of the
  per-unit profit over all units (the data a learner or a test needs grows with the inverse square of it);
- :func:`learner_gain`: the gain of a fixed learner's greedy policy over the best single arm at a fixed number of
  units, on held-out folds (grouped by customer), never on training rows.

Arm values are self-normalized inverse-propensity estimates with the logged propensities (on a design with one
propensity per arm they are the arm means). An arm's single-arm policy gives it to every unit that may receive it
(consent, reach) and no offer to the others. Confidence intervals are percentile bootstraps over customers (all
units of a customer are resampled together), paired: every statistic of one resample uses the same customers.

Profit is a :class:`ProfitRule` per source (:data:`PROFIT_RULES`): Hillstrom ``0.3 x spend - 0.1`` per e-mail,
Starbucks ``0.3 x spend - reward paid``, the simulated world its catalog's ``margin x spend - coupon cost x
redeemed - contact cost``. Exact values that only the simulated world knows (oracle, feature ceiling, the exact
value of a policy) are in :mod:`offerlift.simworld.calibration`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError
from offerlift.features.experiment import Experiment
from offerlift.training.evaluate import allowed_mask, cross_fit, greedy_arms
from offerlift.training.policy_value import bootstrap_counts
from offerlift.training.train import TrainConfig, fit_spec
from offerlift.training.tune import subset_experiment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfitRule:
    """Profit of one unit: ``margin x value - coupon cost - contact cost`` (None fields come from the catalog).

    Attributes:
        margin: share of the value outcome that is profit; None uses the catalog's margin.
        contact_cost: cost of contacting one treated unit; None uses the catalog's contact cost of its arm.
        coupon_cost: outcome column holding the coupon cost paid per unit; None uses redeem x the arm's redeem cost.
        value: the outcome column with the money value (spend).
    """

    margin: float | None = None
    contact_cost: float | None = None
    coupon_cost: str | None = None
    value: str = "spend"

    def describe(self) -> str:
        """The rule as a formula."""
        margin = "margin" if self.margin is None else f"{self.margin:g}"
        coupon = "coupon cost x redeemed" if self.coupon_cost is None else self.coupon_cost
        contact = "contact cost of the arm" if self.contact_cost is None else f"{self.contact_cost:g} per contact"
        return f"{margin} x {self.value} - {coupon} - {contact}"


#: The profit of each built-in source, as ``../shared/DESIGN.md`` ("Where the peers stand") defines it.
PROFIT_RULES: dict[str, ProfitRule] = {
    "hillstrom": ProfitRule(margin=0.3, contact_cost=0.1),
    "starbucks": ProfitRule(margin=0.3, coupon_cost="reward_cost"),
    "simulated": ProfitRule(),
}

#: The fixed learner of the calibration: an S-learner (one-hot arms plus the coupon value) with these LightGBM
#: parameters written out (the learners' defaults when calibration was introduced), so that later changes to the
#: defaults do not move the calibration. Single-threaded: figures do not depend on the machine's cores.
CALIBRATION_PARAMS: dict[str, Any] = {
    "num_iterations": 200,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "min_sum_hessian_in_leaf": 1e-3,
    "lambda_l2": 1.0,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "feature_fraction": 0.8,
    "min_data_per_group": 50,
    "cat_smooth": 10.0,
    "max_cat_threshold": 32,
    "num_threads": 1,
}


def calibration_learner(seed: int = 0, n_folds: int = 5) -> TrainConfig:
    """The fixed learner configuration used on every source."""
    return TrainConfig(learner="s", params=dict(CALIBRATION_PARAMS), n_folds=n_folds, seed=seed)


def profit_rule(source: str) -> ProfitRule:
    """The profit rule of a built-in source; ConfigError lists the known ones."""
    if source not in PROFIT_RULES:
        raise ConfigError(f"no profit rule for source {source!r}; known sources are {sorted(PROFIT_RULES)}")
    return PROFIT_RULES[source]


def unit_profit(exp: Experiment, rule: ProfitRule) -> np.ndarray:
    """Realized profit of every unit (in ``exp.units()`` order) under `rule`."""
    units = exp.units()
    cat = exp.catalog
    for col in (rule.value, rule.coupon_cost):
        if col is not None and col not in units:
            raise ConfigError(f"{exp.name}: profit rule needs outcome {col!r}; the units have {list(units.columns)}")
    arms = units["arm"]
    treated = (arms != cat.control_arm).to_numpy()
    margin = cat.margin if rule.margin is None else rule.margin
    if rule.contact_cost is None:
        contact = arms.map({a.id: a.contact_cost for a in cat.arms}).to_numpy(dtype=float)
    else:
        contact = rule.contact_cost * treated
    if rule.coupon_cost is not None:
        coupon = units[rule.coupon_cost].to_numpy(dtype=float)
    elif "redeem" in units:
        coupon = arms.map({a.id: a.redeem_cost for a in cat.arms}).to_numpy(dtype=float) * units["redeem"].to_numpy(
            dtype=float
        )
    else:
        coupon = np.zeros(len(units))
    return margin * units[rule.value].to_numpy(dtype=float) - coupon - contact


def apply_rule(exp: Experiment, rule: ProfitRule) -> Experiment:
    """The experiment with a catalog whose margin and contact costs are the rule's, so that a learner fitted on
    it maximizes the same profit that `unit_profit` measures (a coupon cost column is modelled as redeem x cost)."""
    spec = exp.catalog.to_dict()
    if rule.margin is not None:
        spec["margin"] = float(rule.margin)
    if rule.contact_cost is not None:
        treated = [a for a in exp.catalog.arms if not a.is_control]
        if rule.contact_cost and any(a.channel is None for a in treated):
            raise ConfigError(f"{exp.name}: a contact cost needs every arm to have a channel")
        spec["channels"] = [{**c, "contact_cost": float(rule.contact_cost)} for c in spec["channels"]]
    return replace(exp, catalog=Catalog.from_dict(spec))


def sample_units(exp: Experiment, size: int, seed: int = 0) -> Experiment:
    """About `size` units (at most `size`), drawn by customer: whole customers in a random order until full."""
    units = exp.assignments
    if size >= len(units):
        return exp
    if size < 100:
        raise ConfigError(f"a sample needs at least 100 units, got size={size!r}")
    codes, uniq = pd.factorize(units["customer_id"])
    per = np.bincount(codes)
    order = np.random.default_rng(seed).permutation(uniq.size)
    keep = order[np.cumsum(per[order]) <= size]
    rows = np.flatnonzero(np.isin(codes, keep))
    return subset_experiment(exp, rows)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        """{"value", "low", "high"}."""
        return {"value": self.value, "low": self.low, "high": self.high}


class _ClusterSums:
    """Per-customer sums of per-unit columns, and their bootstrap resamples over customers."""

    def __init__(self, columns: np.ndarray, clusters: np.ndarray):
        codes, uniq = pd.factorize(pd.Series(clusters))
        self.n_clusters = uniq.size
        self.sums = pd.DataFrame(columns).groupby(codes, sort=True).sum().to_numpy(dtype=float)

    def total(self) -> np.ndarray:
        """Column sums over all units."""
        return self.sums.sum(axis=0)

    def resamples(self, n_boot: int, seed: int) -> np.ndarray:
        """(n_boot, k) column sums of resamples of customers drawn with replacement."""
        return np.vstack([counts @ self.sums for counts in bootstrap_counts(self.n_clusters, n_boot, seed)])


def _interval(point: float, boot: np.ndarray, level: float) -> Estimate:
    ok = boot[np.isfinite(boot)]
    if ok.size < 2:
        return Estimate(float(point), float("nan"), float("nan"))
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(float(point), float(lo), float(hi))


def _single_arm_weights(arm_idx: np.ndarray, propensity: np.ndarray, allowed: np.ndarray, control: int) -> np.ndarray:
    """(n, K) weights 1[a_i = pi_k(i)] / p_i of each single-arm policy pi_k (arm k where allowed, else control)."""
    k = allowed.shape[1]
    target = np.where(allowed, np.arange(k)[None, :], control)
    return (target == arm_idx[:, None]) / propensity[:, None]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den == 0, 1.0, den), np.nan)


def _sd(total: np.ndarray, squares: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Sample standard deviation from the sum, the sum of squares and the count."""
    mean = total / count
    return np.sqrt(np.maximum(squares / count - mean**2, 0.0) * count / np.maximum(count - 1, 1))


def _logged(exp: Experiment) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, int]:
    units = exp.units()
    arm_idx = pd.Index(exp.catalog.arm_ids).get_indexer(units["arm"])
    propensity = units["propensity"].to_numpy(dtype=float)
    if (arm_idx < 0).any() or not ((propensity > 0) & (propensity <= 1)).all():
        raise ConfigError(f"{exp.name}: every unit needs a catalog arm and a propensity in (0, 1]")
    return units, arm_idx, propensity, allowed_mask(exp, units.index), exp.catalog.index(exp.catalog.control_arm)


def signal_stats(
    exp: Experiment, rule: ProfitRule, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """The best single arm's incremental profit, its share of the no-offer profit, and the signal per unit.

    Returns: units, customers, best_arm (highest point estimate), control_value (profit per unit with no offer),
    best_arm_value (incremental profit per unit of the best arm over no offer), best_arm_share (best_arm_value /
    control_value), profit_sd (sd of the per-unit profit over all units), signal (best_arm_value / profit_sd) as
    {"value", "low", "high"} dicts, and arm_values (point estimate of every arm's increment).
    """
    units, arm_idx, propensity, allowed, control = _logged(exp)
    profit = unit_profit(exp, rule)
    w = _single_arm_weights(arm_idx, propensity, allowed, control)
    n, k = w.shape
    cols = np.hstack([w * profit[:, None], w, np.column_stack([profit, profit**2, np.ones(n)])])
    sums = _ClusterSums(cols, units["customer_id"].to_numpy())

    def stats(s: np.ndarray) -> np.ndarray:
        """Control value, increments of every arm and profit sd from column sums (last axis)."""
        values = _ratio(s[..., :k], s[..., k : 2 * k])
        incr = values - values[..., control : control + 1]
        return values[..., control], incr, _sd(s[..., 2 * k], s[..., 2 * k + 1], s[..., 2 * k + 2])

    ctrl, incr, sd = stats(sums.total())
    treat = [j for j in range(k) if j != control]
    best = treat[int(np.nanargmax(incr[treat]))]
    b_ctrl, b_incr, b_sd = stats(sums.resamples(n_boot, seed))
    b_best = b_incr[:, best]
    out = {
        "units": int(n),
        "customers": int(sums.n_clusters),
        "best_arm": exp.catalog.arm_ids[best],
        "control_value": _interval(ctrl, b_ctrl, level).as_dict(),
        "best_arm_value": _interval(incr[best], b_best, level).as_dict(),
        "best_arm_share": _interval(incr[best] / ctrl, b_best / b_ctrl, level).as_dict(),
        "profit_sd": _interval(sd, b_sd, level).as_dict(),
        "signal": _interval(incr[best] / sd, b_best / b_sd, level).as_dict(),
        "arm_values": {exp.catalog.arm_ids[j]: float(incr[j]) for j in treat},
        "n_boot": int(n_boot),
        "level": float(level),
    }
    log.info(
        "%s: best arm %s %+.4f per unit, sd %.3f, signal %.4f",
        exp.name,
        out["best_arm"],
        incr[best],
        sd,
        incr[best] / sd,
    )
    return out


def learner_gain(
    exp: Experiment,
    rule: ProfitRule,
    size: int,
    config: TrainConfig | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
) -> dict[str, Any]:
    """The fixed learner's held-out greedy policy against the best single arm, on `size` units of `exp`.

    The units are drawn by customer (:func:`sample_units`, seed `seed`), the learner (default
    :func:`calibration_learner`) is cross-fitted on folds grouped by customer (``config.n_folds``), and each unit
    gets the allowed arm with the largest positive predicted incremental profit of the model that did not see it.
    The best single arm is the one with the highest estimate on the same units (chosen after seeing them, which
    favours it). Returns units, best_arm, best_arm_value and policy_value (increments over no offer), gain
    (policy minus best arm), relative_gain (gain / best_arm_value) and gain_per_sd (gain / the sd of per-unit
    profit on the same units, profit_sd) as {"value", "low", "high"}, share_none (units
    the policy sends nothing), and ``policy``: the chosen arm index of every sampled unit with its ``unit_id`` and
    ``customer_id`` (a DataFrame, for exact valuation on the simulated world).
    """
    config = config or calibration_learner(seed=seed)
    if config.n_folds < 2:
        raise ConfigError(f"learner_gain needs held-out folds (n_folds >= 2), got {config.n_folds!r}")
    sub = apply_rule(sample_units(exp, size, seed), rule)

    def fit(X: pd.DataFrame, arms: np.ndarray, outcomes: pd.DataFrame, p: np.ndarray) -> dict[str, Any]:
        return fit_spec(sub, config, X, arms, outcomes, p)

    held = cross_fit(sub, fit, config.n_folds, config.seed)
    units, arm_idx, propensity, allowed, control = _logged(sub)
    chosen = greedy_arms(held.incr, held.allowed)
    profit = unit_profit(sub, rule)
    w = _single_arm_weights(arm_idx, propensity, allowed, control)
    w_pol = (chosen == arm_idx) / propensity
    extra = np.column_stack([w_pol * profit, w_pol, profit, profit**2, np.ones_like(profit)])
    sums = _ClusterSums(np.hstack([w * profit[:, None], w, extra]), units["customer_id"].to_numpy())
    k = w.shape[1]

    def stats(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values = _ratio(s[..., :k], s[..., k : 2 * k])
        pol = _ratio(s[..., 2 * k], s[..., 2 * k + 1])
        ctrl = values[..., control : control + 1]
        return values - ctrl, pol - ctrl[..., 0], _sd(s[..., 2 * k + 2], s[..., 2 * k + 3], s[..., 2 * k + 4])

    incr, pol, sd = stats(sums.total())
    treat = [j for j in range(k) if j != control]
    best = treat[int(np.nanargmax(incr[treat]))]
    b_incr, b_pol, b_sd = stats(sums.resamples(n_boot, seed))
    gain, b_gain = pol - incr[best], b_pol - b_incr[:, best]
    out = {
        "units": len(units),
        "customers": int(sums.n_clusters),
        "folds": int(config.n_folds),
        "best_arm": sub.catalog.arm_ids[best],
        "best_arm_value": _interval(incr[best], b_incr[:, best], level).as_dict(),
        "policy_value": _interval(pol, b_pol, level).as_dict(),
        "gain": _interval(gain, b_gain, level).as_dict(),
        "relative_gain": _interval(gain / incr[best], b_gain / b_incr[:, best], level).as_dict(),
        "profit_sd": float(sd),
        "gain_per_sd": _interval(gain / sd, b_gain / b_sd, level).as_dict(),
        "share_none": float(np.mean(chosen == control)),
        "policy": pd.DataFrame(
            {"unit_id": units.index.to_numpy(), "customer_id": units["customer_id"].to_numpy(), "arm_index": chosen}
        ),
    }
    log.info(
        "%s n=%d: learned %+.4f, best arm %s %+.4f, gain %+.4f",
        exp.name,
        len(units),
        pol,
        out["best_arm"],
        incr[best],
        gain,
    )
    return out
