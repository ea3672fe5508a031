"""Saving and loading trained models as MLflow models, without importing `training/`.

A model is a directory with ``scorer.json``: the `offerlift.models.scoring` spec (format, arms, catalog, feature spec,
outcome models with their LightGBM model strings, metadata). It is logged as a self-contained MLflow pyfunc model
(`log_scorer_model`): offerlift's own code reads ``scorer.json`` directly (`load_model`), and plain
``mlflow.pyfunc.load_model`` works in an environment with only the model's requirements.
Models logged by older versions pickled `offerlift.models.pyfunc.OfferliftModel` and still load through it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from offerlift.features.errors import DataError, ModelError
from offerlift.models.scoring import ArmScorer, FeatureSpec, score_frame

__all__ = ["ArmScorer", "load_model", "log_scorer_model", "read_scorer", "score_frame", "write_scorer"]

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


#: The package name of the scorer runtime's copy inside a logged model, and the modules copied into it.
VENDORED = "offerlift_scorer"
_VENDORED_MODULES = {
    "offerlift.features.errors": "errors",
    "offerlift.features.catalog": "catalog",
    "offerlift.models.scoring": "scoring",
}
#: What the logged model needs installed (pinned to the versions it was logged with).
MODEL_REQUIREMENTS = ("mlflow", "lightgbm", "numpy", "pandas", "pyyaml")
_OUR_IMPORT = re.compile(r"^\s*(from|import)\s+offerlift(\.|\s|$)", re.M)


def vendor_scorer(directory: str | Path) -> Path:
    """Copy the scorer runtime (`offerlift.models.scoring` and the two feature modules it imports) into
    ``directory/offerlift_scorer/``, its imports renamed to that package; returns the package folder.

    ModelError if a copied module still imports offerlift (the copy would not load without offerlift).
    """
    import importlib

    package = Path(directory) / VENDORED
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(
        '"""A copy of offerlift\'s scorer runtime, logged with the model so that it loads without offerlift."""\n'
    )
    for module, name in _VENDORED_MODULES.items():
        text = Path(importlib.import_module(module).__file__ or "").read_text()
        for source, target in _VENDORED_MODULES.items():
            text = re.sub(rf"\b{re.escape(source)}\b", f"{VENDORED}.{target}", text)
        if _OUR_IMPORT.search(text):
            raise ModelError(f"{module} imports offerlift modules that the logged model does not carry")
        (package / f"{name}.py").write_text(text)
    return package


def input_example(spec: Mapping[str, Any], rows: int = 2) -> pd.DataFrame:
    """A few made-up rows of the model's feature columns (numbers 0, each categorical's first levels): the
    logged model's input example, from which MLflow infers its signature. No training data leaves with it."""
    features = FeatureSpec.from_dict(spec["feature_spec"])
    data: dict[str, Any] = {}
    for col in features.columns:
        levels = features.categories.get(col)
        if levels:
            data[col] = [levels[i % len(levels)] for i in range(rows)]
        else:
            data[col] = [float(i) for i in range(rows)]
    return pd.DataFrame(data)


def log_scorer_model(spec: Mapping[str, Any], workdir: str | Path, registered_name: str | None) -> Any:
    """Log the scorer as a self-contained MLflow pyfunc model in the active run; returns MLflow's ModelInfo.

    The model is logged from code (`offerlift.models.pyfunc_model`), with a copy of the scorer runtime as
    ``code/offerlift_scorer`` (`vendor_scorer`), pinned requirements (`MODEL_REQUIREMENTS`), an input example and
    the signature MLflow infers from it: ``mlflow.pyfunc.load_model`` needs nothing of offerlift installed.
    """
    import mlflow

    workdir = Path(workdir)
    path = write_scorer(spec, workdir)
    code = vendor_scorer(workdir / "code")
    reqs = [f"{p}=={v}" for p, v in _versions(MODEL_REQUIREMENTS).items()]
    with _importable(code.parent):  # MLflow runs the model's code once while logging, before code/ is on sys.path
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"scorer": str(path)},
            registered_model_name=registered_name,
            pip_requirements=reqs,
            code_paths=[str(code)],
            input_example=input_example(spec),
        )


@contextlib.contextmanager
def _importable(folder: Path) -> Iterator[None]:
    """`folder` first on sys.path for the block; the vendored modules are forgotten afterwards."""
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m == VENDORED or m.startswith(f"{VENDORED}.")]:
            del sys.modules[name]


def check_scoring_input(scorer: ArmScorer, frame: pd.DataFrame, source: str) -> None:
    """Refuse text in a numeric feature column (DataError naming the file, the column and the first rows) and say
    which categories the model never saw (a warning naming them; they are scored as missing values)."""
    features = scorer.features
    missing = [c for c in features.columns if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: the model needs the columns {missing}, which the file lacks")
    for col in features.columns:
        s = frame[col]
        levels = features.categories.get(col)
        if levels is None:
            if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
                continue
            bad = (pd.to_numeric(s, errors="coerce").isna() & s.notna()).to_numpy()
            if bad.any():
                rows = [int(r) for r in frame.index[bad][:5]]
                raise DataError(
                    f"{source}: column {col!r} must hold numbers; data rows {rows} hold text such as "
                    f"{str(s[bad].iloc[0])!r} ({int(bad.sum())} rows in all)"
                )
            continue
        text = s.astype("string")
        unseen = (~text.isin(levels) & s.notna()).to_numpy()
        if unseen.any():
            values = sorted({str(v) for v in s[unseen].unique()})[:5]
            rows = [int(r) for r in frame.index[unseen][:5]]
            log.warning(
                "%s: column %r has categories the model never saw: %s (data rows %s, %d rows in all); they are "
                "scored as missing values; the model knows %s",
                source, col, values, rows, int(unseen.sum()), list(levels),
            )  # fmt: skip


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
