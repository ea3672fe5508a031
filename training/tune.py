"""Optuna tuning of the learner and its LightGBM parameters on an uplift-aware, held-out objective.

Each trial picks a learner (s, t, x, dr), its LightGBM parameters and, for the S-learner on a catalog ordered by
coupon value, the monotone flag; then it cross-fits fold by fold (folds grouped by customer, the same folds for
every trial) and after each fold reports the objective on that fold's held-out rows, so that a pruner can stop
a bad trial early. The trial's value is the objective on the pooled held-out predictions of all folds:

- ``policy_value``: incremental profit per unit of the greedy policy against no offer to anyone, by IPS (or
  SNIPS/DR, ``estimator``), as ``offerlift.training.evaluate.policy_report`` computes it (metric
  ``<estimator>_vs_control``);
- ``qini``: the mean Qini AUC (scikit-uplift definition) over treatment arms, as ``ranking_report`` computes it.

No number comes from rows a model was fitted on. The study lives in SQLite (default ``mlruns/optuna.db``, next to
the MLflow store) and resumes when `tune` is called again with the same study name. With a registry, each trial
is logged as a nested MLflow run, and the best configuration is trained and registered by
``offerlift.training.train.train_model`` (alias ``challenger``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from offerlift.features.errors import ConfigError, ModelError, OfferliftError
from offerlift.features.experiment import Experiment
from offerlift.models.registry import RegistrySettings, activate, offerlift_home
from offerlift.models.scoring import ArmScorer
from offerlift.training import metrics as um
from offerlift.training.evaluate import _is_binary, allowed_mask, customer_folds, greedy_arms, realized_profit
from offerlift.training.policy_value import compare_policies
from offerlift.training.train import TrainConfig, TrainResult, fit_spec, outcome_plan, train_model

log = logging.getLogger(__name__)

OBJECTIVES = ("policy_value", "qini")
LEARNERS = ("s", "t", "x", "dr")
ESTIMATORS = ("ips", "snips", "dr")

#: Search space: name -> (low, high, log scale, integer). Override bounds with ``tune(space=...)``.
SPACE: dict[str, tuple[float, float, bool, bool]] = {
    "num_iterations": (50, 400, True, True),
    "learning_rate": (0.01, 0.2, True, False),
    "num_leaves": (7, 63, True, True),
    "min_data_in_leaf": (20, 500, True, True),
    "lambda_l2": (1e-3, 30.0, True, False),
    "feature_fraction": (0.5, 1.0, False, False),
    "bagging_fraction": (0.5, 1.0, False, False),
}

#: The first trial of a new study: the learners' defaults (``offerlift.training.learners_base.DEFAULT_LGB_PARAMS``).
DEFAULT_TRIAL = {
    "learner": "t",
    "num_iterations": 200,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "lambda_l2": 1.0,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
}


@dataclass
class TuneResult:
    """What a tuning call produced.

    Attributes:
        study_name, storage: where the study lives (pass both to `tune` again to resume it).
        objective: "policy_value" or "qini"; ``estimator`` the policy-value estimator.
        best_value: the best trial's held-out objective; ``best_params`` its parameters.
        best_config: the best trial as a TrainConfig.
        n_complete, n_pruned, n_failed: trials of the whole study (all calls) by state.
        n_new: trials run by this call.
        train: the result of training the best configuration (with a registry), else None.
        parent_run_id: the MLflow run that holds the trials' nested runs (with a registry).
    """

    study_name: str
    storage: str
    objective: str
    estimator: str
    best_value: float
    best_params: dict[str, Any]
    best_config: TrainConfig
    n_complete: int
    n_pruned: int
    n_failed: int
    n_new: int
    seconds: float
    train: TrainResult | None = None
    parent_run_id: str | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Fold:
    """One fold of a cross-fit: the rows (positions in ``exp.units()``) fitted on and scored, and the scores."""

    index: int
    train_rows: np.ndarray
    held_rows: np.ndarray
    preds: dict[str, np.ndarray]
    profit: np.ndarray
    fit_seconds: float
    predict_seconds: float


def iter_folds(exp: Experiment, config: TrainConfig, n_folds: int, seed: int) -> Iterator[Fold]:
    """Cross-fit fold by fold: fit `config` on all folds but one, score the held-out fold, yield it.

    The folds are ``offerlift.training.evaluate.customer_folds`` (grouped by customer, seeded), and the fit and
    scoring are those of ``offerlift.training.evaluate.cross_fit`` (``fit_spec``, then the exported ``ArmScorer``), so
    pooling every fold gives the same held-out predictions as ``cross_fit``.
    """
    units = exp.units()
    X = exp.features.loc[units.index]
    arms = units["arm"].to_numpy()
    prop = units["propensity"].to_numpy(dtype=float)
    folds = customer_folds(units["customer_id"].to_numpy(), n_folds, seed)
    for f in range(n_folds):
        train_rows, held_rows = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        t0 = time.perf_counter()
        spec = fit_spec(exp, config, X.iloc[train_rows], arms[train_rows], units.iloc[train_rows], prop[train_rows])
        t1 = time.perf_counter()
        scorer = ArmScorer(spec)
        p = scorer.predict(scorer.features.encode(X.iloc[held_rows]))
        profit = scorer.profit(p)
        yield Fold(f, train_rows, held_rows, p, profit, t1 - t0, time.perf_counter() - t1)


def pool_folds(folds: Sequence[Fold]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The held-out rows of all `folds` (ascending) with their predictions and expected profit, aligned."""
    rows = np.concatenate([f.held_rows for f in folds])
    order = np.argsort(rows, kind="stable")
    preds = {name: np.concatenate([f.preds[name] for f in folds])[order] for name in folds[0].preds}
    profit = np.concatenate([f.profit for f in folds])[order]
    return rows[order], preds, profit


