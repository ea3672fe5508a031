"""The Python API for notebooks and scripts; the CLI calls these same functions.

    >>> import offerlift.api as ol                                  # doctest: +SKIP
    >>> cfg = ol.setup_notebook()        # progress messages, inline figures, the small-data switch
    >>> exp = ol.sample(ol.load("hillstrom", outcome="visit"), cfg.rows)
    >>> res = ol.train(exp, learner="s", params=cfg.params)      # held-out evaluation, registered in MLflow
    >>> ol.plot_qini(res)                                         # Qini curves with random line and band
    >>> ol.policy_table(res)                                      # policy value vs every single arm, with CIs
    >>> ol.score(res.model_uri, exp.features.head())              # uplift per arm and the recommended arm

Every number comes from held-out rows; the figures are in `offerlift.plots` (re-exported here).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.datasets import DATASETS, load_dataset
from features.errors import ConfigError, DataNotFoundError
from features.experiment import Experiment
from offerlift.plots import (  # noqa: F401  (re-exported: ol.plot_qini etc.)
    plot_ab_lift,
    plot_budget_curve,
    plot_calibration,
    plot_loop,
    plot_policy_values,
    plot_qini,
    plot_uplift_by_arm,
    plot_uplift_by_decile,
    plot_uplift_curve,
    save_figure,
)
from training.train import TrainConfig, TrainResult

log = logging.getLogger(__name__)

SMALL_ENV = "OFFERLIFT_SMALL"
OUTPUTS_ENV = "OFFERLIFT_OUTPUTS"
FAST_PARAMS = {"num_iterations": 50, "learning_rate": 0.1, "num_leaves": 15, "min_data_in_leaf": 50}


# --- notebook set-up -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotebookSettings:
    """Sizes for a notebook run; ``small`` (``$OFFERLIFT_SMALL=1``, as in CI) makes everything quick."""

    small: bool
    rows: int | None = None
    params: dict[str, Any] | None = None
    n_folds: int = 5
    n_boot: int = 500
    loop_rounds: int = 6
    loop_customers: int = 10_000
    campaign_customers: int = 50_000
    outputs: Path = Path("outputs/notebooks")


def small_data() -> bool:
    """True when ``$OFFERLIFT_SMALL`` is set to 1/true/yes (CI runs the notebooks so)."""
    return os.environ.get(SMALL_ENV, "").strip().lower() in ("1", "true", "yes")


def show_progress(level: int | str = "INFO") -> None:
    """Print the log messages of offerlift (what runs, where results went) to stderr, e.g. in a notebook."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    for name in ("offerlift", "features", "training", "serving"):
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if not getattr(h, "_offerlift", False)]
        handler._offerlift = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def setup_notebook(small: bool | None = None, outputs: str | Path | None = None) -> NotebookSettings:
    """Progress messages on, figures inline, and the sizes to use (small when `small` or ``$OFFERLIFT_SMALL``).

    Figures and reports go to `outputs`, else ``$OFFERLIFT_OUTPUTS``, else the repository's ``outputs/notebooks``.

    >>> cfg = setup_notebook()       # doctest: +SKIP
    >>> cfg.small, cfg.rows          # doctest: +SKIP
    (True, 8000)
    """
    from features.registry import REPO_ROOT
    from offerlift.plots import enable_inline

    show_progress()
    enable_inline()
    small = small_data() if small is None else small
    out = Path(outputs or os.environ.get(OUTPUTS_ENV) or REPO_ROOT / "outputs" / "notebooks")
    out.mkdir(parents=True, exist_ok=True)
    log.info("%s data; figures and reports go to %s", "small" if small else "full", out)
    if not small:
        return NotebookSettings(False, outputs=out)
    return NotebookSettings(
        True,
        rows=8000,
        params=dict(FAST_PARAMS),
        n_folds=2,
        n_boot=100,
        loop_rounds=3,
        loop_customers=3000,
        campaign_customers=4000,
        outputs=out,
    )


