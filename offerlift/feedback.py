"""The feedback loop on the service's own decision log, first half: outcomes in, the attribution join, the A/B report.

Every function takes the decision log (a `DecisionLog`, a SQLAlchemy URL, or None for the service configuration's
``decision_log_url``) and is safe to repeat: a second call with the same data changes nothing.

- `record_outcomes(path)`: outcome events from a CSV or Parquet file (`offerlift.features.outcome_file`), stored
  idempotently by event id, with the counts new / duplicate / unattributed / late;
- `join_outcomes()`: the attribution join of every decision whose window has closed, kept in the log;
- `campaign_report(campaign, start, end)`: the A/B report of a campaign and period from the log
  (`offerlift.training.ab_report`), written as HTML and JSON and logged to MLflow once per distinct content.

The CLI commands ``offerlift outcomes``, ``join`` and ``report`` call these; the second half (off-policy
evaluation, retraining, promotion) is in `offerlift.lifecycle`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError, DataError
from offerlift.models.registry import RegistrySettings
from offerlift.serving.decision_log import DecisionLog
from offerlift.serving.feedback_log import HOUR, ingest_outcomes, join, joined_decisions
from offerlift.serving.settings import ServeSettings, load_settings

logger = logging.getLogger(__name__)

#: The attribution window of a decision unless told otherwise (a week, as the simulated world's).
DEFAULT_WINDOW_HOURS = 168.0
#: The pre-decision covariate of the report's CUPED adjustment, when the decisions' feature snapshots have it.
DEFAULT_COVARIATE = "spend_30d"

LogLike = DecisionLog | str | None


@dataclass(frozen=True)
class LogContext:
    """The decision log and the service settings it belongs to (registry, holdout share, campaign)."""

    log: DecisionLog
    settings: ServeSettings
    owned: bool

    @property
    def registry(self) -> RegistrySettings:
        """Where the models live."""
        return self.settings.registry_settings()

    def close(self) -> None:
        """Dispose of the log's connections when this context opened it."""
        if self.owned:
            self.log.dispose()


def service_settings(config: str | Path | None = None) -> ServeSettings:
    """The service's validated settings (its YAML, ``--config`` or ``$OFFERLIFT_CONFIG``), read for the log and
    the registry only: no API key is needed to read a log."""
    return load_settings(config, overrides={"insecure": True})


def open_log(log_: LogLike = None, config: str | Path | None = None) -> LogContext:
    """The decision log given, or the one the service configuration names."""
    settings = service_settings(config)
    if isinstance(log_, DecisionLog):
        return LogContext(log_, settings, owned=False)
    url = log_ or settings.decision_log_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            raise ConfigError(
                f"no decision log at {str(path)!r} (from {'--log' if log_ else 'the service configuration'}); "
                "start the service (`offerlift serve`) or pass --log URL"
            )
    return LogContext(DecisionLog(url), settings, owned=True)


