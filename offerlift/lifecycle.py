"""The feedback loop on the service's own decision log, second half: off-policy evaluation and retraining.

- `evaluate_policy(model)`: the value of a registered model's policy (or the champion's with other settings) on
  the judging customers' logged decisions (`offerlift.logged_data`), against the champion's and the trivial
  policies (no offer, the best single arm), by IPS, SNIPS and doubly robust estimates with paired bootstrap CIs
  (`offerlift.training.policy_value`); the DR reward model is the promotion gate's (LightGBM, cross-fitted over
  customers, belonging to neither policy). Logged to MLflow once per distinct evaluation.
- `retrain(...)`: a challenger trained on the training customers' logged decisions (point-in-time features,
  logged propensities), plus any experiment file, with the champion's recipe (learner and parameters), evaluated
  on held-out folds and registered like ``offerlift train`` (alias ``challenger``). Training the same data with
  the same recipe again returns the version already registered.

Promotion (the gate, a manual ``promote --version N`` and ``rollback``) is in `offerlift.promotion`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.errors import ConfigError, DataError, ModelError
from offerlift.feedback import LogLike, find_run, open_log, parse_time
from offerlift.logged_data import LoggedUnits, as_experiment, load_units, model_frame
from offerlift.models.registry import CHALLENGER, CHAMPION, RegistrySettings, alias_version
from offerlift.models.scoring import ArmScorer

logger = logging.getLogger(__name__)

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class PolicySettings:
    """How a model's scores become a policy for evaluation: ``explore`` spread uniformly over the allowed arms,
    ``price`` per unit of expected cost subtracted from each arm's score (a budget's pacing price), ``arms`` the
    arms it may use (empty: every allowed arm; the control arm always)."""

    explore: float = 0.0
    price: float = 0.0
    arms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.explore <= 1.0 or self.price < 0:
            raise ConfigError(f"policy settings: explore must be in [0, 1] and price >= 0, got {self}")


def load_version(registry: RegistrySettings, ref: str | int) -> tuple[str, ArmScorer]:
    """(version, scorer) of a model version, an alias (``champion``, ``challenger``) or ``models:/`` URI."""
    import mlflow

    from offerlift.models.model_io import load_model

    text = str(ref)
    if text.startswith("models:/"):
        tail = text.split("/", 2)[-1]
        text = tail.split("@", 1)[1] if "@" in tail else tail.rsplit("/", 1)[-1]
    version = alias_version(registry, text) if not text.isdigit() else text
    if version is None:
        raise ModelError(f"no model version behind {ref!r} in {registry.model_name!r} at {registry.tracking_uri}")
    mlflow.set_tracking_uri(registry.tracking_uri)
    try:
        return version, load_model(f"models:/{registry.model_name}/{version}")
    except Exception as exc:
        raise ModelError(f"cannot load version {version} of {registry.model_name!r}: {exc}") from None


def policy_probs(scorer: ArmScorer, units: LoggedUnits, settings: PolicySettings = PolicySettings()) -> np.ndarray:
    """(n, K) a model's policy on the logged units: its greedy arm among the logged allowed arms (score = expected
    incremental profit - price * expected cost; no offer when nothing pays), with ``explore`` spread uniformly."""
    from offerlift.serving.decider import expected_cost

    if list(scorer.arms) != units.catalog.arm_ids:
        raise ModelError(f"the model's arms {list(scorer.arms)} differ from the logged catalog's")
    preds = scorer.predict(scorer.features.encode(units.features.reindex(columns=list(scorer.features.columns))))
    profit = scorer.profit(preds)
    score = profit - profit[:, [0]] - settings.price * expected_cost(scorer, preds)
    allowed = units.allowed.copy()
    if settings.arms:
        keep = np.isin(np.asarray(units.catalog.arm_ids), list(settings.arms))
        keep[0] = True
        allowed &= keep[None, :]
    score = np.where(allowed, score, -np.inf)
    score[:, 0] = 0.0
    greedy = np.argmax(score, axis=1)
    greedy = np.where(score[np.arange(len(greedy)), greedy] > 0, greedy, 0)
    probs = settings.explore * allowed / allowed.sum(axis=1, keepdims=True)
    probs[np.arange(len(greedy)), greedy] += 1.0 - settings.explore
    return probs


def reward_model(units: LoggedUnits, scorer: ArmScorer, seed: int = 0) -> np.ndarray:
    """(n, K) cross-fitted predicted profit of every arm for every unit (the promotion gate's reward model)."""
    from offerlift.training.evaluate import customer_folds
    from offerlift.training.promote import REWARD_PARAMS, reward_predictions

    k = len(units.catalog.arm_ids)
    idx = pd.Index(units.catalog.arm_ids).get_indexer(units.arms)
    folds = customer_folds(units.customer_ids, 2, seed)
    feats = model_frame(units.features.reindex(columns=list(scorer.features.columns)))
    queries = [np.full(len(units), j, dtype=np.intp) for j in range(k)]
    preds = reward_predictions(scorer, feats, idx, units.rewards, queries, folds, {**REWARD_PARAMS, "seed": seed})
    return np.column_stack(preds)


def _estimates(
    units: LoggedUnits, policies: Mapping[str, np.ndarray], mu: np.ndarray, n_boot: int, seed: int
) -> dict[str, Any]:
    from offerlift.training.policy_value import compare_policies, policy_difference

    out: dict[str, Any] = {}
    names = list(policies)
    for est in ESTIMATORS:
        table = compare_policies(
            policies,
            units.arms,
            units.rewards,
            units.propensities,
            estimator=est,
            mu=mu if est == "dr" else None,
            arm_ids=units.catalog.arm_ids,
            control_arm=units.catalog.control_arm,
            n_boot=n_boot,
            seed=seed,
            allowed=units.allowed,
        )
        diff = policy_difference(
            policies[names[0]],
            policies[names[1]],
            units.arms,
            units.rewards,
            units.propensities,
            estimator=est,
            mu=mu if est == "dr" else None,
            arm_ids=units.catalog.arm_ids,
            n_boot=n_boot,
            seed=seed,
        )
        out[est] = {"policies": table.to_dict(orient="records"), "difference": diff}
    return out


def evaluate_policy(
    model: str | int = CHALLENGER,
    log: LogLike = None,
    against: str | int = CHAMPION,
    settings: PolicySettings = PolicySettings(),
    campaign: str | None = None,
    start: float | str | None = None,
    end: float | str | None = None,
    split: str = "judge",
    n_boot: int = 500,
    seed: int = 0,
    config: str | Path | None = None,
    log_to_mlflow: bool = True,
) -> dict[str, Any]:
    """Off-policy value of `model`'s policy (with `settings`) against the greedy policy of `against` on the logged
    decisions of `split` (see the module doc). Values are the realized profit per decision the policy would have
    earned; the rows ``always:none`` and ``always:<best arm>`` are the floors; ``difference`` is model minus
    reference with a paired bootstrap CI."""
    ctx = open_log(log, config)
    try:
        reg = ctx.registry
        version, scorer = load_version(reg, model)
        ref_version, ref = load_version(reg, against)
        units = load_units(ctx.log, scorer.catalog, campaign, parse_time(start, "start"), parse_time(end, "end"))
        part = units.split(split)
        if len(part) < 50:
            raise DataError(f"only {len(part)} joined decisions with snapshots in the {split!r} split; need 50")
        name = f"v{version}" + ("" if settings == PolicySettings() else " with other settings")
        ref_name = f"v{ref_version} ({'reference' if str(against) != CHAMPION else 'champion'})"
        policies = {name: policy_probs(scorer, part, settings), ref_name: policy_probs(ref, part)}
        mu = reward_model(part, ref, seed)
        result: dict[str, Any] = {
            "model_version": version,
            "reference_version": ref_version,
            "settings": asdict(settings),
            "split": split,
            "decisions": len(part),
            "customers": int(pd.unique(part.customer_ids).size),
            "skipped_without_snapshot": units.skipped,
            "value": "realized profit per decision the policy would have earned",
            "estimates": _estimates(part, policies, mu, n_boot, seed),
        }
        dr = result["estimates"]["dr"]["difference"]
        result["summary"] = {
            "estimator": "dr",
            "difference": dr["diff"],
            "ci_low": dr["ci_low"],
            "ci_high": dr["ci_high"],
            "better": bool(dr["ci_low"] > 0),
        }
        key = hashlib.sha256(
            json.dumps([part.fingerprint(), version, ref_version, asdict(settings), split, n_boot, seed]).encode()
        ).hexdigest()[:16]
        result["fingerprint"] = key
        result["mlflow_run_id"] = _log_evaluation(reg, result, key) if log_to_mlflow else None
        return result
    finally:
        ctx.close()


def _log_evaluation(registry: RegistrySettings, result: dict[str, Any], key: str) -> str:
    import tempfile

    import mlflow

    existing = find_run(registry, "ope", key)
    if existing is not None:
        return existing
    tags = {"offerlift.kind": "ope", "offerlift.key": key}
    with mlflow.start_run(run_name=f"ope-v{result['model_version']}", tags=tags) as run:
        mlflow.log_params(
            {
                "model_version": result["model_version"],
                "reference_version": result["reference_version"],
                "split": result["split"],
                **{f"policy_{k}": v for k, v in result["settings"].items()},
            }
        )
        metrics = {"decisions": float(result["decisions"])}
        for est, e in result["estimates"].items():
            d = e["difference"]
            metrics.update(
                {f"{est}_diff": d["diff"], f"{est}_diff_ci_low": d["ci_low"], f"{est}_diff_ci_high": d["ci_high"]}
            )
            metrics[f"{est}_value"] = d["value_a"]
            metrics[f"{est}_value_reference"] = d["value_b"]
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if math.isfinite(float(v))})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "evaluation.json"
            path.write_text(json.dumps(result, indent=2, default=str))
            mlflow.log_artifact(str(path))
    return run.info.run_id


