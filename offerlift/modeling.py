"""Training from notebooks and scripts: held-out evaluation, registration, learner comparison.

Re-exported by `offerlift.api` (``ol.train``, ``ol.register``, ``ol.compare_learners``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from offerlift.features.errors import ConfigError
from offerlift.features.experiment import Experiment
from offerlift.training.train import TrainConfig, TrainResult

if TYPE_CHECKING:
    from offerlift.modeling import Trained

log = logging.getLogger(__name__)


@dataclass
class Trained(TrainResult):
    """A TrainResult that remembers its experiment and configuration (what the tables and plots read)."""

    experiment: Experiment | None = None
    config: TrainConfig | None = None


def train(
    experiment: Experiment,
    learner: str = "t",
    n_folds: int = 5,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    register: bool = True,
    tracking_uri: str | None = None,
    n_boot: int = 500,
    **options: Any,
) -> Trained:
    """Evaluate a learner on held-out folds, fit it on all units and (by default) register it in MLflow.

    ``options`` are further `offerlift.training.train.TrainConfig` fields (e.g. ``monotone=True``,
    ``structured_arms=True``).

    >>> res = train(load("hillstrom"), learner="s")          # doctest: +SKIP
    >>> res.model_uri, res.metrics["ips_vs_control"]         # doctest: +SKIP
    """
    from offerlift.models.registry import resolve_tracking_uri
    from offerlift.training.train import train_model

    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown training options {unknown}; TrainConfig has {sorted(known)}")
    config = TrainConfig(learner=learner, n_folds=n_folds, seed=seed, params=params or {}, n_boot=n_boot, **options)
    registry = resolve_tracking_uri(tracking_uri) if register else None
    log.info(
        "training %s-learner on %s: %d units, %d held-out folds",
        learner,
        experiment.name,
        len(experiment.assignments),
        n_folds,
    )
    result = train_model(experiment, config, registry)
    log.info(
        "trained in %.1fs%s",
        result.metrics["train_seconds"],
        f"; model {result.model_uri} in {registry.tracking_uri}" if registry else " (not registered)",
    )
    base = {f.name: getattr(result, f.name) for f in fields(TrainResult)}
    return Trained(**base, experiment=experiment, config=config)


def register(result: Trained, tracking_uri: str | None = None) -> Trained:
    """Log and register a result trained with ``register=False``; sets ``model_uri`` and ``version``."""
    from offerlift.models.registry import resolve_tracking_uri
    from offerlift.training.train import log_and_register

    if result.experiment is None or result.config is None:
        raise ConfigError("register needs a result of offerlift.api.train")
    log_and_register(result, result.experiment, result.config, resolve_tracking_uri(tracking_uri))
    return result


def compare_learners(
    experiment: Experiment,
    learners: tuple[str, ...] | list[str] = ("s", "t", "x", "dr"),
    n_folds: int = 5,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    n_boot: int = 500,
) -> pd.DataFrame:
    """Held-out comparison of learners on the same folds: one row per learner and estimator (nothing registered).

    Columns: learner, estimator, value, vs_control (+ CI), vs_best_arm (+ CI), best_arm, qini_auc_mean,
    uplift_auc_mean (scikit-uplift definitions), fit_seconds.

    >>> compare_learners(exp, ["s", "t"])      # doctest: +SKIP
    """
    from offerlift.training.train import evaluate_config

    rows = []
    for i, learner in enumerate(learners, start=1):
        log.info("learner %d/%d (%s) on %s, %d folds", i, len(learners), learner, experiment.name, n_folds)
        config = TrainConfig(learner=learner, n_folds=n_folds, seed=seed, params=params or {}, n_boot=n_boot)
        _, policy, _, metrics = evaluate_config(experiment, config)
        model = policy[policy["policy"] == "model"]
        keep = ["estimator", "value", "vs_control", "vs_control_ci_low", "vs_control_ci_high", "vs_best_arm"]
        keep += ["vs_best_arm_ci_low", "vs_best_arm_ci_high", "best_arm"]
        table = model[keep].assign(
            learner=learner,
            qini_auc_mean=metrics.get("qini_auc_mean", np.nan),
            uplift_auc_mean=metrics.get("uplift_auc_mean", np.nan),
            fit_seconds=metrics["fit_seconds"],
        )
        rows.append(table)
    out = pd.concat(rows, ignore_index=True)
    return out[["learner", *[c for c in out.columns if c != "learner"]]]
