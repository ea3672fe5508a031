"""Off-policy comparison of two models' greedy policies on logged decisions, and the promotion of a champion.

Both models' greedy policies (allowed arms only) are valued off-policy on the same logged decisions (every
decision carries the probability with which it was drawn): a paired doubly robust difference
(`offerlift.training.policy_value.paired_difference`), exactly 0 on the units where the two policies choose the same
arm. The reward model of the DR estimate belongs to neither candidate, so neither can sway its own judgement: a
LightGBM regression of the realized profit on the features and the arm's catalog features, cross-fitted over
customers (each unit's prediction comes from a fit on the other customers' units), or each arm's mean profit.
Its standard error is cluster-robust by customer, with a normal bound at ``level``.

The closed loop uses `judge` as the safety screen before a candidate gets live traffic (only a candidate clearly
worse than the champion is stopped); the promotion itself rests on the on-policy champion/challenger test
(`offerlift.training.challenger_gate`), whose evidence `promote_if_better` logs to MLflow with the verdict and
moves the ``champion`` alias.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.errors import ConfigError
from offerlift.models.registry import CHAMPION, RegistrySettings, activate, set_alias
from offerlift.models.scoring import ArmScorer
from offerlift.training.evaluate import customer_folds, greedy_arms
from offerlift.training.policy_value import paired_difference

log = logging.getLogger(__name__)

#: LightGBM parameters of the gate's reward model (small, regularised: profit is mostly noise).
REWARD_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "num_leaves": 15,
    "min_data_in_leaf": 200,
    "learning_rate": 0.05,
    "num_iterations": 150,
    "verbosity": -1,
}


@dataclass(frozen=True)
class GateConfig:
    """How the gate judges.

    Attributes:
        min_gain: the difference per unit the challenger must beat (at the lower confidence bound).
        level: one-sided confidence of that bound (0.95: a challenger no better than the champion is promoted
            at most 5% of the time).
        outcome_model: "crossfit" (LightGBM reward model cross-fitted over customers) or "arm_mean".
        folds: folds of the cross-fitting.
        seed: seed of the folds and the reward model.
        params: LightGBM parameters of the reward model.
    """

    min_gain: float = 0.0
    level: float = 0.95
    outcome_model: str = "crossfit"
    folds: int = 2
    seed: int = 0
    params: Mapping[str, Any] = field(default_factory=lambda: dict(REWARD_PARAMS))

    def __post_init__(self) -> None:
        if self.outcome_model not in ("crossfit", "arm_mean"):
            raise ConfigError(f"outcome_model must be 'crossfit' or 'arm_mean', got {self.outcome_model!r}")
        if not 0.5 < self.level < 1:
            raise ConfigError(f"level must be in (0.5, 1), got {self.level!r}")
        if self.folds < 2:
            raise ConfigError(f"folds must be >= 2, got {self.folds!r}")


@dataclass(frozen=True)
class Verdict:
    """The outcome of the gate, with its evidence (values per logged unit)."""

    promoted: bool
    challenger_version: str | None
    champion_version: str | None
    value_challenger: float
    value_champion: float
    diff: float
    ci_low: float
    ci_high: float
    estimator: str
    units: int
    reason: str
    se: float = float("nan")
    mde: float = float("nan")
    units_differ: int = 0


def greedy_policy(scorer: ArmScorer, features: pd.DataFrame, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chosen arm index, profit predictions) of a model's greedy policy on logged units."""
    preds = scorer.predict(scorer.features.encode(features))
    profit = scorer.profit(preds)
    return greedy_arms(profit - profit[:, [0]], allowed), profit


def reward_predictions(
    scorer: ArmScorer,
    features: pd.DataFrame,
    arm_index: np.ndarray,
    rewards: np.ndarray,
    queries: list[np.ndarray],
    folds: np.ndarray,
    params: Mapping[str, Any],
) -> list[np.ndarray]:
    """Cross-fitted predicted reward of each unit under each query's arm (one arm index per unit and query).

    One LightGBM regression of the reward on [features, the arm's catalog features] per fold, fitted on the
    other folds' units and predicting this fold's units.
    """
    import lightgbm as lgb

    from offerlift.training.learners import structured_arm_features
    from offerlift.training.learners_base import FeatureEncoder

    enc = FeatureEncoder().fit(features)
    X = enc.transform(features)
    table, _ = structured_arm_features(scorer.catalog)
    A = np.array([table[a] for a in scorer.arms], dtype=float)
    out = [np.empty(len(X)) for _ in queries]
    cats = enc.categorical
    for f in np.unique(folds):
        fit_rows, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        data = lgb.Dataset(
            np.hstack([X[fit_rows], A[arm_index[fit_rows]]]), rewards[fit_rows], categorical_feature=cats
        )
        booster = lgb.train(dict(params), data)
        for q, arms in enumerate(queries):
            out[q][held] = booster.predict(np.hstack([X[held], A[arms[held]]]))
    return out