def subset_experiment(exp: Experiment, rows: np.ndarray) -> Experiment:
    """The experiment restricted to the units at positions `rows` of ``exp.units()`` (order kept).

    Used by the benchmark for an outer split (tune on one part, judge on the other)."""
    rows = np.sort(np.asarray(rows, dtype=np.intp))
    assignments = exp.assignments.iloc[rows]
    ids = assignments["unit_id"]
    outcomes = exp.outcomes[exp.outcomes["unit_id"].isin(set(ids))]
    customers = exp.customers[exp.customers["customer_id"].isin(set(assignments["customer_id"]))]
    features = exp.features.loc[ids.to_numpy()]
    return replace(exp, assignments=assignments, outcomes=outcomes, customers=customers, features=features)


@dataclass(frozen=True)
class HeldOutEvaluator:
    """The objective on held-out predictions of any subset of units, computed as ``offerlift.training.evaluate`` does.

    Built once per study from the experiment (arms, propensities, realized profit, reachable arms, the binary
    outcome of the Qini): ``policy_value`` is ``compare_policies`` of the greedy policy (``greedy_arms``), metric
    ``vs_control`` of the chosen estimator, as in ``policy_report``; ``qini`` is the mean ``qini_auc_score`` over
    treatment arms against control, scored as in ``ranking_report``. `tests/training/test_tune.py` checks both
    against ``evaluate_config`` on the pooled folds.
    """

    objective: str
    estimator: str
    arm_ids: tuple[str, ...]
    control: str
    arms: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    allowed: np.ndarray
    binary: str | None
    y: np.ndarray | None

    @classmethod
    def build(cls, exp: Experiment, objective: str, estimator: str = "ips") -> HeldOutEvaluator:
        """Prepare the arrays of every unit (in ``exp.units()`` order)."""
        units = exp.units()
        _, value = outcome_plan(exp)
        names = [c for c in (exp.main_outcome, "buy") if c in units]
        binary = next((c for c in names if _is_binary(units[c].to_numpy(dtype=float))), None)
        if objective == "qini" and binary is None:
            raise ConfigError(f"objective 'qini' needs a binary outcome; data set {exp.name!r} has none ({names})")
        return cls(
            objective,
            estimator,
            tuple(exp.catalog.arm_ids),
            exp.catalog.control_arm,
            units["arm"].to_numpy(),
            realized_profit(exp, value),
            units["propensity"].to_numpy(dtype=float),
            allowed_mask(exp, units.index),
            binary,
            None if binary is None else units[binary].to_numpy(dtype=float),
        )

    def value(self, rows: np.ndarray, preds: Mapping[str, np.ndarray], profit: np.ndarray) -> float:
        """The objective on units `rows` (positions in ``exp.units()``), given their predictions (aligned)."""
        incr = profit - profit[:, [0]]
        if self.objective == "qini":
            return self._qini(rows, preds, incr)
        chosen = np.asarray(self.arm_ids, dtype=object)[greedy_arms(incr, self.allowed[rows])]
        table = compare_policies(
            {"model": chosen},
            self.arms[rows],
            self.reward[rows],
            self.propensity[rows],
            estimator=self.estimator,
            mu=profit if self.estimator == "dr" else None,
            arm_ids=self.arm_ids,
            control_arm=self.control,
            n_boot=2,
            allowed=self.allowed[rows],
        )
        return float(table.loc[table["policy"] == "model", "vs_control"].iloc[0])

    def _qini(self, rows: np.ndarray, preds: Mapping[str, np.ndarray], incr: np.ndarray) -> float:
        y = self.y[rows]
        scores = preds[self.binary] - preds[self.binary][:, [0]] if self.binary in preds else incr
        arms = self.arms[rows]
        qinis = []
        for j, arm in enumerate(self.arm_ids):
            mask = (arms == arm) | (arms == self.control)
            if arm == self.control or not _is_binary(y[mask]):
                continue
            qinis.append(um.qini_auc_score(y[mask], scores[mask, j], (arms[mask] == arm).astype(int)))
        return float(np.mean(qinis)) if qinis else float("nan")


