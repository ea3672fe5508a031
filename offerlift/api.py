"""The Python API for notebooks and scripts; the CLI calls these same functions."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from features.datasets import DATASETS, load_dataset
from features.errors import DataNotFoundError
from features.experiment import Experiment

log = logging.getLogger(__name__)


def load(name: str, path: str | Path | None = None, **options: Any) -> Experiment:
    """Load a data set (``"hillstrom"``, ``"starbucks"``, ``"simulated"``) as an Experiment.

    >>> exp = load("hillstrom")            # doctest: +SKIP
    >>> exp.summary()["rows"]              # doctest: +SKIP
    64000
    """
    return load_dataset(name, path=path, **options)


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


def train(
    experiment: Experiment,
    learner: str = "t",
    n_folds: int = 5,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    register: bool = True,
    tracking_uri: str | None = None,
):
    """Evaluate a learner on held-out folds, fit it on all units and (by default) register it in MLflow.

    >>> result = train(load("hillstrom"), learner="s")      # doctest: +SKIP
    >>> result.model_uri, result.metrics["ips_vs_control"]  # doctest: +SKIP
    """
    from features.registry import resolve_tracking_uri
    from training.train import TrainConfig, train_model

    config = TrainConfig(learner=learner, n_folds=n_folds, seed=seed, params=params or {})
    registry = resolve_tracking_uri(tracking_uri) if register else None
    return train_model(experiment, config, registry)


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


def loop(
    rounds: int = 6,
    customers: int = 10_000,
    seed: int = 0,
    learner: str = "s",
    workdir: str | Path = "outputs/loop",
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Run the closed loop on the simulated world (see `offerlift.loop`); one dict per round in ``rounds``.

    >>> result = loop(rounds=3, customers=5000)          # doctest: +SKIP
    >>> [r["share_of_oracle"] for r in result["rounds"]]  # doctest: +SKIP
    """
    from offerlift.loop import LoopConfig, run_loop
    from training.train import TrainConfig

    cfg = LoopConfig(
        rounds=rounds,
        customers=customers,
        seed=seed,
        workdir=Path(workdir),
        train=TrainConfig(learner=learner, n_folds=0, seed=seed),
    )
    return run_loop(cfg, tracking_uri=tracking_uri)
