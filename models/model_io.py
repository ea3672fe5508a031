"""Saving and loading trained models as MLflow models, without importing `training/`.

A model is a directory with ``scorer.json``: the `offerlift.models.scoring` spec (format, arms, catalog, feature spec,
outcome models with their LightGBM model strings, metadata). It is logged as an MLflow pyfunc model whose python
class lives in `offerlift.models.pyfunc`; `serving/` loads the spec itself, and importing this module does not import
MLflow (the functions that need it import it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.errors import ModelError
from offerlift.models.scoring import ArmScorer

log = logging.getLogger(__name__)

SCORER_FILE = "scorer.json"


def write_scorer(spec: Mapping[str, Any], directory: str | Path) -> Path:
    """Write a scorer spec to ``directory/scorer.json`` (checks it loads first)."""
    ArmScorer(spec)
    path = Path(directory) / SCORER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    return path


def read_scorer(path: str | Path) -> ArmScorer:
    """An ArmScorer from a scorer.json file or a directory holding one (searched recursively)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.rglob(SCORER_FILE))
        if not found:
            raise ModelError(f"no {SCORER_FILE} under {str(path)!r}")
        path = found[0]
    try:
        return ArmScorer(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read model {str(path)!r}: {exc}") from exc


def __getattr__(name: str) -> Any:
    """``OfferliftModel`` (models logged before it moved to `offerlift.models.pyfunc` name it here), loaded lazily:
    importing this module must not import MLflow."""
    if name == "OfferliftModel":
        from offerlift.models.pyfunc import OfferliftModel

        return OfferliftModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def score_frame(scorer: ArmScorer, frame: pd.DataFrame) -> pd.DataFrame:
    """Incremental profit per treatment arm and the recommended arm (control when none is positive)."""
    incr = scorer.incremental_profit(scorer.features.encode(frame))
    out = pd.DataFrame(incr[:, 1:], columns=[f"uplift_{a}" for a in scorer.arms[1:]], index=frame.index)
    best = np.argmax(incr, axis=1)
    best = np.where(incr[np.arange(len(incr)), best] > 0, best, 0)
    out["recommended_arm"] = np.asarray(scorer.arms, dtype=object)[best]
    return out


def log_scorer_model(spec: Mapping[str, Any], workdir: str | Path, registered_name: str | None) -> Any:
    """Log the scorer as an MLflow pyfunc model in the active run; returns MLflow's ModelInfo."""
    import mlflow

    from offerlift.models.pyfunc import OfferliftModel

    path = write_scorer(spec, workdir)
    reqs = [f"{p}=={v}" for p, v in _versions(("lightgbm", "numpy", "pandas", "mlflow", "pyyaml")).items()]
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=OfferliftModel(),
        artifacts={"scorer": str(path)},
        registered_model_name=registered_name,
        pip_requirements=reqs,
        code_paths=None,
    )


def load_model(uri: str) -> ArmScorer:
    """Load a registered or logged model (``models:/offerlift@champion``, ``runs:/…``, or a local path)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    local = Path(uri)
    if local.exists():
        return read_scorer(local)
    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except (MlflowException, OSError) as exc:
        raise ModelError(f"cannot load model {uri!r}: {exc}") from exc
    return read_scorer(path)


def _versions(packages: tuple[str, ...]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            continue
    return out