def monotone_possible(exp: Experiment) -> bool:
    """Whether the catalog orders arms by coupon value: at least two distinct values among the treatment arms and
    every treatment arm's value above no offer's (a monotone S-learner gives equal-valued arms equal predictions,
    so an arm valued like no offer would get no uplift at all)."""
    cat = exp.catalog
    control = cat.arm(cat.control_arm).coupon_value
    values = [a.coupon_value for a in cat.arms if a.id != cat.control_arm]
    return len(set(values)) >= 2 and min(values) > control


def suggest_config(
    trial: Any,
    learners: Sequence[str],
    space: Mapping[str, tuple[float, float, bool, bool]],
    monotone_ok: bool,
    n_folds: int,
    seed: int,
    base_params: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """A TrainConfig from an Optuna trial (learner, LightGBM parameters, monotone flag for the S-learner)."""
    learner = trial.suggest_categorical("learner", list(learners))
    params: dict[str, Any] = dict(base_params or {})
    for name, (low, high, log_scale, integer) in space.items():
        if integer:
            params[name] = trial.suggest_int(name, int(low), int(high), log=log_scale)
        else:
            params[name] = trial.suggest_float(name, float(low), float(high), log=log_scale)
    monotone = False
    if learner == "s" and monotone_ok:
        monotone = trial.suggest_categorical("monotone", [False, True])
    return TrainConfig(learner=learner, params=params, monotone=monotone, n_folds=n_folds, seed=seed)


def config_from_params(
    params: Mapping[str, Any], n_folds: int, seed: int, n_boot: int = 500, base_params: Mapping[str, Any] | None = None
) -> TrainConfig:
    """The TrainConfig of a trial's parameters (as ``study.best_params`` holds them)."""
    lgb = {k: v for k, v in params.items() if k not in ("learner", "monotone")}
    return TrainConfig(
        learner=params["learner"],
        params={**dict(base_params or {}), **lgb},
        monotone=bool(params.get("monotone", False)),
        n_folds=n_folds,
        seed=seed,
        n_boot=n_boot,
    )


def make_objective(
    exp: Experiment,
    objective: str,
    learners: Sequence[str],
    n_folds: int,
    seed: int,
    estimator: str = "ips",
    space: Mapping[str, tuple[float, float, bool, bool]] | None = None,
    base_params: Mapping[str, Any] | None = None,
) -> Callable[[Any], float]:
    """The Optuna objective: cross-fit fold by fold, report each fold's held-out value (step = fold), prune when
    the pruner says so, and return the value on the pooled held-out predictions of all folds."""
    import optuna

    space = SPACE if space is None else space
    monotone_ok = monotone_possible(exp)
    evaluator = HeldOutEvaluator.build(exp, objective, estimator)

    def run(trial: optuna.Trial) -> float:
        config = suggest_config(trial, learners, space, monotone_ok, n_folds, seed, base_params)
        done: list[Fold] = []
        for fold in iter_folds(exp, config, n_folds, seed):
            done.append(fold)
            value = evaluator.value(fold.held_rows, fold.preds, fold.profit)
            trial.report(value, step=fold.index)
            if trial.should_prune():
                log.info("trial %d pruned after fold %d (%.4g)", trial.number, fold.index, value)
                raise optuna.TrialPruned(f"fold {fold.index}: {value:.4g}")
        trial.set_user_attr("fit_seconds", sum(f.fit_seconds for f in done))
        return evaluator.value(*pool_folds(done))

    return run


def default_storage(registry: RegistrySettings | None = None) -> str:
    """``sqlite:///<dir>/optuna.db`` next to the MLflow store (its SQLite folder, else ``mlruns/`` of the offerlift
    home)."""
    folder = offerlift_home() / "mlruns"
    uri = registry.tracking_uri if registry is not None else ""
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve() / 'optuna.db'}"