# --- data ------------------------------------------------------------------------------------------------------


def load(name: str, path: str | Path | None = None, outcome: str | None = None, **options: Any) -> Experiment:
    """Load a data set (``"hillstrom"``, ``"starbucks"``, ``"simulated"``) as an Experiment with its features.

    ``outcome`` picks the main outcome (e.g. ``"visit"``): the one modelled next to profit and ranked by Qini.

    >>> exp = load("hillstrom", outcome="visit")   # doctest: +SKIP
    >>> exp.summary()["rows"]                      # doctest: +SKIP
    64000
    """
    exp = load_dataset(name, path=path, **options)
    if outcome is not None:
        if outcome not in exp.outcomes.columns or outcome in ("unit_id", "customer_id", "time"):
            raise ConfigError(f"unknown outcome {outcome!r} for {name}; choose one of {list(exp.outcomes.columns)}")
        exp = replace(exp, main_outcome=outcome)
    return exp


def sample(experiment: Experiment, n: int | None, seed: int = 0) -> Experiment:
    """About `n` units drawn at random by customer (all units of a drawn customer); `n` None returns all.

    >>> small = sample(load("starbucks"), 20_000)   # doctest: +SKIP
    """
    from training.tune import subset_experiment

    units = experiment.assignments
    if n is None or n >= len(units):
        return experiment
    if n < 100:
        raise ConfigError(f"a sample needs at least 100 units, got n={n!r}")
    customers = units["customer_id"].unique()
    per_customer = len(units) / len(customers)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(customers, size=max(1, round(n / per_customer)), replace=False)
    rows = np.flatnonzero(units["customer_id"].isin(set(chosen)).to_numpy())
    log.info("sampled %d of %d units of %s (%d customers)", rows.size, len(units), experiment.name, chosen.size)
    return subset_experiment(experiment, rows)


def dataset_summary(name: str, path: str | Path | None = None, n_customers: int = 100_000, seed: int = 0) -> dict:
    """The summary of one data set (units, arms, control arm, main outcome per arm, exclusions)."""
    options: dict[str, Any] = {"n_customers": n_customers, "seed": seed} if name == "simulated" else {}
    return load(name, path=path, **options).summary()


