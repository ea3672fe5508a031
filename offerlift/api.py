"""The Python API for notebooks and scripts; the CLI calls these same functions.

    >>> import offerlift.api as ol                                  # doctest: +SKIP
    >>> cfg = ol.setup_notebook()        # progress messages, inline figures, the small-data switch
    >>> exp = ol.sample(ol.load("hillstrom", outcome="visit"), cfg.rows)
    >>> res = ol.train(exp, learner="s", params=cfg.params)      # held-out evaluation, registered in MLflow
    >>> ol.plot_qini(res)                                         # Qini curves with random line and band
    >>> ol.policy_table(res)                                      # policy value vs every single arm, with CIs
    >>> ol.score(res.model_uri, exp.features.head())              # uplift per arm and the recommended arm

Every number comes from held-out rows. The functions live in `offerlift.modeling` (train, register, compare),
`offerlift.analysis` (tables of a result, budgets), `offerlift.score` (scoring, batch), `offerlift.campaigns` (A/B
reports) and `offerlift.plots` (figures); this module re-exports them and holds set-up, data loading and the loop.
The feedback loop on the service's own decision log (``ol.record_outcomes``, ``ol.join_outcomes``,
``ol.campaign_report``, ``ol.evaluate_policy``, ``ol.retrain``, ``ol.promote_challenger``, ``ol.promote_version``,
``ol.rollback``) is in `offerlift.feedback`, `offerlift.lifecycle` and `offerlift.promotion`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.analysis import (  # noqa: F401  (re-exported: ol.policy_table etc.)
    allocate_budget,
    best_offer_by_segment,
    budget_curve,
    policy_table,
    recommendations,
    uplift_by_arm,
)
from offerlift.campaigns import Campaign, ab_report, ab_table, simulate_campaign  # noqa: F401  (re-exported)
from offerlift.datasets import DATASETS, load_dataset
from offerlift.features.errors import ConfigError, DataNotFoundError
from offerlift.features.experiment import Experiment
from offerlift.feedback import campaign_report, join_outcomes, record_outcomes  # noqa: F401  (re-exported)
from offerlift.lifecycle import PolicySettings, evaluate_policy, retrain  # noqa: F401  (re-exported)
from offerlift.modeling import Trained, compare_learners, register, train  # noqa: F401  (re-exported)
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
from offerlift.promotion import promote_challenger, promote_version, rollback  # noqa: F401  (re-exported)
from offerlift.score import as_scorer, batch, score, score_file  # noqa: F401  (re-exported)

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
    for name in ("offerlift",):
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if not getattr(h, "_offerlift", False)]
        handler._offerlift = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def setup_notebook(small: bool | None = None, outputs: str | Path | None = None) -> NotebookSettings:
    """Progress messages on, figures inline, and the sizes to use (small when `small` or ``$OFFERLIFT_SMALL``).

    Figures and reports go to `outputs`, else ``$OFFERLIFT_OUTPUTS``, else ``outputs/notebooks`` of the offerlift
    home. A notebook opened in the repository's ``notebooks/`` folder, with neither ``$OFFERLIFT_HOME`` nor
    ``$MLFLOW_TRACKING_URI`` set, gets the repository as its home: its runs go to the repository's (ignored)
    ``mlruns/``, never to ``notebooks/mlruns/``.

    >>> cfg = setup_notebook()       # doctest: +SKIP
    >>> cfg.small, cfg.rows          # doctest: +SKIP
    (True, 8000)
    """
    from offerlift.models.registry import HOME_ENV, REPO_ROOT, offerlift_home
    from offerlift.plots import enable_inline

    show_progress()
    enable_inline()
    small = small_data() if small is None else small
    in_notebooks = Path.cwd().resolve() == (REPO_ROOT / "notebooks").resolve()
    if in_notebooks and not os.environ.get(HOME_ENV) and not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ[HOME_ENV] = str(REPO_ROOT)
    out = Path(outputs or os.environ.get(OUTPUTS_ENV) or offerlift_home() / "outputs" / "notebooks")
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
    from offerlift.training.tune import subset_experiment

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


def dataset_summary(
    name: str, path: str | Path | None = None, n_customers: int = 100_000, seed: int = 0, world: str | None = None
) -> dict:
    """The summary of one data set (units, arms, control arm, main outcome per arm, exclusions); on the simulated
    one also ``world``: the preset's name or the spec file (``world``: a preset name or a spec file; None: the
    default world)."""
    if name != "simulated":
        return load(name, path=path).summary()
    from offerlift.simworld.config import world_label

    exp = load(name, path=path, n_customers=n_customers, seed=seed, world=world)
    return {**exp.summary(), "world": world_label(exp.meta["spec"])}


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
    from offerlift.features.byo import load_experiment_file as _load

    return _load(path, treatment=treatment, control=control, outcome=outcome, value=value, cost=cost, features=features)


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
    world: str | Path | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Run the closed loop on the simulated world (`offerlift.loop`); one dict per round in ``rounds``.

    ``world`` is a preset name (``default``, ``low-signal``) or a spec file; ``progress`` gets one line per round.

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
        world=world,
    )
    log.info(
        "closed loop: %d rounds x %d customers; decision log, store and A/B reports under %s",
        rounds,
        customers,
        cfg.workdir,
    )
    result = _run_loop(cfg, tracking_uri=tracking_uri, progress=progress)
    log.info("loop done in %.0fs; last A/B report: %s", result["seconds"], result["report"])
    return result


#: The CLI's name for `run_loop`.
loop = run_loop


def loop_table(result: dict[str, Any]) -> pd.DataFrame:
    """The loop's rounds as a table: values against the best single arm, the feature ceiling and the oracle, the
    A/B lift with its CI, promotions."""
    r = pd.DataFrame(result["rounds"])
    r["ab_ci_low"] = [c[0] for c in r["ab_lift_ci"]]
    r["ab_ci_high"] = [c[1] for c in r["ab_lift_ci"]]
    cols = ["round", "model_version", "challenger_version", "policy_value", "greedy_value", "best_single_arm_value"]
    cols += ["ceiling_value", "oracle_value", "share_of_ceiling", "share_of_oracle", "ab_lift"]
    cols += ["ab_ci_low", "ab_ci_high", "true_lift", "promoted"]
    return r[[c for c in cols if c in r]]


def _loop_train_config(learner: str, seed: int, params: dict[str, Any] | None) -> Any:
    """The S-learner uses the configuration measured best on the simulated world; others their defaults."""
    from offerlift.training.train import TrainConfig

    if learner == "s":
        overrides: dict[str, Any] = {"n_folds": 0, "seed": seed}
        if params:
            overrides["params"] = {**TrainConfig.for_simulated().params, **params}
        return TrainConfig.for_simulated(**overrides)
    return TrainConfig(learner=learner, n_folds=0, seed=seed, params=params or {})