def _check_args(
    objective: str, learners: Sequence[str], estimator: str, n_trials: int | None, timeout: float | None, n_folds: int
) -> None:
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    if isinstance(learners, str) or not learners:
        raise ConfigError(f"learners must be a non-empty list of {list(LEARNERS)}, got {learners!r}")
    bad = [name for name in learners if name not in LEARNERS]
    if bad:
        raise ConfigError(f"unknown learner {bad[0]!r}; choose among {list(LEARNERS)}")
    if estimator not in ESTIMATORS:
        raise ConfigError(f"estimator must be one of {list(ESTIMATORS)}, got {estimator!r}")
    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"n_trials must be >= 1, got {n_trials!r}")
    if n_trials is None and timeout is None:
        raise ConfigError("give n_trials or timeout (or both): with neither, tuning would never stop")
    if n_folds < 2:
        raise ConfigError(f"n_folds must be >= 2, got {n_folds!r}")


def _study_attrs(exp: Experiment, objective: str, estimator: str, n_folds: int, seed: int) -> dict[str, Any]:
    from offerlift.training.train import data_fingerprint

    return {
        "dataset": exp.name,
        "data_fingerprint": data_fingerprint(exp),
        "objective": objective,
        "estimator": estimator,
        "n_folds": n_folds,
        "seed": seed,
    }


def open_study(
    storage: str, study_name: str, attrs: Mapping[str, Any], seed: int, pruner: Any = None, sampler: Any = None
) -> Any:
    """Create the study, or load it when it exists; a loaded study must match `attrs` (same data, objective,
    folds), else its values would not be comparable."""
    import optuna

    pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction="maximize", pruner=pruner, load_if_exists=True
    )
    # A resumed study gets a sampler seeded past its trials: the same seed would replay its first random draws.
    study.sampler = sampler or optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=5)
    stored = study.user_attrs
    if stored:
        diff = [k for k, v in attrs.items() if k in stored and stored[k] != v]
        if diff:
            k = diff[0]
            raise ConfigError(
                f"study {study_name!r} in {storage} was run with {k}={stored[k]!r}, not {attrs[k]!r}; "
                "choose another study name"
            )
    else:
        for k, v in attrs.items():
            study.set_user_attr(k, v)
    return study