def judge(
    champion: ArmScorer | None,
    challenger: ArmScorer,
    features: pd.DataFrame,
    arms: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
    allowed: np.ndarray,
    gate: GateConfig = GateConfig(),
    customer_ids: np.ndarray | None = None,
    champion_choices: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compare the challenger's and the champion's greedy policies on logged data (no registry involved).

    Without a champion the reference is "no offer to anyone". ``customer_ids`` (one per unit) make the folds and
    the standard error customer-level; ``champion_choices`` (the champion's greedy arm index per unit) spare
    scoring the champion again. Returns the `paired_difference` fields (difference, cluster-robust ``se``, one-sided
    bounds ``ci_low``/``ci_high`` at ``gate.level``) plus challenger_choices, mde
    (the smallest true difference the gate would detect with 80% power), promote, reason and estimator.
    """
    from scipy import stats

    idx = pd.Index(challenger.arms).get_indexer(np.asarray(arms))
    rewards = np.asarray(rewards, dtype=float)
    new, _ = greedy_policy(challenger, features, allowed)
    if champion_choices is not None:
        old = np.asarray(champion_choices, dtype=np.intp)
    else:
        old = (
            np.zeros(len(features), dtype=np.intp)
            if champion is None
            else greedy_policy(champion, features, allowed)[0]
        )
    clusters = np.arange(len(idx)) if customer_ids is None else np.asarray(customer_ids)
    if gate.outcome_model == "crossfit":
        folds = customer_folds(clusters, gate.folds, gate.seed)
        params = {**gate.params, "seed": gate.seed}
        mu_new, mu_old, mu_log = reward_predictions(challenger, features, idx, rewards, [new, old, idx], folds, params)
    else:
        means = pd.Series(rewards).groupby(idx).mean().reindex(range(len(challenger.arms))).fillna(rewards.mean())
        m = means.to_numpy()
        mu_new, mu_old, mu_log = m[new], m[old], m[idx]
    diff = paired_difference(
        new, old, idx, rewards, propensities, mu_new, mu_old, mu_log, clusters=clusters, level=gate.level
    )
    mde = float((stats.norm.ppf(gate.level) + stats.norm.ppf(0.8)) * diff["se"] + gate.min_gain)
    better = bool(np.isfinite(diff["ci_low"]) and diff["ci_low"] > gate.min_gain)
    reason = (
        f"challenger better by {diff['diff']:+.4f} per unit (se {diff['se']:.4f}, {diff['n_differ']} of "
        f"{diff['n']} units differ), one-sided {gate.level:.0%} bound {diff['ci_low']:+.4f} "
        f"{'above' if better else 'not above'} {gate.min_gain:+.4f}; detectable difference {mde:.4f}"
    )
    return {
        **diff,
        "mde": mde,
        "promote": better,
        "reason": reason,
        "estimator": f"dr-{gate.outcome_model}",
        "challenger_choices": new,
    }


def promote_if_better(
    registry: RegistrySettings | None,
    challenger_version: str | None,
    champion_version: str | None,
    evidence: dict,
    units: int,
) -> Verdict:
    """Move the champion alias when the evidence says so, and log the verdict to MLflow (when a registry is given)."""
    verdict = Verdict(
        promoted=bool(evidence["promote"]),
        challenger_version=challenger_version,
        champion_version=champion_version,
        value_challenger=float(evidence["value_a"]),
        value_champion=float(evidence["value_b"]),
        diff=float(evidence["diff"]),
        ci_low=float(evidence["ci_low"]),
        ci_high=float(evidence["ci_high"]),
        estimator=str(evidence.get("estimator", "dr")),
        units=units,
        reason=str(evidence["reason"]),
        se=float(evidence.get("se", float("nan"))),
        mde=float(evidence.get("mde", float("nan"))),
        units_differ=int(evidence.get("n_differ", 0)),
    )
    if registry is None:
        return verdict
    if verdict.promoted and challenger_version is not None:
        set_alias(registry, CHAMPION, challenger_version)
    _log_verdict(registry, verdict)
    log.info("promotion gate: %s -> %s", verdict.reason, "promoted" if verdict.promoted else "kept the champion")
    return verdict


def _log_verdict(registry: RegistrySettings, verdict: Verdict) -> None:
    import mlflow

    activate(registry)
    with mlflow.start_run(run_name=f"promotion-v{verdict.challenger_version}"), tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(
            {
                "challenger_version": verdict.challenger_version,
                "champion_version": verdict.champion_version,
                "estimator": verdict.estimator,
            }
        )
        metrics = {
            "promoted": float(verdict.promoted),
            "diff": verdict.diff,
            "ci_low": verdict.ci_low,
            "ci_high": verdict.ci_high,
            "value_challenger": verdict.value_challenger,
            "value_champion": verdict.value_champion,
            "units": float(verdict.units),
            "se": verdict.se,
            "mde": verdict.mde,
            "units_differ": float(verdict.units_differ),
        }
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        path = Path(tmp) / "verdict.json"
        path.write_text(json.dumps(asdict(verdict), indent=2))
        mlflow.log_artifact(str(path))