def main_job(n_customers: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Load every data source, build its features and summarize each (the README's main job for now)."""
    out: dict[str, Any] = {"datasets": {}}
    for name in DATASETS:
        t0 = time.perf_counter()
        try:
            summary = dataset_summary(name, n_customers=n_customers, seed=seed)
        except DataNotFoundError as exc:
            log.warning("%s", exc)
            out["datasets"][name] = {"error": str(exc)}
            continue
        summary["seconds"] = time.perf_counter() - t0
        out["datasets"][name] = summary
        log.info("%s: %d units summarized in %.1fs", name, summary["rows"], summary["seconds"])
    return out


def load_experiment_file(
    path: str | Path,
    treatment: str,
    control: str,
    outcome: str,
    value: str | None = None,
    cost: float = 0.0,
    features: list[str] | None = None,
) -> Experiment:
    """A randomized experiment from a CSV or Parquet file (one row per unit)."""
    from features.byo import load_experiment_file as _load

    return _load(path, treatment=treatment, control=control, outcome=outcome, value=value, cost=cost, features=features)


# --- training ----------------------------------------------------------------------------------------------------


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

    ``options`` are further `training.train.TrainConfig` fields (e.g. ``monotone=True``, ``structured_arms=True``).

    >>> res = train(load("hillstrom"), learner="s")          # doctest: +SKIP
    >>> res.model_uri, res.metrics["ips_vs_control"]         # doctest: +SKIP
    """
    from features.registry import resolve_tracking_uri
    from training.train import train_model

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
    from features.registry import resolve_tracking_uri
    from training.train import _log_and_register

    if result.experiment is None or result.config is None:
        raise ConfigError("register needs a result of offerlift.api.train")
    _log_and_register(result, result.experiment, result.config, resolve_tracking_uri(tracking_uri))
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
    from training.train import evaluate_config

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


# --- tables of a trained result ------------------------------------------------------------------------------


def _value_of(result: Trained) -> tuple[pd.DataFrame, np.ndarray]:
    from offerlift.plots import _held
    from training.evaluate import realized_profit
    from training.train import outcome_plan

    _held(result)
    exp = result.experiment
    return exp.units(), realized_profit(exp, outcome_plan(exp)[1])


def recommendations(result: Trained) -> pd.DataFrame:
    """Per unit (held-out): the arm it got, the recommended arm and the predicted incremental profit of each arm.

    >>> recommendations(res)["recommended_arm"].value_counts()     # doctest: +SKIP
    """
    from training.evaluate import greedy_arms

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
    as `training.policy_value.compare_policies` (vs_control, vs_best_arm and their paired bootstrap CIs).
    """
    from training.evaluate import greedy_arms
    from training.policy_value import compare_policies

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
    from features.scoring import ArmScorer
    from offerlift.plots import _held
    from serving.decider import expected_cost

    held = _held(result)
    return held.incr, expected_cost(ArmScorer(result.spec), held.preds), held.allowed


def _breakpoints(result: Trained) -> tuple[Any, Any]:
    from serving.budget import chunk_breakpoints
    from serving.policy import PolicyConfig

    incr, cost, allowed = _budget_inputs(result)
    n = len(incr)
    return chunk_breakpoints(incr, cost, allowed, np.ones(n), np.ones((n, 2)), PolicyConfig(holdout=0.0, explore=0.0))


def budget_curve(result: Trained) -> pd.DataFrame:
    """Expected incremental profit against expected spend (coupon + contact cost) of the held-out units as the
    budget shrinks (`serving.budget.spend_curve`): columns price, spend, incremental_profit (totals)."""
    from serving.budget import spend_curve

    bp, base = _breakpoints(result)
    return spend_curve(base, bp.histogram)


def allocate_budget(result: Trained, budget: float) -> Any:
    """The Lagrangian allocation of a total `budget` over the held-out units (`serving.budget.Allocation`)."""
    from serving.budget import PriceSolver

    bp, base = _breakpoints(result)
    return PriceSolver(base, bp.histogram, bp.window).solve(budget)


def _scorer(model: Any, tracking_uri: str | None) -> Any:
    from features.model_io import load_model
    from features.registry import resolve_tracking_uri
    from features.scoring import ArmScorer

    if isinstance(model, TrainResult):
        return ArmScorer(model.spec)
    if isinstance(model, ArmScorer):
        return model
    if str(model).startswith(("models:/", "runs:/")):
        import mlflow

        mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri).tracking_uri)
    return load_model(str(model))


def score(model: Any, frame: pd.DataFrame, tracking_uri: str | None = None) -> pd.DataFrame:
    """``uplift_<arm>`` per treatment arm and ``recommended_arm`` for each row of `frame` (feature columns).

    `model`: a result of `train`, a model URI (``models:/offerlift@champion``) or a local model folder.

    >>> score(res.model_uri, exp.features.head())    # doctest: +SKIP
    """
    from features.model_io import score_frame

    return score_frame(_scorer(model, tracking_uri), frame)


def score_file(model_uri: str, data: str | Path, out: str | Path | None = None):
    """Score a CSV or Parquet file with a registered model: ``uplift_<arm>`` per treatment arm and
    ``recommended_arm``, one row per input row in input order; written to `out` (CSV) when given."""
    from features.model_io import load_model, score_frame
    from features.tables import read_table

    scorer = load_model(model_uri)
    frame = read_table(data)
    scored = score_frame(scorer, frame)
    if out is not None:
        scored.to_csv(out, index=False)
        log.info("wrote %d scored rows to %s", len(scored), out)
    return scored