def _default_trial(learners: Sequence[str], space: Mapping[str, tuple[float, float, bool, bool]]) -> dict[str, Any]:
    """The learners' defaults as a trial (clipped into the space), so the study starts from the baseline."""
    params: dict[str, Any] = {"learner": "t" if "t" in learners else learners[0]}
    for name, (low, high, _, integer) in space.items():
        v = min(max(DEFAULT_TRIAL.get(name, low), low), high)
        params[name] = int(v) if integer else float(v)
    return params


def tune(
    exp: Experiment,
    n_trials: int | None = 20,
    learners: Sequence[str] = LEARNERS,
    objective: str = "policy_value",
    n_folds: int = 3,
    seed: int = 0,
    storage: str | None = None,
    study_name: str | None = None,
    timeout: float | None = None,
    registry: RegistrySettings | None = None,
    *,
    estimator: str = "ips",
    space: Mapping[str, tuple[float, float, bool, bool]] | None = None,
    base_params: Mapping[str, Any] | None = None,
    pruner: Any = None,
    sampler: Any = None,
    enqueue_default: bool = True,
    n_boot: int = 500,
) -> TuneResult:
    """Tune the learner and its LightGBM parameters on a held-out uplift objective; see the module docstring.

    Args:
        exp: the randomized experiment.
        n_trials: trials to run in this call (added to those of a resumed study); None: until `timeout`.
        learners: learners Optuna may choose.
        objective: "policy_value" (incremental profit per unit vs no offer) or "qini" (mean Qini AUC).
        n_folds, seed: held-out folds (grouped by customer) and the seed of folds, sampler and LightGBM.
        storage: Optuna storage URL; default ``sqlite:///.../mlruns/optuna.db`` next to the MLflow store.
        study_name: default ``offerlift-<dataset>-<objective>``; an existing study of that name is resumed.
        timeout: stop starting trials after this many seconds.
        registry: log trials as nested MLflow runs and train and register the best configuration.
        estimator: policy-value estimator ("ips", "snips" or "dr").
        space: search-space bounds over :data:`SPACE` (name -> (low, high, log, integer)).
        base_params: fixed LightGBM parameters of every trial (e.g. ``num_threads``).
        pruner, sampler: Optuna objects; defaults MedianPruner and a seeded TPESampler.
        enqueue_default: a new study's first trial is the learners' defaults (the baseline to beat), then one trial
            of each other learner (its parameters drawn by the sampler), so that every learner is tried.
        n_boot: bootstrap resamples of the final training run's policy-value CIs.
    """

    _check_args(objective, learners, estimator, n_trials, timeout, n_folds)
    t0 = time.perf_counter()
    space = {**SPACE, **(space or {})}
    storage = storage or default_storage(registry)
    study_name = study_name or f"offerlift-{exp.name}-{objective}"
    attrs = _study_attrs(exp, objective, estimator, n_folds, seed)
    study = open_study(storage, study_name, attrs, seed, pruner, sampler)
    before = _n_finished(study)
    if enqueue_default and not study.trials:
        first = _default_trial(learners, space)
        study.enqueue_trial(first)
        for name in learners:
            if name != first["learner"]:
                study.enqueue_trial({"learner": name})
    run_objective = make_objective(exp, objective, learners, n_folds, seed, estimator, space, base_params)
    parent_run_id = None
    callbacks = []
    if registry is not None:
        parent_run_id = _start_parent_run(registry, study_name, storage, exp, objective, estimator)
        callbacks.append(_mlflow_callback(exp.name))
    try:
        study.optimize(run_objective, n_trials=n_trials, timeout=timeout, catch=(OfferliftError,), callbacks=callbacks)
    finally:
        if registry is not None:
            import mlflow

            mlflow.end_run()
    result = _result(study, storage, objective, estimator, n_folds, seed, n_boot, base_params, before, t0)
    if registry is not None:
        _finish_parent(parent_run_id, result)
        result.parent_run_id = parent_run_id
        result.train = train_model(exp, result.best_config, registry)
        _tag_training_run(registry, result)
    return result


def _n_finished(study: Any) -> int:
    """Trials that ran to an end (complete, pruned or failed); enqueued ones still waiting are not counted."""
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))


