"""Scoring with a trained or registered model: uplift per arm, and batch decisions for a customer file.

Re-exported by `offerlift.api` (``ol.score``, ``ol.score_file``, ``ol.batch``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from offerlift.training.train import TrainResult

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def as_scorer(model: Any, tracking_uri: str | None = None) -> Any:
    """An `ArmScorer` from a result of `train`, a scorer, a model URI (``models:/...``, ``runs:/...``) or a folder."""
    from offerlift.models.model_io import load_model
    from offerlift.models.registry import resolve_tracking_uri
    from offerlift.models.scoring import ArmScorer

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
    from offerlift.models.model_io import score_frame

    return score_frame(as_scorer(model, tracking_uri), frame)


def score_file(model_uri: str, data: str | Path, out: str | Path | None = None):
    """Score a CSV or Parquet file with a registered model: ``uplift_<arm>`` per treatment arm and
    ``recommended_arm``, one row per input row in input order; written to `out` (CSV) when given."""
    from offerlift.features.tables import read_table
    from offerlift.models.model_io import check_scoring_input, load_model, score_frame

    scorer = load_model(model_uri)
    frame = read_table(data)
    check_scoring_input(scorer, frame, repr(str(data)))
    scored = score_frame(scorer, frame)
    if out is not None:
        scored.to_csv(out, index=False)
        log.info("wrote %d scored rows to %s", len(scored), out)
    return scored


def batch(model: Any, customers: str | Path, out: str | Path, budget: float | None = None, seed: int = 0) -> dict:
    """Decisions for every customer of a Parquet file, streamed in chunks with a progress bar
    (`offerlift.serving.batch`)."""
    from offerlift.serving.batch import run_batch

    summary = run_batch(as_scorer(model, None), customers, out, budget=budget, seed=seed)
    log.info("batch decisions written to %s", out)
    return summary