def batch(model: Any, customers: str | Path, out: str | Path, budget: float | None = None, seed: int = 0) -> dict:
    """Decisions for every customer of a Parquet file, streamed in chunks with a progress bar (`serving.batch`)."""
    from serving.batch import run_batch

    summary = run_batch(_scorer(model, None), customers, out, budget=budget, seed=seed)
    log.info("batch decisions written to %s", out)
    return summary


# --- the closed loop ---------------------------------------------------------------------------------------------


def run_loop(
    rounds: int = 6,
    customers: int = 10_000,
    seed: int = 0,
    learner: str = "s",
    workdir: str | Path = "outputs/loop",
    tracking_uri: str | None = None,
    params: dict[str, Any] | None = None,
    n_boot: int = 500,
) -> dict[str, Any]:
    """Run the closed loop on the simulated world (`offerlift.loop`); one dict per round in ``rounds``.

    >>> result = run_loop(rounds=3, customers=3000)   # doctest: +SKIP
    >>> loop_table(result)                            # doctest: +SKIP
    """
    from offerlift.loop import LoopConfig
    from offerlift.loop import run_loop as _run_loop

    cfg = LoopConfig(
        rounds=rounds,
        customers=customers,
        seed=seed,
        workdir=Path(workdir),
        n_boot=n_boot,
        train=_loop_train_config(learner, seed, params),
    )
    log.info(
        "closed loop: %d rounds x %d customers; decision log, store and A/B reports under %s",
        rounds,
        customers,
        cfg.workdir,
    )
    result = _run_loop(cfg, tracking_uri=tracking_uri)
    log.info("loop done in %.0fs; last A/B report: %s", result["seconds"], result["report"])
    return result