def _result(
    study: Any,
    storage: str,
    objective: str,
    estimator: str,
    n_folds: int,
    seed: int,
    n_boot: int,
    base_params: Mapping[str, Any] | None,
    before: int,
    t0: float,
) -> TuneResult:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    if count[TrialState.COMPLETE] == 0:
        raise ModelError(
            f"study {study.study_name!r} has no completed trial ({count[TrialState.PRUNED]} pruned, "
            f"{count[TrialState.FAIL]} failed); run more trials or loosen the pruner"
        )
    best = study.best_trial
    rows = [
        {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params)}
        for t in trials
        if t.state in count
    ]
    return TuneResult(
        study_name=study.study_name,
        storage=storage,
        objective=objective,
        estimator=estimator,
        best_value=float(best.value),
        best_params=dict(best.params),
        best_config=config_from_params(best.params, n_folds, seed, n_boot, base_params),
        n_complete=count[TrialState.COMPLETE],
        n_pruned=count[TrialState.PRUNED],
        n_failed=count[TrialState.FAIL],
        n_new=_n_finished(study) - before,
        seconds=time.perf_counter() - t0,
        trials=rows,
    )


def _start_parent_run(
    registry: RegistrySettings, study_name: str, storage: str, exp: Experiment, objective: str, estimator: str
) -> str:
    import mlflow

    activate(registry)
    run = mlflow.start_run(run_name=f"tune-{study_name}")
    mlflow.log_params(
        {"study": study_name, "storage": storage, "dataset": exp.name, "objective": objective, "estimator": estimator}
    )
    return run.info.run_id


def _mlflow_callback(dataset: str) -> Callable[[Any, Any], None]:
    """Log each finished trial as a nested run: its parameters, state, fold values and objective."""
    import mlflow

    def log_trial(study: Any, trial: Any) -> None:
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params({"dataset": dataset, "trial": trial.number, **trial.params})
            mlflow.set_tag("state", trial.state.name)
            for step, value in sorted(trial.intermediate_values.items()):
                mlflow.log_metric("fold_objective", value, step=step)
            if trial.value is not None and np.isfinite(trial.value):
                mlflow.log_metric("objective", trial.value)

    return log_trial


def _finish_parent(run_id: str | None, result: TuneResult) -> None:
    import mlflow

    if run_id is None:
        return
    client = mlflow.MlflowClient()
    client.log_metric(run_id, "best_objective", result.best_value)
    client.log_metric(run_id, "n_complete", result.n_complete)
    client.log_metric(run_id, "n_pruned", result.n_pruned)
    for k, v in result.best_params.items():
        client.set_tag(run_id, f"best.{k}", str(v))


def _tag_training_run(registry: RegistrySettings, result: TuneResult) -> None:
    import mlflow

    if result.train is None or result.train.run_id is None:
        return
    client = mlflow.MlflowClient(tracking_uri=registry.tracking_uri)
    client.set_tag(result.train.run_id, "tune_study", result.study_name)
    if result.parent_run_id:
        client.set_tag(result.train.run_id, "tune_run_id", result.parent_run_id)


def tune_cli_payload(result: TuneResult) -> dict[str, Any]:
    """One JSON-ready object for ``offerlift tune --json``: best params and value, trial counts, model URI."""
    train = result.train
    config = asdict(result.best_config)
    config["params"] = dict(result.best_config.params)
    return {
        "study": result.study_name,
        "storage": result.storage,
        "objective": result.objective,
        "estimator": result.estimator,
        "best_value": result.best_value,
        "best_params": result.best_params,
        "best_config": config,
        "n_trials": {
            "complete": result.n_complete,
            "pruned": result.n_pruned,
            "failed": result.n_failed,
            "this_call": result.n_new,
        },
        "seconds": result.seconds,
        "model_uri": None if train is None else train.model_uri,
        "version": None if train is None else train.version,
        "run_id": None if train is None else train.run_id,
        "metrics": {} if train is None else train.metrics,
    }
