"""Moving the ``champion`` alias: through the promotion gate, by hand, and back.

- `promote_challenger()`: the gate (`offerlift.training.promote.judge` and `promote_if_better`, the loop's
  own) judges the challenger against the champion on the judging customers' logged decisions
  (`offerlift.logged_data`), moves the alias only when the one-sided bound clears the gate, and logs the verdict
  with its evidence to MLflow. The same challenger, champion and data give the same verdict: a second call
  returns it without judging or logging again.
- `promote_version(N)`: a manual promotion, logged to MLflow with the reason and, when the log has the data,
  the off-policy evidence (version N against the champion it replaces, `offerlift.lifecycle.evaluate_policy`).
- `rollback()`: the champion before the current one becomes champion again, logged likewise.

Every move of the alias by these functions is recorded in the registered model's tag
``offerlift.champion_history`` (a JSON list of versions, latest last), which `rollback` walks back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from offerlift.features.errors import ConfigError, DataError, ModelError
from offerlift.feedback import LogLike, find_run, open_log, parse_time
from offerlift.lifecycle import load_version
from offerlift.logged_data import load_units, model_frame
from offerlift.models.registry import CHALLENGER, CHAMPION, RegistrySettings, activate, alias_version, set_alias

logger = logging.getLogger(__name__)

HISTORY_TAG = "offerlift.champion_history"


def champion_history(registry: RegistrySettings) -> list[str]:
    """The versions that were champion, oldest first (the current champion last)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=registry.tracking_uri)
    try:
        tags = client.get_registered_model(registry.model_name).tags or {}
    except Exception:
        return []
    history = json.loads(tags.get(HISTORY_TAG, "[]"))
    current = alias_version(registry, CHAMPION)
    if current is not None and (not history or history[-1] != current):
        history.append(current)  # the alias was moved by something else (train, MLflow's client)
    return [str(v) for v in history]


def _move(registry: RegistrySettings, version: str, history: list[str]) -> None:
    import mlflow

    set_alias(registry, CHAMPION, version)
    client = mlflow.MlflowClient(tracking_uri=registry.tracking_uri)
    client.set_registered_model_tag(registry.model_name, HISTORY_TAG, json.dumps(history[-50:]))


def _log_move(registry: RegistrySettings, kind: str, params: dict[str, Any], evidence: dict[str, Any]) -> str:
    import mlflow

    activate(registry)
    with mlflow.start_run(run_name=f"{kind}-v{params['to_version']}", tags={"offerlift.kind": kind}) as run:
        mlflow.log_params({k: v for k, v in params.items() if v is not None})
        summary = evidence.get("summary") or {}
        metrics = {k: summary.get(k) for k in ("difference", "ci_low", "ci_high")}
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "evidence.json"
            path.write_text(json.dumps({"params": params, "evidence": evidence}, indent=2, default=str))
            mlflow.log_artifact(str(path))
    return run.info.run_id


def promote_challenger(
    log: LogLike = None,
    challenger: str | int = CHALLENGER,
    campaign: str | None = None,
    start: float | str | None = None,
    end: float | str | None = None,
    min_gain: float = 0.0,
    config: str | Path | None = None,
) -> dict[str, Any]:
    """Judge the challenger against the champion through the gate and promote it when it is better beyond noise
    (see the module doc). Returns promoted, versions, the gate's evidence and the MLflow run."""
    from dataclasses import asdict, replace

    import numpy as np

    from offerlift.training.promote import GateConfig, judge, promote_if_better

    ctx = open_log(log, config)
    try:
        reg = ctx.registry
        champ_version, champion = load_version(reg, CHAMPION)
        chal_version, chal = load_version(reg, challenger)
        base = {"challenger_version": chal_version, "champion_version": champ_version}
        if chal_version == champ_version:
            return {**base, "promoted": False, "changed": False, "reason": "the challenger is the champion already"}
        units = load_units(ctx.log, champion.catalog, campaign, parse_time(start, "start"), parse_time(end, "end"))
        part = units.split("judge")
        if len(part) < 50:
            raise DataError(f"only {len(part)} joined decisions of judging customers; the gate needs at least 50")
        gate = replace(GateConfig(), min_gain=min_gain)
        key = hashlib.sha256(
            json.dumps([part.fingerprint(), chal_version, champ_version, repr(gate)]).encode()
        ).hexdigest()[:16]
        done = find_run(reg, "promotion-gate", key)
        if done is not None:
            return {**base, **_verdict_of(reg, done), "changed": False, "mlflow_run_id": done}
        feats = model_frame(part.features.reindex(columns=list(champion.features.columns)))
        evidence = judge(
            champion,
            chal,
            feats,
            part.arms,
            part.rewards,
            part.propensities,
            part.allowed,
            gate=gate,
            customer_ids=part.customer_ids,
        )
        history = champion_history(reg)
        verdict = promote_if_better(reg, chal_version, champ_version, evidence, len(part))
        run_id = _tag_gate_run(reg, chal_version, key)
        if verdict.promoted:
            _move(reg, chal_version, [*history, chal_version])
        plain = {k: v for k, v in asdict(verdict).items()}
        plain.update(units_judged=len(part), customers_judged=int(np.unique(part.customer_ids).size))
        return {**base, "promoted": verdict.promoted, "changed": verdict.promoted, "verdict": plain,
                "mlflow_run_id": run_id}  # fmt: skip
    finally:
        ctx.close()


