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


def main_job(n_customers: int = 100_000, seed: int = 0) -> dict[str, Any]:
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
