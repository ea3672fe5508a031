"""Fit, evaluate, export and register an offerlift model.

`train_model` is the whole job: held-out evaluation by cross-fitting (grouped by customer), a final fit on all
units, export to the scorer spec (checked against the learners), and a run in MLflow that logs parameters,
metrics, tables, plots and the model, registers a version and sets the alias ``challenger`` (and ``champion`` when
there is none yet).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.errors import ConfigError
from features.experiment import Experiment
from features.registry import CHALLENGER, CHAMPION, RegistrySettings, activate, alias_version, set_alias
from training.evaluate import HeldOut, cross_fit, policy_report, ranking_report, summarize
from training.export import check_export, scorer_spec
from training.learners import make_learner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """What to fit and how to evaluate it.

    Attributes:
        learner: "s", "t", "x" or "dr".
        params: LightGBM parameters over the learners' defaults.
        monotone: S-learner only: predictions non-decreasing in coupon value.
        n_folds: folds of the held-out evaluation (grouped by customer); 0 skips it.
        seed: seed of folds, bootstrap and LightGBM.
        n_boot: bootstrap resamples of the policy-value CIs.
    """

    learner: str = "t"
    params: Mapping[str, Any] = field(default_factory=dict)
    monotone: bool = False
    n_folds: int = 5
    seed: int = 0
    n_boot: int = 500

    def __post_init__(self) -> None:
        if self.learner not in ("s", "t", "x", "dr"):
            raise ConfigError(f"learner must be one of s, t, x, dr; got {self.learner!r}")
        if self.n_folds == 1 or self.n_folds < 0:
            raise ConfigError(f"n_folds must be 0 (no evaluation) or >= 2, got {self.n_folds!r}")


@dataclass
class TrainResult:
    """What a training run produced."""

    spec: dict[str, Any]
    metrics: dict[str, float]
    policy: pd.DataFrame | None
    ranking: pd.DataFrame | None
    held_out: HeldOut | None
    model_uri: str | None = None
    version: str | None = None
    run_id: str | None = None


def outcome_plan(exp: Experiment) -> tuple[list[str], str]:
    """The outcomes to model and the one that carries money value (``reward`` if present, else ``spend``)."""
    out = exp.outcomes
    value = "reward" if "reward" in out else "spend"
    names = [value]
    costly = any(a.redeem_cost > 0 for a in exp.catalog.arms)
    if "redeem" in out and costly and out["redeem"].nunique() > 1:
        names.append("redeem")
    main = exp.main_outcome
    if main not in names and not (main in out and np.array_equal(out[main].to_numpy(), out[value].to_numpy())):
        names.append(main)
    return names, value


def fit_spec(
    exp: Experiment,
    config: TrainConfig,
    X: pd.DataFrame,
    arms: np.ndarray,
    outcomes: pd.DataFrame,
    propensity: np.ndarray,
    metadata: Mapping[str, Any] | None = None,
    check_rows: int = 0,
) -> dict[str, Any]:
    """Fit one learner per outcome and export them as a scorer spec."""
    names, value = outcome_plan(exp)
    cat = exp.catalog
    learners = {}
    for name in names:
        kw: dict[str, Any] = {
            "control": cat.control_arm,
            "arms": cat.arm_ids,
            "params": dict(config.params),
            "random_state": config.seed,
        }
        if config.learner == "s":
            kw.update(arm_values={a.id: a.coupon_value for a in cat.arms}, monotone=config.monotone)
        learner = make_learner(config.learner, **kw)
        learners[name] = learner.fit(X, arms, outcomes[name].to_numpy(dtype=float), propensity)
    spec = scorer_spec(learners, cat, value, metadata)
    if check_rows:
        check_export(spec, learners, X.iloc[:check_rows])
    return spec


def evaluate_config(exp: Experiment, config: TrainConfig) -> tuple[HeldOut, pd.DataFrame, pd.DataFrame, dict]:
    """Held-out predictions, policy report, ranking report and flat metrics of a configuration."""
    _, value = outcome_plan(exp)

    def fit(X: pd.DataFrame, arms: np.ndarray, outcomes: pd.DataFrame, p: np.ndarray) -> dict[str, Any]:
        return fit_spec(exp, config, X, arms, outcomes, p)

    held = cross_fit(exp, fit, config.n_folds, config.seed)
    policy = policy_report(exp, held, value, n_boot=config.n_boot, seed=config.seed)
    ranking = ranking_report(exp, held)
    metrics = summarize(policy, ranking)
    metrics.update(fit_seconds=held.fit_seconds, predict_seconds=held.predict_seconds)
    return held, policy, ranking, metrics


def fit_final(exp: Experiment, config: TrainConfig, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Fit on every unit and export; the export is checked against the learners on the first rows."""
    units = exp.units()
    X = exp.features.loc[units.index]
    return fit_spec(
        exp,
        config,
        X,
        units["arm"].to_numpy(),
        units,
        units["propensity"].to_numpy(dtype=float),
        metadata,
        check_rows=min(len(X), 2000),
    )