def _tag_gate_run(registry: RegistrySettings, version: str, key: str) -> str | None:
    """Tag the run `promote_if_better` just logged (its latest ``promotion-v<version>`` run) with our key."""
    import mlflow

    runs = mlflow.search_runs(
        experiment_names=[registry.experiment],
        filter_string=f"attributes.run_name = 'promotion-v{version}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs:
        return None
    client = mlflow.MlflowClient(tracking_uri=registry.tracking_uri)
    client.set_tag(runs[0].info.run_id, "offerlift.kind", "promotion-gate")
    client.set_tag(runs[0].info.run_id, "offerlift.key", key)
    return runs[0].info.run_id


def _verdict_of(registry: RegistrySettings, run_id: str) -> dict[str, Any]:
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=registry.tracking_uri).get_run(run_id)
    m = run.data.metrics
    return {
        "promoted": bool(m.get("promoted", 0.0)),
        "verdict": {k: m[k] for k in ("diff", "ci_low", "ci_high", "se", "mde", "units") if k in m},
        "reason": "already judged on this data (verdict from MLflow)",
    }


def promote_version(
    version: str | int,
    reason: str = "manual promotion",
    log: LogLike = None,
    config: str | Path | None = None,
    evidence: bool = True,
) -> dict[str, Any]:
    """Make model `version` the champion by hand; logged to MLflow with the reason and the off-policy evidence
    against the champion it replaces (when the log has joined decisions). A no-op when it is the champion."""
    from offerlift.lifecycle import evaluate_policy

    reg = _registry(config)
    new, _ = load_version(reg, version)
    old = alias_version(reg, CHAMPION)
    if new == old:
        return {"champion_version": new, "previous_version": old, "changed": False,
                "reason": f"version {new} is the champion already"}  # fmt: skip
    proof: dict[str, Any] = {}
    if evidence and old is not None:
        try:
            proof = evaluate_policy(new, log, against=old, config=config, log_to_mlflow=False)
        except (ConfigError, DataError, ModelError) as exc:
            proof = {"unavailable": str(exc)}
    history = champion_history(reg)
    _move(reg, new, [*history, new])
    params = {"from_version": old, "to_version": new, "reason": reason}
    run_id = _log_move(reg, "manual-promotion", params, proof)
    logger.info("champion %s -> %s (manual: %s)", old, new, reason)
    return {"champion_version": new, "previous_version": old, "changed": True, "reason": reason,
            "evidence": proof.get("summary", proof), "mlflow_run_id": run_id}  # fmt: skip


def rollback(reason: str = "rollback", config: str | Path | None = None) -> dict[str, Any]:
    """Make the previous champion the champion again (see the module doc); logged to MLflow."""
    reg = _registry(config)
    history = champion_history(reg)
    if len(history) < 2:
        raise ModelError(f"no earlier champion to roll back to (champion history: {history})")
    current, previous = history[-1], history[-2]
    _move(reg, previous, history[:-1])
    params = {"from_version": current, "to_version": previous, "reason": reason}
    run_id = _log_move(reg, "rollback", params, {"history": history})
    logger.info("champion %s -> %s (rollback)", current, previous)
    return {"champion_version": previous, "previous_version": current, "changed": True, "reason": reason,
            "history": history[:-1], "mlflow_run_id": run_id}  # fmt: skip


def _registry(config: str | Path | None) -> RegistrySettings:
    from offerlift.feedback import service_settings

    return service_settings(config).registry_settings()
