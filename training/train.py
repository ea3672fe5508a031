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

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError
from offerlift.features.experiment import Experiment
from offerlift.models.registry import CHALLENGER, CHAMPION, RegistrySettings, activate, alias_version, set_alias
from offerlift.training.evaluate import HeldOut, cross_fit, policy_report, ranking_report, summarize
from offerlift.training.export import check_export, scorer_spec
from offerlift.training.learners import make_learner, structured_arm_features

log = logging.getLogger(__name__)


#: LightGBM parameters of `TrainConfig.for_simulated` (small, strongly regularised trees; see the benchmark).
SIMULATED_PARAMS: dict[str, Any] = {"num_iterations": 400, "num_leaves": 7, "min_data_in_leaf": 200}

#: Feature columns the arm may interact with in `TrainConfig.for_simulated`: what drives a coupon's effect in
#: the simulated world (basket, price sensitivity via income/age/tier, fatigue, abuse).
SIMULATED_UPLIFT_FEATURES: tuple[str, ...] = (
    "avg_basket",
    "hours_since_offer",
    "accounts_per_device",
    "age",
    "income",
    "tier",
)


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
        structured_arms: S-learner only: the arm enters as its catalog features (coupon value, minimum spend,
            channel indicators, contact cost; see `offerlift.training.learners.structured_arm_features`) instead of
            one-hot indicators, so that arms share strength; with `monotone`, buy, redeem and spend grow with the coupon
            value, buy and redeem fall with the minimum spend (and a by-arm basket grows with it).
        hurdle: model the value outcome as P(buy) * E[value | buy]: a "buy" model on every unit and a "basket"
            model on the buyers only (arm-free unless `basket_by_arm`); the spec composes them (`value_from`).
        basket_by_arm: hurdle only: the basket model also sees the arm (its structured features with
            `structured_arms`, else one-hot), e.g. to learn trading up to a coupon's minimum spend.
        uplift_features: S-learner only: the feature columns the arm may interact with (LightGBM interaction
            constraints); None lets it interact with every column.
    """

    learner: str = "t"
    params: Mapping[str, Any] = field(default_factory=dict)
    monotone: bool = False
    n_folds: int = 5
    seed: int = 0
    n_boot: int = 500
    structured_arms: bool = False
    hurdle: bool = False
    basket_by_arm: bool = False
    uplift_features: tuple[str, ...] | None = None

    @classmethod
    def for_simulated(cls, **overrides: Any) -> TrainConfig:
        """The configuration that learned the best policies on the simulated world (benchmarks/sim_learning.py):
        an S-learner on structured arm features, monotone in the coupon value, with a hurdle for spend and
        strongly regularised small trees. ``overrides`` replace any field (e.g. ``seed``, ``n_folds``)."""
        fields: dict[str, Any] = {
            "learner": "s",
            "params": dict(SIMULATED_PARAMS),
            "monotone": True,
            "structured_arms": True,
            "hurdle": True,
            "uplift_features": SIMULATED_UPLIFT_FEATURES,
        }
        return cls(**{**fields, **overrides})

    def __post_init__(self) -> None:
        if self.learner not in ("s", "t", "x", "dr"):
            raise ConfigError(f"learner must be one of s, t, x, dr; got {self.learner!r}")
        if self.n_folds == 1 or self.n_folds < 0:
            raise ConfigError(f"n_folds must be 0 (no evaluation) or >= 2, got {self.n_folds!r}")
        if self.learner != "s" and (self.structured_arms or self.uplift_features is not None):
            raise ConfigError(f"structured_arms and uplift_features need learner 's', got {self.learner!r}")
        if self.basket_by_arm and not self.hurdle:
            raise ConfigError("basket_by_arm needs hurdle=True")


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


def outcome_plan(exp: Experiment, hurdle: bool = False) -> tuple[list[str], str]:
    """The outcomes to model and the one that carries money value (``reward`` if present, else ``spend``).

    With ``hurdle`` the value itself is not modelled: "buy" and "basket" (the value of buyers) stand for it.
    """
    out = exp.outcomes
    value = "reward" if "reward" in out else "spend"
    if hurdle:
        if "buy" not in out:
            raise ConfigError(f"hurdle=True needs a 'buy' outcome; the outcomes are {list(out.columns)}")
        names = ["buy", BASKET]
        if "redeem" in out and any(a.redeem_cost > 0 for a in exp.catalog.arms) and out["redeem"].nunique() > 1:
            names.append("redeem")
        if exp.main_outcome not in (*names, value) and exp.main_outcome in out:
            names.append(exp.main_outcome)
        return names, value
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
    """Fit one learner per outcome and export them as a scorer spec.

    With ``config.hurdle`` the value outcome is P(buy) * E[value | buy]: the "basket" learner is fitted on the
    rows with ``buy == 1`` only, and the spec says ``value_from: ["buy", "basket"]``.
    """
    names, value = outcome_plan(exp, config.hurdle)
    cat = exp.catalog
    if config.hurdle:
        X = _fixed_categories(X)
    learners = {}
    for name in names:
        learner = make_learner(config.learner if name != BASKET else "s", **_learner_kwargs(cat, config, name))
        if name == BASKET:
            rows = np.flatnonzero(outcomes["buy"].to_numpy(dtype=float) > 0)
            y = outcomes[value].to_numpy(dtype=float)[rows]
            prop = None if propensity is None else np.asarray(propensity)[rows]
            learners[name] = learner.fit(X.iloc[rows], np.asarray(arms)[rows], y, prop)
        else:
            learners[name] = learner.fit(X, arms, outcomes[name].to_numpy(dtype=float), propensity)
    first = "buy" if config.hurdle else value
    spec = scorer_spec(learners, cat, first, metadata)
    if config.hurdle:
        spec.update(value_outcome=value, value_from=["buy", BASKET])
    if check_rows:
        check_export(spec, learners, X.iloc[:check_rows])
    return spec


#: The outcome name of the hurdle's second part: the value (spend) of the units that bought.
BASKET = "basket"

#: Monotone constraints on (coupon value, minimum spend) per outcome with `structured_arms` and `monotone`:
#: a larger coupon never lowers buying, redeeming or spending; a higher minimum spend never makes a coupon more
#: attractive (buy, redeem) but can raise the basket of those who use it (trading up).
_MONOTONE = {
    "buy": (1, -1),
    "redeem": (1, -1),
    "visit": (1, -1),
    "spend": (1, 0),
    "reward": (1, 0),
    BASKET: (0, 1),
}


def _learner_kwargs(cat: Catalog, config: TrainConfig, name: str) -> dict[str, Any]:
    """The learner parameters of outcome ``name`` under ``config``."""
    kw: dict[str, Any] = {
        "control": cat.control_arm,
        "arms": cat.arm_ids,
        "params": dict(config.params),
        "random_state": config.seed,
    }
    if name == BASKET:
        kw["outcome"] = "continuous"
        if not config.basket_by_arm:
            return {**kw, "arm_features": {a: [0.0] for a in cat.arm_ids}, "min_arm_rows": 0}
        if not config.structured_arms:
            return kw
    elif config.learner != "s":
        return kw
    if not config.structured_arms:
        return {**kw, "arm_values": {a.id: a.coupon_value for a in cat.arms}, "monotone": config.monotone}
    table, names = structured_arm_features(cat)
    kw.update(arm_features=table, uplift_features=config.uplift_features)
    if config.monotone and name in _MONOTONE:
        kw["arm_monotone"] = [*_MONOTONE[name], *[0] * (len(names) - 2)]
    return kw


def _fixed_categories(X: pd.DataFrame) -> pd.DataFrame:
    """Text columns as Categoricals of all their values, so models fitted on row subsets encode alike."""
    text = [c for c in X.columns if pd.api.types.is_object_dtype(X[c]) or pd.api.types.is_string_dtype(X[c])]
    if not text:
        return X
    X = X.copy()
    for c in text:
        values = X[c].astype("string")
        X[c] = pd.Categorical(values, categories=sorted(values.dropna().unique()))
    return X


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
        log_and_register(result, exp, config, registry)
    return result


def log_and_register(result: TrainResult, exp: Experiment, config: TrainConfig, registry: RegistrySettings) -> None:
    """Log `result` (parameters, metrics, evaluation tables, plots, the scorer model) to MLflow as one run and
    register its model under ``registry.model_name`` as the challenger (and the champion when there is none yet);
    sets ``result.run_id``, ``model_uri`` and ``version``."""
    import mlflow

    from offerlift.models.model_io import log_scorer_model

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
        from offerlift.training.report import evaluation_figures
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