# --- retraining ----------------------------------------------------------------------------------------------


def champion_recipe(scorer: ArmScorer, folds: int, seed: int) -> Any:
    """The TrainConfig the champion was trained with (from its metadata), with `folds` and `seed`."""
    from offerlift.training.train import TrainConfig

    meta = scorer.spec.get("metadata") or {}
    saved = dict(meta.get("config") or {}) if isinstance(meta, Mapping) else {}
    known = {f.name for f in fields(TrainConfig)}
    kwargs = {k: v for k, v in saved.items() if k in known}
    if kwargs.get("uplift_features") is not None:
        kwargs["uplift_features"] = tuple(kwargs["uplift_features"])
    kwargs.update(n_folds=folds, seed=seed)
    try:
        return TrainConfig(**kwargs)
    except (ConfigError, TypeError):
        return TrainConfig(n_folds=folds, seed=seed)


def _combine(log_exp: Any, path: Path, columns: Sequence[str]) -> Any:
    """The log's experiment plus the units of an experiment file (columns: customer_id, arm, propensity, visit,
    buy, spend, redeem, the model's feature columns; optional unit_id and time in hours)."""
    from offerlift.features.experiment import Experiment
    from offerlift.features.tables import read_table, require_columns, require_numeric

    raw = read_table(path)
    where = str(path)
    require_columns(raw, where, ["customer_id", "arm", "propensity", "visit", "buy", "spend", "redeem", *columns])
    require_numeric(raw, where, ["propensity", "visit", "buy", "spend", "redeem"])
    unknown = sorted(set(raw["arm"].astype(str)) - set(log_exp.catalog.arm_ids))
    if unknown:
        raise DataError(f"{where}: column 'arm' has arms {unknown[:5]} that the catalog does not have")
    ids = raw["unit_id"].astype(str) if "unit_id" in raw else pd.Series([f"file-{i}" for i in range(len(raw))])
    t = raw["time"].astype(float) if "time" in raw else pd.Series(0.0, index=raw.index)
    a = pd.DataFrame({"unit_id": ids, "customer_id": raw["customer_id"].astype(str), "time": t,
                      "arm": raw["arm"].astype(str), "propensity": raw["propensity"].astype(float),
                      "group": "experiment"})  # fmt: skip
    o = a[["unit_id", "customer_id"]].assign(
        time=t, **{c: raw[c].astype(float) for c in ("visit", "buy", "spend", "redeem")}
    )
    f = model_frame(raw[list(columns)]).set_axis(pd.Index(ids, name="unit_id"))
    both = pd.concat([log_exp.features, f])
    feats = model_frame(both.astype(object).where(both.notna(), None))
    customers = pd.DataFrame(
        {"customer_id": pd.unique(pd.concat([log_exp.customers["customer_id"], a["customer_id"]]))}
    )
    return Experiment(
        "decision-log+file",
        log_exp.catalog,
        customers,
        pd.concat([log_exp.assignments, a], ignore_index=True),
        pd.concat([log_exp.outcomes, o], ignore_index=True),
        feats,
        main_outcome="buy",
    )