def loop(
    rounds: int = 6,
    customers: int = 10_000,
    seed: int = 0,
    learner: str = "s",
    workdir: str | Path = "outputs/loop",
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """The CLI's name for `run_loop` (default model settings)."""
    return run_loop(rounds, customers, seed, learner, workdir, tracking_uri)


def loop_table(result: dict[str, Any]) -> pd.DataFrame:
    """The loop's rounds as a table: values against the oracle, the A/B lift with its CI, promotions."""
    r = pd.DataFrame(result["rounds"])
    r["ab_ci_low"] = [c[0] for c in r["ab_lift_ci"]]
    r["ab_ci_high"] = [c[1] for c in r["ab_lift_ci"]]
    cols = ["round", "model_version", "policy_value", "greedy_value", "oracle_value", "share_of_oracle", "ab_lift"]
    cols += ["ab_ci_low", "ab_ci_high", "true_lift", "promoted"]
    return r[[c for c in cols if c in r]]


# --- A/B reports ---------------------------------------------------------------------------------------------------


@dataclass
class Campaign:
    """A played campaign: one row per customer (arm, grp, buy, spend, redeem, pre_spend, true incremental
    profit of the arm), the catalog, the holdout share and the true mean lift of the treated."""

    table: pd.DataFrame
    catalog: Any
    holdout: float
    name: str
    true_lift: float


def simulate_campaign(
    customers: int = 5000, holdout: float = 0.1, model: Any = None, seed: int = 0, name: str = "campaign"
) -> Campaign:
    """One campaign on the simulated world: a holdout gets nothing, the others a random reachable arm, or the
    model's best arm when `model` (a result of `train` on ``load("simulated")`` or a model URI) is given."""
    from features.build import build_features, latest_features
    from features.simworld import SimWorld
    from serving.policy import holdout_unit
    from training.evaluate import greedy_arms

    world = SimWorld.default(n_customers=customers, seed=seed)
    ids = world.customers["customer_id"].astype(str).to_numpy()
    rng, eligible = np.random.default_rng(seed), world.eligible()
    if model is None:
        ranks = (rng.random(len(ids)) * (eligible[:, 1:].sum(axis=1))).astype(int)
        arm = 1 + np.argmax(np.cumsum(eligible[:, 1:], axis=1) > ranks[:, None], axis=1)
        arm = np.where(eligible[:, 1:].any(axis=1), arm, 0)
    else:
        events = world.history_events()
        frame = latest_features(events, world.customers, at=0.0).loc[world.customers["customer_id"]]
        scorer = _scorer(model, None)
        arm = greedy_arms(scorer.incremental_profit(scorer.features.encode(frame)), eligible)
    grp = np.where(holdout_unit(ids, name) < holdout, "holdout", "exploit")
    arm = np.where(grp == "holdout", 0, arm)
    arms = np.asarray(world.arm_ids, dtype=object)[arm]
    decisions = pd.DataFrame({"unit_id": ids, "customer_id": ids, "time": 0.0, "arm": arms})
    truth = world.truth(np.arange(len(ids)), 0.0).values(arm)
    out = world.play(decisions, seed=seed).outcomes
    pre = build_features(world.history_events(), world.customers, decisions[["unit_id", "customer_id", "time"]])
    table = decisions.assign(
        grp=grp,
        buy=out["buy"].to_numpy(),
        spend=out["spend"].to_numpy(),
        redeem=out["redeem"].to_numpy(),
        pre_spend=pre["spend_30d"].to_numpy(),
        true_incremental_profit=truth,
    )
    treated = grp != "holdout"
    log.info(
        "campaign %s: %d customers, %d treated, true lift %.4f per treated customer",
        name,
        len(ids),
        treated.sum(),
        truth[treated].mean(),
    )
    return Campaign(table, world.catalog, holdout, name, float(truth[treated].mean()))


def ab_report(
    data: Campaign | pd.DataFrame,
    catalog: Any = None,
    holdout: float | None = None,
    covariate: str | None = "pre_spend",
    name: str | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """The A/B report (`training.ab_report`): lift of the treated over the holdout with CIs, per arm, CUPED on
    `covariate`, sample-ratio check. Written as JSON and HTML under `out` when given.

    >>> report = ab_report(simulate_campaign(5000))   # doctest: +SKIP
    """
    from training.ab_report import ab_report as _ab_report
    from training.ab_report import write_report

    if isinstance(data, Campaign):
        table, catalog, holdout, name = data.table, data.catalog, data.holdout, name or data.name
    else:
        table = data
    if catalog is None or holdout is None:
        raise ConfigError("ab_report of a decision table needs the catalog and the configured holdout share")
    cov = covariate if covariate is not None and covariate in table else None
    report = _ab_report(table, catalog, holdout, campaign=name or "campaign", covariate=cov)
    if out is not None:
        paths = write_report(report, out)
        log.info("A/B report written to %s and %s", paths["json"], paths["html"])
    return report


def ab_table(report: dict[str, Any]) -> pd.DataFrame:
    """The report as a table: the holdout, all treated and each arm, with profit per customer and the lift (CI)."""
    rows = []
    for label, g in report["groups"].items():
        lift = report["lift"] if label == "treated" else {}
        rows.append({"group": "all treated" if label == "treated" else label, **g, **_lift(lift)})
    for a in report["per_arm"]:
        g = {k: v for k, v in a.items() if k not in ("arm", "lift_vs_holdout")}
        rows.append({"group": a["arm"], **g, **_lift(a["lift_vs_holdout"])})
    return pd.DataFrame(rows)


def _lift(d: dict[str, Any]) -> dict[str, float]:
    return {"lift": d.get("estimate", np.nan), "ci_low": d.get("ci_low", np.nan), "ci_high": d.get("ci_high", np.nan)}


def _loop_train_config(learner: str, seed: int, params: dict[str, Any] | None) -> Any:
    """The S-learner uses the configuration measured best on the simulated world; others their defaults."""
    from training.train import TrainConfig

    if learner == "s":
        overrides: dict[str, Any] = {"n_folds": 0, "seed": seed}
        if params:
            overrides["params"] = {**TrainConfig.for_simulated().params, **params}
        return TrainConfig.for_simulated(**overrides)
    return TrainConfig(learner=learner, n_folds=0, seed=seed, params=params or {})
