"""Tables of a trained result: recommendations, policy values, observed uplift by segment, budget curves.

Every number comes from held-out rows. Re-exported by `offerlift.api`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from offerlift.features.errors import ConfigError

if TYPE_CHECKING:
    from offerlift.modeling import Trained

log = logging.getLogger(__name__)


def _value_of(result: Trained) -> tuple[pd.DataFrame, np.ndarray]:
    from offerlift.plots import _held
    from offerlift.training.evaluate import realized_profit
    from offerlift.training.train import outcome_plan

    _held(result)
    exp = result.experiment
    return exp.units(), realized_profit(exp, outcome_plan(exp)[1])


def recommendations(result: Trained) -> pd.DataFrame:
    """Per unit (held-out): the arm it got, the recommended arm and the predicted incremental profit of each arm.

    >>> recommendations(res)["recommended_arm"].value_counts()     # doctest: +SKIP
    """
    from offerlift.training.evaluate import greedy_arms

    units, _ = _value_of(result)
    held, arm_ids = result.held_out, result.experiment.catalog.arm_ids
    best = greedy_arms(held.incr, held.allowed)
    out = pd.DataFrame({"customer_id": units["customer_id"].to_numpy(), "arm": units["arm"].to_numpy()}, units.index)
    out["recommended_arm"] = np.asarray(arm_ids, dtype=object)[best]
    out["expected_incremental_profit"] = held.incr[np.arange(len(best)), best]
    for j, arm in enumerate(arm_ids[1:], start=1):
        out[f"uplift_{arm}"] = held.incr[:, j]
    return out


def policy_table(result: Trained, estimator: str = "ips", every_arm: bool = True, n_boot: int = 500) -> pd.DataFrame:
    """Held-out value of the learned policy and of sending everyone the same arm, per unit, with 95% CIs.

    Rows: ``model`` and ``always:<arm>`` for every arm (``every_arm``) or just no offer and the best arm. Columns
    as `offerlift.training.policy_value.compare_policies` (vs_control, vs_best_arm and their paired bootstrap CIs).
    """
    from offerlift.training.evaluate import greedy_arms
    from offerlift.training.policy_value import compare_policies

    units, reward = _value_of(result)
    held, cat = result.held_out, result.experiment.catalog
    ids = np.asarray(cat.arm_ids, dtype=object)
    policies = {"model": ids[greedy_arms(held.incr, held.allowed)]}
    if every_arm:
        for j, arm in enumerate(cat.arm_ids):
            policies[f"always:{arm}"] = np.where(held.allowed[:, j], arm, cat.control_arm)
    table = compare_policies(
        policies,
        units["arm"].to_numpy(),
        reward,
        units["propensity"].to_numpy(float),
        estimator=estimator,
        mu=held.profit if estimator == "dr" else None,
        arm_ids=cat.arm_ids,
        control_arm=cat.control_arm,
        n_boot=n_boot,
        seed=result.config.seed if result.config else 0,
        allowed=held.allowed,
    )
    if every_arm:
        table = table[~table["is_baseline"]]
    return table.sort_values("value", ascending=False).reset_index(drop=True)


def _segments(units: pd.DataFrame, by: str | None, bins: int) -> pd.Series:
    if by is None:
        return pd.Series("all", index=units.index)
    if by not in units:
        raise ConfigError(f"unknown segment column {by!r}; choose a feature or outcome column")
    col = units[by]
    if pd.api.types.is_numeric_dtype(col) and col.nunique() > 10:
        return pd.qcut(col, bins, duplicates="drop").astype(str).rename(by)
    return col.astype(str)


def uplift_by_arm(result: Trained, by: str | None = None, bins: int = 4, level: float = 0.95) -> pd.DataFrame:
    """Observed uplift in profit of each arm over the control (inverse-propensity weighted means of the
    randomized arms, normal CI), with the mean predicted (held-out) uplift; per segment of column `by`
    (numeric columns cut into `bins` quantiles)."""
    from statistics import NormalDist

    units, reward = _value_of(result)
    cat, incr = result.experiment.catalog, result.held_out.incr
    seg = _segments(units, by, bins).to_numpy()
    arms, w = units["arm"].to_numpy(), 1.0 / units["propensity"].to_numpy(float)
    z = NormalDist().inv_cdf((1 + level) / 2)

    def mean_var(m: np.ndarray) -> tuple[float, float]:
        ww, rr = w[m], reward[m]
        mu = float((ww * rr).sum() / ww.sum())
        return mu, float((ww**2 * (rr - mu) ** 2).sum() / ww.sum() ** 2)

    rows = []
    for s in pd.unique(seg):
        in_seg = seg == s
        base_mask = in_seg & (arms == cat.control_arm)
        if base_mask.sum() < 2:
            continue
        m0, v0 = mean_var(base_mask)
        for j, arm in enumerate(cat.arm_ids[1:], start=1):
            m = in_seg & (arms == arm)
            if m.sum() < 2:
                continue
            m1, v1 = mean_var(m)
            se = float(np.sqrt(v0 + v1))
            rows.append(
                {
                    "segment": s,
                    "arm": arm,
                    "units": int(m.sum()),
                    "uplift": m1 - m0,
                    "ci_low": m1 - m0 - z * se,
                    "ci_high": m1 - m0 + z * se,
                    "mean_predicted_uplift": float(incr[in_seg, j].mean()),
                }
            )
    out = pd.DataFrame(rows).assign(outcome="profit", control_arm=cat.control_arm)
    return out if by is not None else out.drop(columns="segment")


def best_offer_by_segment(result: Trained, by: str, bins: int = 4) -> pd.DataFrame:
    """Per segment: the arm with the largest observed uplift (with its CI) and the model's most frequent choice."""
    table = uplift_by_arm(result, by=by, bins=bins)
    recs = recommendations(result)
    recs["segment"] = _segments(result.experiment.units(), by, bins).to_numpy()
    top = table.loc[table.groupby("segment")["uplift"].idxmax()]
    share = recs.groupby("segment")["recommended_arm"].value_counts(normalize=True).rename("share").reset_index()
    choice = share.loc[share.groupby("segment")["share"].idxmax()].set_index("segment")
    out = top.rename(columns={"arm": "best_arm_observed"}).set_index("segment")
    out["model_choice"] = choice["recommended_arm"]
    out["model_choice_share"] = choice["share"]
    out["units_in_segment"] = recs.groupby("segment").size()
    cols = ["units_in_segment", "best_arm_observed", "uplift", "ci_low", "ci_high", "model_choice"]
    return out[[*cols, "model_choice_share"]].reset_index().rename(columns={"segment": by})