def _version_with_tag(registry: RegistrySettings, key: str) -> str | None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=registry.tracking_uri)
    for mv in client.search_model_versions(f"name = '{registry.model_name}'"):
        if (mv.tags or {}).get("offerlift.train_key") == key:
            return str(mv.version)
    return None


def retrain(
    log: LogLike = None,
    experiment_file: str | Path | None = None,
    learner: str | None = None,
    params: Mapping[str, Any] | None = None,
    folds: int = 3,
    seed: int = 0,
    campaign: str | None = None,
    start: float | str | None = None,
    end: float | str | None = None,
    config: str | Path | None = None,
) -> dict[str, Any]:
    """Train a challenger on the training customers' logged decisions (plus `experiment_file`) and register it
    (see the module doc); `learner` replaces the champion's recipe by that learner's defaults, `params` are
    LightGBM parameters over the recipe's. Returns version, model_uri, metrics (held-out only), units and
    whether it was new."""
    import mlflow

    from offerlift.training.train import train_model

    ctx = open_log(log, config)
    try:
        reg = ctx.registry
        champ_version, champion = load_version(reg, CHAMPION)
        units = load_units(ctx.log, champion.catalog, campaign, parse_time(start, "start"), parse_time(end, "end"))
        part = units.split("train")
        columns = list(champion.features.columns)
        recipe = champion_recipe(champion, folds, seed)
        if learner is not None:
            recipe = type(recipe)(learner=learner, n_folds=folds, seed=seed)
        if params:
            recipe = replace(recipe, params={**recipe.params, **params})
        file_key = hashlib.sha256(Path(experiment_file).read_bytes()).hexdigest()[:16] if experiment_file else ""
        key = hashlib.sha256(json.dumps([part.fingerprint(), file_key, repr(recipe), columns]).encode()).hexdigest()
        key = key[:16]
        existing = _version_with_tag(reg, key)
        if existing is not None:
            logger.info("this data and recipe were already trained: version %s", existing)
            return {"version": existing, "model_uri": f"models:/{reg.model_name}/{existing}", "new": False,
                    "units": len(part), "champion_version": champ_version, "key": key}  # fmt: skip
        exp = as_experiment(part, columns)
        if experiment_file is not None:
            exp = _combine(exp, Path(experiment_file), columns)
        result = train_model(exp, recipe, reg)
        client = mlflow.MlflowClient(tracking_uri=reg.tracking_uri)
        client.set_model_version_tag(reg.model_name, result.version, "offerlift.train_key", key)
        client.set_model_version_tag(reg.model_name, result.version, "offerlift.source", "decision-log")
        return {
            "version": result.version,
            "model_uri": result.model_uri,
            "run_id": result.run_id,
            "new": True,
            "units": len(exp.assignments),
            "log_units": len(part),
            "champion_version": champ_version,
            "learner": recipe.learner,
            "metrics": result.metrics,
            "key": key,
        }
    finally:
        ctx.close()