def parse_time(value: float | str | datetime | None, what: str) -> float | None:
    """Unix seconds from a number, an ISO 8601 text (naive = UTC) or a datetime; None stays None."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            return float(value)
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(f"{what}: expected unix seconds or an ISO 8601 time, got {value!r}") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def iso(ts: float | None) -> str | None:
    """An ISO 8601 UTC time (minutes) of unix seconds."""
    if ts is None or not math.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def record_outcomes(
    path: str | Path,
    log: LogLike = None,
    window_hours: float = DEFAULT_WINDOW_HOURS,
    config: str | Path | None = None,
) -> dict[str, Any]:
    """Store the outcome events of a file (see the module doc); returns the counts."""
    from offerlift.features.outcome_file import read_outcome_file

    events = read_outcome_file(path)
    ctx = open_log(log, config)
    try:
        counts = ingest_outcomes(ctx.log, events, str(path), window_hours * HOUR)
    finally:
        ctx.close()
    return counts.to_dict()


def join_outcomes(
    log: LogLike = None,
    window_hours: float = DEFAULT_WINDOW_HOURS,
    as_of: float | str | None = None,
    config: str | Path | None = None,
) -> dict[str, Any]:
    """The attribution join of every decision whose window closed by `as_of` (default now), kept in the log."""
    ctx = open_log(log, config)
    try:
        return join(ctx.log, window_hours * HOUR, parse_time(as_of, "as_of")).to_dict()
    finally:
        ctx.close()


# --- the A/B report ------------------------------------------------------------------------------------------


def _campaign_of(campaign: str | None, ctx: LogContext) -> str:
    if campaign is not None:
        return campaign
    from offerlift.serving.feedback_log import campaigns

    names = campaigns(ctx.log)["campaign"].tolist()
    if len(names) == 1:
        return str(names[0])
    raise ConfigError(f"the decision log holds {len(names)} campaigns {names}; choose one with --campaign")


def model_catalog(registry: RegistrySettings, versions: list[str]) -> Catalog:
    """The catalog of the model version that made most of the decisions (models carry their catalog)."""
    import mlflow

    from offerlift.models.model_io import load_model

    if not versions:
        raise DataError("no decisions to take a catalog from")
    version = pd.Series(versions).value_counts().index[0]
    mlflow.set_tracking_uri(registry.tracking_uri)
    return load_model(f"models:/{registry.model_name}/{version}").catalog


def arm_probabilities(frame: pd.DataFrame, catalog: Catalog) -> np.ndarray | None:
    """(n, K) the treated policy's logged probability of each arm (column ``arm_probs``: JSON {arm: p}), or None
    when some decision lacks it (logged by an older version)."""
    if "arm_probs" not in frame or frame["arm_probs"].isna().any():
        return None
    ids = catalog.arm_ids
    out = np.zeros((len(frame), len(ids)))
    index = {a: j for j, a in enumerate(ids)}
    for i, text in enumerate(frame["arm_probs"].tolist()):
        for arm, p in json.loads(text).items():
            if arm not in index:
                raise DataError(f"decision {frame['decision_id'].iloc[i]!r} logged arm {arm!r}, not in the catalog")
            out[i, index[arm]] = p
    return out


def snapshot_column(frame: pd.DataFrame, column: str) -> np.ndarray | None:
    """One feature of the decisions' feature snapshots (column ``features``: JSON), or None when missing."""
    if "features" not in frame or frame["features"].isna().any():
        return None
    values = [json.loads(t).get(column) for t in frame["features"].tolist()]
    if all(v is None for v in values):
        return None
    return np.array([np.nan if v is None else float(v) for v in values])


def _fingerprint(frame: pd.DataFrame, extra: dict[str, Any]) -> str:
    cols = ["decision_id", "arm", "grp", "buy", "spend", "redeem", "window_s"]
    h = pd.util.hash_pandas_object(frame[cols], index=False).to_numpy()
    return hashlib.sha256(h.tobytes() + json.dumps(extra, sort_keys=True).encode()).hexdigest()[:16]