def data_fingerprint(exp: Experiment) -> str:
    """A short hash of the training units (arms, outcomes, features)."""
    units = exp.units()
    h = pd.util.hash_pandas_object(units[["arm", exp.main_outcome]], index=True).to_numpy()
    f = pd.util.hash_pandas_object(exp.features, index=True).to_numpy()
    import hashlib

    return hashlib.sha256(h.tobytes() + f.tobytes()).hexdigest()[:16]


def train_model(exp: Experiment, config: TrainConfig, registry: RegistrySettings | None = None) -> TrainResult:
    """Evaluate on held-out folds, fit on everything, and (with `registry`) log and register the model."""
    t0 = time.perf_counter()
    held = policy = ranking = None
    metrics: dict[str, float] = {}
    if config.n_folds:
        held, policy, ranking, metrics = evaluate_config(exp, config)
    metadata = {
        "dataset": exp.name,
        "data_fingerprint": data_fingerprint(exp),
        "units": len(exp.assignments),
        "config": {**asdict(config), "params": dict(config.params)},
        "metrics": metrics,
        "versions": _versions(),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    spec = fit_final(exp, config, metadata)
    metrics["train_seconds"] = time.perf_counter() - t0
    result = TrainResult(spec, metrics, policy, ranking, held)
    if registry is not None:
        _log_and_register(result, exp, config, registry)
    return result


def _log_and_register(result: TrainResult, exp: Experiment, config: TrainConfig, registry: RegistrySettings) -> None:
    import mlflow

    from features.model_io import log_scorer_model

    activate(registry)
    with mlflow.start_run(run_name=f"{exp.name}-{config.learner}") as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(
            {
                "dataset": exp.name,
                "learner": config.learner,
                "n_folds": config.n_folds,
                "seed": config.seed,
                "monotone": config.monotone,
                **dict(config.params),
            }
        )
        mlflow.log_metrics({k: v for k, v in result.metrics.items() if np.isfinite(v)})
        for name, table in (("policy_value", result.policy), ("uplift_ranking", result.ranking)):
            if table is not None:
                path = Path(tmp) / f"{name}.json"
                path.write_text(table.to_json(orient="records", indent=2))
                mlflow.log_artifact(str(path), artifact_path="evaluation")
        _log_plots(result, exp, Path(tmp))
        info = log_scorer_model(result.spec, Path(tmp) / "model", registry.model_name)
        result.run_id = run.info.run_id
    result.version = str(info.registered_model_version)
    result.model_uri = f"models:/{registry.model_name}/{result.version}"
    set_alias(registry, CHALLENGER, result.version)
    if alias_version(registry, CHAMPION) is None:
        set_alias(registry, CHAMPION, result.version)
    log.info("registered %s (run %s)", result.model_uri, result.run_id)


def _log_plots(result: TrainResult, exp: Experiment, tmp: Path) -> None:
    """Qini curves, uplift by decile and calibration of the held-out predictions, as PNG artifacts."""
    if result.held_out is None:
        return
    try:
        from training.report import evaluation_figures
    except ImportError:  # pragma: no cover - plots are optional until the plotting module lands
        return
    import mlflow

    for name, fig in evaluation_figures(exp, result.held_out).items():
        path = tmp / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        mlflow.log_artifact(str(path), artifact_path="plots")


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("lightgbm", "scikit-learn", "numpy", "pandas", "mlflow")}


def metrics_json(result: TrainResult) -> str:
    """The metrics as JSON text."""
    return json.dumps(result.metrics, indent=2)
