"""Exact calibration values that only the simulated world knows: the oracle, the best single arm, the feature ceiling.

The statistics that are estimated the same way on every source (signal per unit, the learner's gain over the best
single arm) are in :mod:`offerlift.training.calibration`; these are their exact counterparts on the world, so the
estimates can be checked against the truth, plus two values no real experiment can give:

- the **oracle**: each customer gets the arm with the largest true incremental profit (it sees hidden traits);
- the **feature ceiling**: the greedy policy of a model fitted on the NOISE-FREE true incremental profit of a
  separate training world, from the same observable features the learners get; what the features allow at best.

All values are exact expectations (the world's truth at the decision time), per customer, over no offer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.experiment import Experiment
from offerlift.simworld.world import SimWorld

#: LightGBM settings of the feature ceiling's per-arm regressions (fixed; not tuned on what they report).
CEILING_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "verbosity": -1,
    "num_threads": 1,
    "num_leaves": 31,
    "learning_rate": 0.05,
    "min_data_in_leaf": 50,
}
CEILING_ROUNDS = 300


def world_of(exp: Experiment) -> tuple[SimWorld, np.ndarray, float]:
    """The world of a simulated experiment, the world rows of its units (``exp.units()`` order) and its time."""
    world = exp.meta["world"]
    return world, world.rows_of(exp.units()["customer_id"]), float(exp.meta.get("time", 0.0))


def exact_stats(exp: Experiment, profit_sd: float | None = None) -> dict[str, Any]:
    """Exact values on the units of a simulated experiment: no-offer profit, best single arm, oracle.

    Returns control_value (true profit per customer with no offer), best_arm, best_arm_value (its true
    incremental profit per customer, the arm going to everyone it can reach), oracle_value, oracle_share_none,
    best_arm_share and oracle_share (as shares of control_value), and with `profit_sd` (the sd of per-unit profit
    measured on the experiment) the exact signal per unit ``best_arm_value / profit_sd``.
    """
    world, rows, t = world_of(exp)
    card = world.scorecard(rows, t)
    control = 0.0
    for _, truth in world.iter_truth(rows, t):
        control += float(truth.profit[:, 0].astype(np.float64).sum())
    control /= max(rows.size, 1)
    out = {
        "customers": int(rows.size),
        "control_value": control,
        "best_arm": card["best_single_arm"],
        "best_arm_value": card["best_single_arm_value"],
        "oracle_value": card["oracle"],
        "oracle_share_none": card["oracle_share_none"],
        "best_arm_share": card["best_single_arm_value"] / control,
        "oracle_share": card["oracle"] / control,
    }
    if profit_sd is not None:
        out["signal"] = card["best_single_arm_value"] / profit_sd
    return out


def policy_value(exp: Experiment, policy: pd.DataFrame) -> float:
    """Exact incremental profit per customer of a policy given as ``customer_id`` and ``arm_index`` columns."""
    world = exp.meta["world"]
    rows = world.rows_of(policy["customer_id"])
    return world.policy_value(policy["arm_index"].to_numpy(dtype=np.int64), rows, float(exp.meta.get("time", 0.0)))


def single_arm_value(exp: Experiment, arm: str, customer_ids: Any) -> float:
    """Exact incremental profit per customer of sending `arm` to everyone of `customer_ids` it can reach."""
    world = exp.meta["world"]
    rows = world.rows_of(customer_ids)
    return world.policy_value(world.single_arm_policy(arm, rows), rows, float(exp.meta.get("time", 0.0)))


def _model_frame(features: pd.DataFrame) -> pd.DataFrame:
    """Features LightGBM takes directly: text columns as categoricals (LightGBM maps them at predict time)."""
    out = features.copy()
    for col in out.columns:
        if pd.api.types.is_object_dtype(out[col]) or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].astype("category")
    return out


def feature_ceiling(train: Experiment, evaluate: Experiment, rounds: int = CEILING_ROUNDS) -> dict[str, Any]:
    """The feature ceiling: per arm, LightGBM fitted on the noise-free true incremental profit of `train`'s units
    from their features; the greedy policy (the eligible arm with the largest positive prediction, else no offer)
    valued exactly on `evaluate`'s units. Returns value, share_none and the policy's arms."""
    import lightgbm as lgb

    t_world, t_rows, t_time = world_of(train)
    e_world, e_rows, e_time = world_of(evaluate)
    X_train = _model_frame(train.features.loc[train.units().index])
    X_eval = _model_frame(evaluate.features.loc[evaluate.units().index])
    incr = np.empty((t_rows.size, t_world.arms.n_arms))
    for part, truth in t_world.iter_truth(t_rows, t_time):
        incr[part] = truth.incr
    pred = np.zeros((e_rows.size, incr.shape[1]))
    for a in range(1, incr.shape[1]):
        model = lgb.train(CEILING_PARAMS, lgb.Dataset(X_train, incr[:, a]), rounds)
        pred[:, a] = model.predict(X_eval)
    pred = np.where(e_world.eligible(e_rows), pred, -np.inf)
    pred[:, 0] = 0.0
    arms = np.argmax(pred, axis=1)
    return {
        "value": e_world.policy_value(arms, e_rows, e_time),
        "share_none": float(np.mean(arms == 0)),
        "arms": arms,
        "train_units": int(t_rows.size),
    }