def campaign_report(
    campaign: str | None = None,
    start: float | str | None = None,
    end: float | str | None = None,
    log: LogLike = None,
    out: str | Path | None = None,
    catalog: Catalog | None = None,
    holdout: float | None = None,
    covariate: str | None = DEFAULT_COVARIATE,
    config: str | Path | None = None,
    log_to_mlflow: bool = True,
    level: float = 0.95,
) -> dict[str, Any]:
    """The A/B report of `campaign` over ``[start, end)`` from the joined decisions of the log.

    The catalog comes from the model that made most of the decisions (or `catalog`), the expected holdout share
    from the service configuration (or `holdout`); per-arm effects use the logged arm probabilities, CUPED the
    `covariate` of the logged feature snapshots when both are there. Written as ``ab_report.html`` and
    ``ab_report.json`` under `out` (default ``outputs/reports/<campaign>``) and, once per distinct content,
    logged to MLflow. Returns the report with ``paths`` and ``mlflow_run_id``.
    """
    from offerlift.training.ab_report import ab_report, write_report

    ctx = open_log(log, config)
    try:
        t0, t1 = parse_time(start, "start"), parse_time(end, "end")
        name = _campaign_of(campaign, ctx)
        frame, not_joined = joined_decisions(ctx.log, name, t0, t1)
        if frame.empty:
            raise DataError(
                f"no joined decisions of campaign {name!r} in the period ({not_joined} not joined yet); "
                "record outcomes and run `offerlift join` first"
            )
        cat = catalog or model_catalog(ctx.registry, frame["model_version"].astype(str).tolist())
        share = ctx.settings.policy.holdout if holdout is None else holdout
        probs = arm_probabilities(frame, cat)
        cov = snapshot_column(frame, covariate) if covariate else None
        table = frame.assign(**({covariate: cov} if cov is not None else {}))
        period = {
            "start": t0 if t0 is not None else float(frame["ts"].min()),
            "end": t1 if t1 is not None else float(frame["ts"].max()),
        }
        period.update(start_iso=iso(period["start"]), end_iso=iso(period["end"]))
        report = ab_report(
            table,
            cat,
            share,
            campaign=name,
            covariate=covariate if cov is not None else None,
            level=level,
            arm_probs=probs,
            period=period,
        )
        window = float(frame["window_s"].iloc[0]) / HOUR if frame["window_s"].nunique() == 1 else None
        report["data"] = {
            "window_hours": window,
            "open_decisions": not_joined,
            "decisions_without_probs": 0 if probs is not None else len(frame),
            "model_versions": sorted(frame["model_version"].astype(str).unique().tolist()),
        }
        key = _fingerprint(frame, {"campaign": name, "period": period, "holdout": share, "level": level})
        report["fingerprint"] = key
        folder = Path(out) if out is not None else Path("outputs") / "reports" / _safe(name)
        paths = write_report(report, folder)
        report["paths"] = {k: str(v) for k, v in paths.items()}
        report["mlflow_run_id"] = _log_report(ctx.registry, report, paths, key) if log_to_mlflow else None
        return report
    finally:
        ctx.close()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "campaign"


def find_run(registry: RegistrySettings, kind: str, key: str) -> str | None:
    """The id of an MLflow run tagged ``offerlift.kind = kind`` and ``offerlift.key = key``, or None."""
    import mlflow

    from offerlift.models.registry import activate

    activate(registry)
    runs = mlflow.search_runs(
        experiment_names=[registry.experiment],
        filter_string=f"tags.`offerlift.kind` = '{kind}' and tags.`offerlift.key` = '{key}'",
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def _log_report(registry: RegistrySettings, report: dict[str, Any], paths: dict[str, Path], key: str) -> str:
    import mlflow

    existing = find_run(registry, "ab_report", key)
    if existing is not None:
        logger.info("this report is already in MLflow (run %s); not logged again", existing)
        return existing
    tot = report["totals"]
    metrics = {
        "lift": report["lift"]["estimate"],
        "lift_ci_low": report["lift"]["ci_low"],
        "lift_ci_high": report["lift"]["ci_high"],
        "incremental_profit": tot["profit"]["estimate"],
        "incremental_profit_ci_low": tot["profit"]["ci_low"],
        "incremental_profit_ci_high": tot["profit"]["ci_high"],
        "roi": tot["roi"]["estimate"],
        "incremental_buyers": tot["buyers"]["estimate"],
        "incremental_revenue": tot["revenue"]["estimate"],
        "coupon_cost": tot["coupon_cost"],
        "contact_cost": tot["contact_cost"],
        "decisions": float(report["decisions"]),
        "srm_p_value": report["srm"]["p_value"],
    }
    tags = {"offerlift.kind": "ab_report", "offerlift.key": key, "campaign": report["campaign"]}
    with mlflow.start_run(run_name=f"ab-report-{report['campaign']}", tags=tags) as run:
        mlflow.log_params({"campaign": report["campaign"], **{k: v for k, v in report["period"].items()}})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))})
        for p in paths.values():
            mlflow.log_artifact(str(p), artifact_path="ab_report")
    logger.info("A/B report logged to MLflow (run %s)", run.info.run_id)
    return run.info.run_id
