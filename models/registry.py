"""MLflow tracking and registry settings shared by training (writes) and serving (reads).

The registry is the only handoff between training and serving. The embedded default keeps everything under
``mlruns/`` in the offerlift home (`offerlift_home`: ``$OFFERLIFT_HOME``, else the current working directory, as
MLflow's own ``./mlruns`` default): a SQLite tracking and registry database ``mlruns/mlflow.db`` and artifacts in
``mlruns/artifacts``. ``MLFLOW_TRACKING_URI`` overrides it (read once, at the edge, by `resolve_tracking_uri`); a
``sqlite:///`` URI keeps its artifacts in ``artifacts/`` next to its database file, never in the working directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from offerlift.features.errors import ModelError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent  # the source tree (tests and benchmarks); never a default home
HOME_ENV = "OFFERLIFT_HOME"
MODEL_NAME = "offerlift"
EXPERIMENT = "offerlift"
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class RegistrySettings:
    """Where runs and models live."""

    tracking_uri: str
    artifact_root: str | None = None
    model_name: str = MODEL_NAME
    experiment: str = EXPERIMENT


def offerlift_home() -> Path:
    """Where ``mlruns/`` and ``outputs/`` go by default: ``$OFFERLIFT_HOME``, else the current working directory
    (absolute, so that processes started elsewhere agree)."""
    raw = os.environ.get(HOME_ENV, "").strip()
    return (Path(raw).expanduser() if raw else Path.cwd()).resolve()


def resolve_tracking_uri(explicit: str | None = None, root: str | Path | None = None) -> RegistrySettings:
    """An explicit URI, else SQLite under an explicit `root`, else ``$MLFLOW_TRACKING_URI``, else SQLite in
    ``mlruns/`` of `offerlift_home`. A SQLite URI gets its artifact root next to its database file."""
    uri = explicit or (None if root is not None else os.environ.get("MLFLOW_TRACKING_URI"))
    if uri:
        prefix = "sqlite:///"
        if uri.startswith(prefix) and uri[len(prefix) :] not in ("", ":memory:"):
            db = Path(uri[len(prefix) :]).resolve()
            return RegistrySettings(tracking_uri=uri, artifact_root=(db.parent / "artifacts").as_uri())
        return RegistrySettings(tracking_uri=uri)
    base = Path(root) if root is not None else offerlift_home() / "mlruns"
    base.mkdir(parents=True, exist_ok=True)
    return RegistrySettings(
        tracking_uri=f"sqlite:///{base.resolve() / 'mlflow.db'}",
        artifact_root=(base.resolve() / "artifacts").as_uri(),
    )


def activate(settings: RegistrySettings) -> None:
    """Point MLflow at the settings' store and make sure the experiment exists."""
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    if mlflow.get_experiment_by_name(settings.experiment) is None:
        mlflow.create_experiment(settings.experiment, artifact_location=settings.artifact_root)
    mlflow.set_experiment(settings.experiment)


def alias_uri(settings: RegistrySettings, alias: str = CHAMPION) -> str:
    """``models:/NAME@ALIAS``."""
    return f"models:/{settings.model_name}@{alias}"


def alias_version(settings: RegistrySettings, alias: str = CHAMPION) -> str | None:
    """The model version behind an alias, or None when the alias (or the model) does not exist."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    try:
        return str(client.get_model_version_by_alias(settings.model_name, alias).version)
    except MlflowException:
        return None


def set_alias(settings: RegistrySettings, alias: str, version: str) -> None:
    """Move an alias to a model version."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    client.set_registered_model_alias(settings.model_name, alias, str(version))
    log.info("alias %s of %s now points to version %s", alias, settings.model_name, version)


def require_alias(settings: RegistrySettings, alias: str = CHAMPION) -> str:
    """The version behind an alias; ModelError says how to create one when there is none."""
    version = alias_version(settings, alias)
    if version is None:
        raise ModelError(
            f"no model {settings.model_name!r} has the alias {alias!r} in the registry at {settings.tracking_uri}; "
            f"train one first (`offerlift train ...` in this folder), or point ${HOME_ENV} or $MLFLOW_TRACKING_URI "
            "at the registry you trained into"
        )
    return version
