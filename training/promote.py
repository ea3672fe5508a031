"""The promotion gate: a challenger replaces the champion only when it is better beyond noise.

Both models' greedy policies (allowed arms only) are valued off-policy on the same logged, randomized decisions
(with their logged propensities): the doubly robust estimate with a neutral reward model (each arm's mean logged
profit, the same for both policies, so neither model can sway its own judgement) and a paired bootstrap CI of the
difference. The alias ``champion`` moves only when the lower end of that
CI is above ``min_gain``. The verdict and its evidence are logged to MLflow.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.registry import CHAMPION, RegistrySettings, activate, set_alias
from features.scoring import ArmScorer
from training.evaluate import greedy_arms
from training.policy_value import policy_difference

log = logging.getLogger(__name__)


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


def greedy_policy(scorer: ArmScorer, features: pd.DataFrame, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chosen arm index, profit predictions) of a model's greedy policy on logged units."""
    preds = scorer.predict(scorer.features.encode(features))
    profit = scorer.profit(preds)
    return greedy_arms(profit - profit[:, [0]], allowed), profit


def judge(
    champion: ArmScorer | None,
    challenger: ArmScorer,
    features: pd.DataFrame,
    arms: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
    allowed: np.ndarray,
    min_gain: float = 0.0,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float | bool | str]:
    """Compare the challenger's and the champion's greedy policies on logged data (no registry involved).

    Without a champion the reference is "no offer to anyone".
    """
    arm_ids = challenger.arms
    new, _ = greedy_policy(challenger, features, allowed)
    old = np.zeros(len(features), dtype=int) if champion is None else greedy_policy(champion, features, allowed)[0]
    idx = pd.Index(arm_ids).get_indexer(arms)
    means = pd.Series(rewards).groupby(idx).mean()
    mu = np.tile(means.reindex(range(len(arm_ids))).fillna(float(np.mean(rewards))).to_numpy(), (len(idx), 1))
    diff = policy_difference(
        new,
        old,
        idx,
        rewards,
        propensities,
        estimator="dr",
        mu=mu,
        arm_ids=list(range(len(arm_ids))),
        n_boot=n_boot,
        seed=seed,
    )
    better = bool(np.isfinite(diff["ci_low"]) and diff["ci_low"] > min_gain)
    reason = (
        f"challenger better by {diff['diff']:+.4f} per unit, CI [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]"
        f" {'above' if better else 'not above'} {min_gain:+.4f}"
    )
    return {**diff, "promote": better, "reason": reason}


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
        estimator="dr",
        units=units,
        reason=str(evidence["reason"]),
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
        mlflow.log_metrics(
            {
                "promoted": float(verdict.promoted),
                "diff": verdict.diff,
                "ci_low": verdict.ci_low,
                "ci_high": verdict.ci_high,
                "value_challenger": verdict.value_challenger,
                "value_champion": verdict.value_champion,
                "units": float(verdict.units),
            }
        )
        path = Path(tmp) / "verdict.json"
        path.write_text(json.dumps(asdict(verdict), indent=2))
        mlflow.log_artifact(str(path))
