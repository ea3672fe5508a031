"""Held-out evaluation of a model configuration: cross-fitted predictions, policy value, uplift ranking.

Every number here comes from rows the models did not see: folds are grouped by customer (a customer's units all
fall in one fold), models are fitted on the other folds, and the held-out predictions are pooled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.eligibility import reachable_arms
from offerlift.features.experiment import Experiment
from offerlift.models.scoring import ArmScorer
from offerlift.training import metrics as um
from offerlift.training.policy_value import compare_policies

log = logging.getLogger(__name__)


@dataclass
class HeldOut:
    """Out-of-fold predictions of every unit: per outcome (n, K), and profit and incremental profit (n, K)."""

    preds: dict[str, np.ndarray]
    profit: np.ndarray
    incr: np.ndarray
    folds: np.ndarray
    allowed: np.ndarray
    fit_seconds: float = 0.0
    predict_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def customer_folds(customer_ids: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """A fold per unit, with all units of one customer in the same fold."""
    uniq, inverse = np.unique(customer_ids, return_inverse=True)
    rng = np.random.default_rng(seed)
    fold_of_customer = rng.permutation(len(uniq)) % n_folds
    return fold_of_customer[inverse]


def realized_profit(exp: Experiment, value_outcome: str) -> np.ndarray:
    """Profit of each unit as it happened: margin * value - redeem cost of its arm * redeemed - contact cost."""
    units = exp.units()
    cat = exp.catalog
    redeem_cost = units["arm"].map({a.id: a.redeem_cost for a in cat.arms}).to_numpy(dtype=float)
    contact = units["arm"].map({a.id: a.contact_cost for a in cat.arms}).to_numpy(dtype=float)
    value = units[value_outcome].to_numpy(dtype=float)
    redeemed = units["redeem"].to_numpy(dtype=float) if "redeem" in units else 0.0
    return cat.margin * value - redeem_cost * redeemed - contact


def allowed_mask(exp: Experiment, index: pd.Index | None = None) -> np.ndarray:
    """(n, K) arms each unit may get (channel consent and reach, from its features)."""
    feats = exp.features if index is None else exp.features.loc[index]
    return reachable_arms(exp.catalog, feats, len(feats))


def greedy_arms(incr: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """Index of the allowed arm with the largest positive incremental profit per row, 0 (no offer) when none is."""
    if allowed is not None:
        incr = np.where(allowed, incr, -np.inf)
    best = np.argmax(incr, axis=1)
    return np.where(incr[np.arange(len(incr)), best] > 0, best, 0)


def policy_report(exp: Experiment, held: HeldOut, value_outcome: str, n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """The learned greedy policy against no offer and the best single arm, by IPS, SNIPS and DR."""
    units = exp.units()
    arm_ids = exp.catalog.arm_ids
    chosen = np.asarray(arm_ids, dtype=object)[greedy_arms(held.incr, held.allowed)]
    reward = realized_profit(exp, value_outcome)
    tables = []
    for est in ("ips", "snips", "dr"):
        tables.append(
            compare_policies(
                {"model": chosen},
                units["arm"].to_numpy(),
                reward,
                units["propensity"].to_numpy(dtype=float),
                estimator=est,
                mu=held.profit if est == "dr" else None,
                arm_ids=arm_ids,
                control_arm=exp.catalog.control_arm,
                n_boot=n_boot,
                seed=seed,
                allowed=held.allowed,
            )
        )
    return pd.concat(tables, ignore_index=True)


def _is_binary(y: np.ndarray) -> bool:
    return bool(np.isin(y, (0.0, 1.0)).all() and 0 < y.sum() < y.size)


def ranking_report(exp: Experiment, held: HeldOut, outcome: str | None = None, k: float = 0.3) -> pd.DataFrame:
    """Per treatment arm against control: Qini AUC, uplift AUC (scikit-uplift definitions) and uplift@k.

    The outcome must be binary (as scikit-uplift requires): the given one, else the main outcome, else ``buy``.
    The score is the predicted uplift of that outcome when it was modelled, else the predicted incremental profit
    (the score the policy ranks by). The column ``score`` says which.
    """
    units = exp.units()
    candidates = [c for c in (outcome, exp.main_outcome, "buy") if c is not None and c in units]
    binary = [c for c in candidates if _is_binary(units[c].to_numpy(dtype=float))]
    if not binary:
        return pd.DataFrame()
    outcome = binary[0]
    arms = units["arm"].to_numpy()
    y_all = units[outcome].to_numpy(dtype=float)
    if outcome in held.preds:
        scores, score_name = held.preds[outcome] - held.preds[outcome][:, [0]], f"uplift_{outcome}"
    else:
        scores, score_name = held.incr, "incremental_profit"
    control = exp.catalog.control_arm
    rows = []
    for j, arm in enumerate(exp.catalog.arm_ids):
        if arm == control:
            continue
        mask = (arms == arm) | (arms == control)
        y, t, uplift = y_all[mask], (arms[mask] == arm).astype(int), scores[mask, j]
        if not _is_binary(y):
            continue
        rows.append(
            {
                "arm": arm,
                "outcome": outcome,
                "score": score_name,
                "qini_auc": um.qini_auc_score(y, uplift, t),
                "uplift_auc": um.uplift_auc_score(y, uplift, t),
                f"uplift_at_{int(k * 100)}": um.uplift_at_k(y, uplift, t, k=k),
                "n": int(mask.sum()),
            }
        )
    return pd.DataFrame(rows)


def summarize(policy: pd.DataFrame, ranking: pd.DataFrame | None) -> dict[str, float]:
    """Flat metrics for MLflow and JSON: policy value gains with CIs, mean Qini."""
    out: dict[str, float] = {}
    model_rows = policy[policy["policy"] == "model"]
    for _, r in model_rows.iterrows():
        est = r["estimator"]
        for key in (
            "value",
            "vs_control",
            "vs_control_ci_low",
            "vs_control_ci_high",
            "vs_best_arm",
            "vs_best_arm_ci_low",
            "vs_best_arm_ci_high",
        ):
            out[f"{est}_{key}"] = float(r[key])
    if ranking is not None and len(ranking):
        out["qini_auc_mean"] = float(ranking["qini_auc"].mean())
        out["uplift_auc_mean"] = float(ranking["uplift_auc"].mean())
    return out


def cross_fit(
    exp: Experiment,
    fit: Callable[[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray], Mapping[str, Any]],
    n_folds: int,
    seed: int,
) -> HeldOut:
    """Fit on all folds but one and score the held-out fold with the exported scorer, for every fold.

    `fit(X, arms, outcomes, propensity)` returns a scorer spec (as `offerlift.training.train.fit_spec` does).
    """
    import time

    units = exp.units()
    X = exp.features.loc[units.index]
    folds = customer_folds(units["customer_id"].to_numpy(), n_folds, seed)
    n, k = len(units), len(exp.catalog.arm_ids)
    preds: dict[str, np.ndarray] = {}
    profit = np.empty((n, k))
    fit_s = pred_s = 0.0
    for f in range(n_folds):
        train_rows, held_rows = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        t0 = time.perf_counter()
        spec = fit(
            X.iloc[train_rows],
            units["arm"].to_numpy()[train_rows],
            units.iloc[train_rows],
            units["propensity"].to_numpy(dtype=float)[train_rows],
        )
        t1 = time.perf_counter()
        scorer = ArmScorer(spec)
        Xh = scorer.features.encode(X.iloc[held_rows])
        p = scorer.predict(Xh)
        for name, arr in p.items():
            preds.setdefault(name, np.empty((n, k)))[held_rows] = arr
        profit[held_rows] = scorer.profit(p)
        fit_s += t1 - t0
        pred_s += time.perf_counter() - t1
        log.info("fold %d/%d: fitted in %.1fs", f + 1, n_folds, t1 - t0)
    allowed = allowed_mask(exp, units.index)
    return HeldOut(preds, profit, profit - profit[:, [0]], folds, allowed, fit_s, pred_s)