# --- budget, scoring, batch ------------------------------------------------------------------------------------


def _budget_inputs(result: Trained) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from offerlift.models.scoring import ArmScorer
    from offerlift.plots import _held
    from offerlift.serving.decider import expected_cost

    held = _held(result)
    return held.incr, expected_cost(ArmScorer(result.spec), held.preds), held.allowed


def _breakpoints(result: Trained) -> tuple[Any, Any]:
    from offerlift.serving.budget import chunk_breakpoints
    from offerlift.serving.policy import PolicyConfig

    incr, cost, allowed = _budget_inputs(result)
    n = len(incr)
    return chunk_breakpoints(incr, cost, allowed, np.ones(n), np.ones((n, 2)), PolicyConfig(holdout=0.0, explore=0.0))


def budget_curve(result: Trained) -> pd.DataFrame:
    """Expected incremental profit against expected spend (coupon + contact cost) of the held-out units as the
    budget shrinks (`offerlift.serving.budget.spend_curve`): columns price, spend, incremental_profit (totals)."""
    from offerlift.serving.budget import spend_curve

    bp, base = _breakpoints(result)
    return spend_curve(base, bp.histogram)


def allocate_budget(result: Trained, budget: float) -> Any:
    """The Lagrangian allocation of a total `budget` over the held-out units (`offerlift.serving.budget.Allocation`)."""
    from offerlift.serving.budget import PriceSolver

    bp, base = _breakpoints(result)
    return PriceSolver(base, bp.histogram, bp.window).solve(budget)
