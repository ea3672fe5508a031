"""The closed loop on the simulated world: decide, observe, join, report, retrain, promote, again.

Each round serves every customer of the world once at the round's simulated time, through the service's decision
code: `offerlift.serving.decide_many.decide_logged` makes and logs exactly the decisions
`offerlift.serving.decider.Decider.decide` would make one customer after the other (online store, rules, caps, the
pure policy, the decision log; tested equal), in one transaction. The world plays the decisions forward; its outcomes
are stored in the decision log (`offerlift.serving.decision_log.DecisionLog.add_outcomes`, the service's outcome
path); the attribution join and the A/B report read them from the log; the world's exact truth gives the true value of
every policy. The customers are split once, by a stable hash, into a training part and a judging part
(``judge_share``). A challenger trained on every logged decision so far of the training customers (point-in-time
features, logged propensities) is judged against the champion on every logged decision so far of the judging
customers, which no model ever trains on (`offerlift.training.promote.judge`: paired doubly robust difference with a
cross-fitted reward model, customer-level standard error), and promoted only when the one-sided lower bound of the
difference is above ``min_gain``. Round 0 starts from a random policy (a model that predicts nothing), served with
full exploration.

Values are incremental profit per customer over "no offer to anyone":
- ``policy_value``: the exact value of the policy that served the round (the champion's choices as served, with its
  holdout and exploration);
- ``greedy_value``: the exact value of the same model's greedy choices for every customer;
- ``oracle_value``: the exact value of the best possible policy at that time; ``share_of_oracle`` = policy / oracle;
- ``ab_lift`` / ``ab_lift_ci``: the A/B report's estimate (treated vs holdout, per treated customer);
- ``true_lift``: the world's exact mean incremental profit of the treated customers' arms;
- ``challenger_greedy_value`` / ``champion_greedy_value_judged``: the exact values of the round's challenger's and
  champion's greedy choices on this round's judging customers (whether or not the gate promoted it): they
  separate what the learner learned from what the gate can prove;
- ``promotion_evidence``: the gate's difference, its one-sided bound and mirror (``ci``), standard error, the
  smallest difference it could detect (``mde``), units judged and units where the two policies differ.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import sqlalchemy as sa

from offerlift.features.attribution import attribute
from offerlift.features.build import build_features, latest_features
from offerlift.features.catalog import Catalog
from offerlift.features.eligibility import reachable_arms
from offerlift.features.errors import ConfigError
from offerlift.features.experiment import Experiment
from offerlift.features.store import OnlineStore, refresh_store
from offerlift.models.model_io import load_model, log_scorer_model
from offerlift.models.registry import (
    CHALLENGER,
    CHAMPION,
    RegistrySettings,
    activate,
    alias_version,
    resolve_tracking_uri,
)
from offerlift.models.scoring import FORMAT, ArmScorer, FeatureSpec
from offerlift.serving.decide_many import decide_logged
from offerlift.serving.decider import Decider
from offerlift.serving.decision_log import DecisionLog
from offerlift.serving.decision_log import decisions as decision_table
from offerlift.serving.decision_log import outcomes as outcome_table
from offerlift.serving.policy import holdout_unit
from offerlift.serving.settings import load_settings
from offerlift.simworld.world import SimWorld
from offerlift.training.ab_report import ab_report, decision_profit, write_report
from offerlift.training.evaluate import greedy_arms
from offerlift.training.promote import GateConfig, greedy_policy, judge, promote_if_better
from offerlift.training.train import TrainConfig, train_model

log = logging.getLogger(__name__)

HOUR = 3600.0

#: Called after each round's decisions with (world, the round's units with their features, time in hours);
#: the dict it returns joins the round's entry (e.g. a reference policy's exact value).
RoundHook = Callable[[SimWorld, pd.DataFrame, float], dict[str, Any]]


@dataclass(frozen=True)
class LoopConfig:
    """Size and settings of a loop run.

    ``n_boot`` is kept for callers (the gate uses a normal bound). With ``compiled_judge`` (and lleaves installed)
    the gate scores the challenger and the champion with compiled trees (`offerlift.models.compiled`: the same
    predictions up to about 1e-14, six times faster); decisions always go through the service's LightGBM scorer."""

    rounds: int = 6
    customers: int = 20_000
    seed: int = 0
    holdout: float = 0.10
    explore: float = 0.10
    train: TrainConfig = field(default_factory=lambda: TrainConfig.for_simulated(n_folds=0))
    judge_share: float = 0.3
    min_gain: float = 0.0
    n_boot: int = 500
    gate: GateConfig = field(default_factory=GateConfig)
    workdir: Path = Path("outputs/loop")
    model_name: str = "offerlift-simulated"
    round_hook: RoundHook | None = None
    compiled_judge: bool = True

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.customers < 200:
            raise ConfigError(f"a loop needs rounds >= 1 and customers >= 200, got {self.rounds}, {self.customers}")
        if not 0.05 <= self.judge_share <= 0.8:
            raise ConfigError(f"judge_share must be in [0.05, 0.8], got {self.judge_share!r}")


@dataclass
class LoopState:
    """What the loop carries from round to round: per round, the logged units (decisions joined to their
    outcomes, with a judge flag) and their point-in-time features; per champion version, its greedy choices
    on the judged units of each round."""

    world: SimWorld
    registry: RegistrySettings
    events: pd.DataFrame
    random_version: str = ""
    units: list[pd.DataFrame] = field(default_factory=list)
    features: list[pd.DataFrame] = field(default_factory=list)
    choices: dict[str, list[np.ndarray]] = field(default_factory=dict)
    fast: dict[str, ArmScorer] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)


def random_policy_spec(catalog: Catalog, features: FeatureSpec) -> dict[str, Any]:
    """A model that predicts nothing (every arm scores 0): the starting point, served with full exploration."""
    X = np.zeros((10, len(features.columns)))
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 2}, lgb.Dataset(X, np.zeros(10)), 1)
    text = booster.model_to_string()
    k = len(catalog.arm_ids)
    return {
        "format": FORMAT,
        "arms": catalog.arm_ids,
        "catalog": catalog.to_dict(),
        "feature_spec": features.to_dict(),
        "outcomes": {"spend": {"kind": "t", "boosters": [text] * k}},
        "value_outcome": "spend",
        "metadata": {"kind": "random policy"},
    }


def _settings(cfg: LoopConfig, registry: RegistrySettings, explore: float, workdir: Path):
    return load_settings(
        overrides={
            "insecure": True,
            "use_context_time": True,
            "decision_log_url": f"sqlite:///{workdir / 'decisions.db'}",
            "online_store_path": str(workdir / "online_store.db"),
            "policy": {"holdout": cfg.holdout, "explore": explore, "experiment": f"loop-{cfg.seed}", "explain_top": 0},
            "registry": {
                "tracking_uri": registry.tracking_uri,
                "model_name": registry.model_name,
                "reload_interval_s": 0,
            },
            "rules": {"cap_per_customer": 3, "cap_window_hours": 168.0},
            "pacing": {"enabled": False},
            "campaign": {"name": "loop", "budget": None},
        },
        environ={},
    )


def _register_random(state: LoopState, features: FeatureSpec, workdir: Path) -> str:
    import mlflow

    from offerlift.models.registry import set_alias

    activate(state.registry)
    with mlflow.start_run(run_name="random-policy"):
        info = log_scorer_model(
            random_policy_spec(state.world.catalog, features), workdir / "random", state.registry.model_name
        )
    version = str(info.registered_model_version)
    set_alias(state.registry, CHAMPION, version)
    return version


def _serve_round(decider: Decider, world: SimWorld, t_hours: float, rng: np.random.Generator):
    """Every customer once, in a random order, through the service's decisions; (decisions, greedy arms)."""
    ids = world.customers["customer_id"].astype(str).to_numpy()
    ids = ids[rng.permutation(len(ids))]
    batch = decide_logged(decider, ids.tolist(), {"timestamp": t_hours * HOUR}, u=rng.random((len(ids), 2)))
    rows = batch.rows
    decisions = pd.DataFrame(
        {
            "decision_id": rows["decision_id"],
            "customer_id": rows["customer_id"],
            "time": t_hours,
            "arm": rows["arm"],
            "propensity": rows["propensity"],
            "grp": rows["grp"],
            "model_version": rows["model_version"],
        }
    )
    return decisions, greedy_arms(batch.incr, batch.rule_mask)


def _play(state: LoopState, dlog: DecisionLog, decisions: pd.DataFrame, seed: int) -> None:
    """The world plays the decisions forward; their outcome events go into the decision log."""
    played = state.world.play(
        decisions.rename(columns={"decision_id": "unit_id"})[["unit_id", "customer_id", "time", "arm"]], seed=seed
    )
    out = played.outcomes
    ts = (out["decision_time"].to_numpy(float) + state.world.config.window_hours / 2) * HOUR
    events = pd.DataFrame(
        {
            "event_id": out["unit_id"].astype(str) + ":outcome",
            "decision_id": out["unit_id"],
            "customer_id": out["customer_id"],
            "ts": ts,
            "visit": out["visit"].astype(float),
            "buy": out["buy"].astype(float),
            "spend": out["spend"].astype(float),
            "redeem": out["redeem"].astype(float),
        }
    )
    dlog.add_outcomes(events.to_dict(orient="records"))
    state.events = pd.concat([state.events, played.events], ignore_index=True)


def _joined_round(dlog: DecisionLog, t_hours: float, window_hours: float) -> pd.DataFrame:
    """The attribution join of the round's decisions: those logged in [t, t + window) and the outcome events of
    the same span (no decision of another round has a window that reaches into it)."""
    lo, hi = t_hours * HOUR, (t_hours + window_hours) * HOUR
    with dlog.engine.connect() as conn:
        d = pd.read_sql(sa.select(decision_table).where(decision_table.c.ts >= lo, decision_table.c.ts < hi), conn)
        o = pd.read_sql(sa.select(outcome_table).where(outcome_table.c.ts >= lo, outcome_table.c.ts < hi), conn)
    return attribute(d, o, window_hours * HOUR).joined


def _truth_values(world: SimWorld, decisions: pd.DataFrame, greedy: np.ndarray, t: float) -> dict[str, float]:
    rows = world.rows_of(decisions["customer_id"])
    truth = world.truth(rows, t)
    served = pd.Index(world.arm_ids).get_indexer(decisions["arm"])
    treated = decisions["grp"].isin(["explore", "exploit"]).to_numpy()
    values = truth.values(served)
    oracle = float(truth.values(truth.oracle()).mean())
    policy = float(values.mean())
    return {
        "policy_value": policy,
        "greedy_value": float(truth.values(greedy).mean()),
        "oracle_value": oracle,
        "share_of_oracle": policy / oracle if oracle > 0 else float("nan"),
        "true_lift": float(values[treated].mean()) if treated.any() else float("nan"),
    }


def _judge_split(customer_ids: pd.Series, share: float, seed: int) -> np.ndarray:
    """True for customers whose decisions judge the challenger (and are left out of its training)."""
    return holdout_unit(customer_ids.astype(str).tolist(), f"judge-{seed}") < share


def _round_units(state: LoopState, cfg: LoopConfig, decisions: pd.DataFrame, joined: pd.DataFrame) -> pd.DataFrame:
    """The round's decisions with their attributed outcomes and the judge flag (index decision_id)."""
    j = joined.set_index("decision_id").loc[decisions["decision_id"]]
    units = decisions.set_index("decision_id")
    for col in ("visit", "buy", "spend", "redeem"):
        units[col] = j[col].to_numpy(dtype=float)
    units["judge"] = _judge_split(units["customer_id"], cfg.judge_share, cfg.seed)
    return units


def run_loop(cfg: LoopConfig, tracking_uri: str | None = None) -> dict[str, Any]:
    """Run the loop; returns the JSON-ready result with one entry per round (see the module doc)."""
    workdir = Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("decisions.db", "decisions.db-wal", "decisions.db-shm", "decisions.db.lock", "online_store.db"):
        (workdir / name).unlink(missing_ok=True)
    base = resolve_tracking_uri(tracking_uri)
    registry = RegistrySettings(base.tracking_uri, base.artifact_root, cfg.model_name, base.experiment)
    world = SimWorld.default(n_customers=cfg.customers, seed=cfg.seed)
    state = LoopState(world=world, registry=registry, events=world.history_events())
    rng = np.random.default_rng(cfg.seed)
    store = OnlineStore(workdir / "online_store.db")
    refresh_store(store, state.events, world.customers, at=0.0)
    spec = FeatureSpec.from_frame(latest_features(state.events, world.customers, at=0.0))
    state.random_version = _register_random(state, spec, workdir)
    started = time.perf_counter()
    for r in range(cfg.rounds):
        entry = _round(cfg, state, store, workdir, r, rng)
        state.rounds.append(entry)
        log.info(
            "round %d (%.0fs): policy %.4f, oracle %.4f (%.0f%%), A/B lift %.4f [%.4f, %.4f], true lift %.4f, %s",
            r,
            entry["seconds"],
            entry["policy_value"],
            entry["oracle_value"],
            100 * entry["share_of_oracle"],
            entry["ab_lift"],
            *entry["ab_lift_ci"],
            entry["true_lift"],
            "promoted" if entry["promoted"] else "kept",
        )
    store.close()
    return {
        "rounds": state.rounds,
        "seconds": time.perf_counter() - started,
        "customers": cfg.customers,
        "seed": cfg.seed,
        "workdir": str(workdir),
        "report": state.rounds[-1]["report"],
    }


def _round(
    cfg: LoopConfig, state: LoopState, store: OnlineStore, workdir: Path, r: int, rng: np.random.Generator
) -> dict[str, Any]:
    """One round: serve, value exactly, play, join, report, retrain and judge; returns the round's entry."""
    world, window = state.world, state.world.config.window_hours
    t = r * window
    t0 = time.perf_counter()
    if r > 0:
        refresh_store(store, state.events[state.events["time"] < t], world.customers, at=t)
    champion = alias_version(state.registry, CHAMPION)
    explore = 1.0 if champion == state.random_version else cfg.explore
    decider = Decider(_settings(cfg, state.registry, explore=explore, workdir=workdir), store=store)
    decider.load_champion()
    decisions, greedy = _serve_round(decider, world, t, rng)
    serve_s = time.perf_counter() - t0
    truth = _truth_values(world, decisions, greedy, t)
    _play(state, decider.log, decisions, seed=cfg.seed * 1000 + r)
    units = _round_units(state, cfg, decisions, _joined_round(decider.log, t, window))
    as_of = pd.DataFrame({"unit_id": units.index, "customer_id": units["customer_id"].to_numpy(), "time": t})
    feats = build_features(state.events, world.customers, as_of)
    state.units.append(units)
    state.features.append(feats)
    report, paths = _report(cfg, state, units, feats, workdir / f"round_{r}", t)
    entry: dict[str, Any] = {
        "round": r,
        "model_version": decisions["model_version"].iloc[0],
        "customers": len(decisions),
        **truth,
        "ab_lift": report["lift"]["estimate"],
        "ab_lift_ci": [report["lift"]["ci_low"], report["lift"]["ci_high"]],
        "srm_ok": report["srm"]["ok"],
        "report": str(paths["html"]),
        "serve_seconds": serve_s,
    }
    entry["ab_ci_covers_true_lift"] = bool(entry["ab_lift_ci"][0] <= truth["true_lift"] <= entry["ab_lift_ci"][1])
    if cfg.round_hook is not None:
        entry.update(cfg.round_hook(world, units.join(feats), t))
    decider.close()
    entry.update(_retrain_and_promote(cfg, state, decider.champion, r))
    entry["seconds"] = time.perf_counter() - t0
    return entry


def _report(cfg: LoopConfig, state: LoopState, units: pd.DataFrame, feats: pd.DataFrame, out: Path, t: float):
    rows = units.reset_index()
    rows["pre_spend"] = feats["spend_30d"].to_numpy()
    report = ab_report(rows, state.world.catalog, cfg.holdout, campaign=f"round-{t:.0f}h", covariate="pre_spend")
    return report, write_report(report, out)


def _experiment(state: LoopState, judged: bool) -> Experiment:
    """Every logged decision so far of the judging (or of the training) customers, with point-in-time features
    and logged propensities."""
    u = pd.concat(state.units)
    keep = u["judge"].to_numpy() == judged
    u = u[keep]
    feats = pd.concat(state.features)[keep]
    ids = u.index.to_numpy()
    assignments = pd.DataFrame(
        {
            "unit_id": ids,
            "customer_id": u["customer_id"].to_numpy(),
            "time": u["time"].to_numpy(),
            "arm": u["arm"].to_numpy(),
            "propensity": u["propensity"].to_numpy(),
            "group": u["grp"].to_numpy(),
        }
    )
    outcomes = pd.DataFrame(
        {
            "unit_id": ids,
            "customer_id": u["customer_id"].to_numpy(),
            "time": u["time"].to_numpy() + state.world.config.window_hours,
            **{c: u[c].to_numpy() for c in ("visit", "buy", "spend", "redeem")},
        }
    )
    return Experiment(
        "simulated-loop", state.world.catalog, state.world.customers, assignments, outcomes, feats, main_outcome="buy"
    )


def _judging_scorer(cfg: LoopConfig, state: LoopState, version: str, scorer: ArmScorer) -> ArmScorer:
    """The scorer the gate uses for a model version: compiled trees when configured and available (cached)."""
    if not cfg.compiled_judge:
        return scorer
    if version not in state.fast:
        from offerlift.models import compiled

        state.fast[version] = scorer
        if compiled.available():
            try:
                state.fast[version] = compiled.compile_scorer(scorer, Path(cfg.workdir) / "compiled")
            except Exception as exc:  # the gate still works with the plain scorer, only slower
                log.warning("could not compile model %s for the gate, using LightGBM: %s", version, exc)
    return state.fast[version]


def _champion_choices(cfg: LoopConfig, state: LoopState, champion: Any, judged: list[pd.DataFrame]) -> np.ndarray:
    """The champion's greedy arm on every judged unit so far (cached per round; the random policy offers nothing)."""
    cached = state.choices.setdefault(champion.version, [])
    for r in range(len(cached), len(judged)):
        feats = judged[r]
        if champion.version == state.random_version:
            cached.append(np.zeros(len(feats), dtype=np.intp))
        else:
            allowed = reachable_arms(state.world.catalog, feats, len(feats))
            scorer = _judging_scorer(cfg, state, champion.version, champion.scorer)
            cached.append(greedy_policy(scorer, feats, allowed)[0])
    return np.concatenate(cached)


def _retrain_and_promote(cfg: LoopConfig, state: LoopState, champion: Any, r: int) -> dict[str, Any]:
    result = train_model(_experiment(state, judged=False), cfg.train, state.registry)
    challenger = _judging_scorer(cfg, state, str(result.version), load_model(result.model_uri))
    judged = [f[u["judge"].to_numpy()] for u, f in zip(state.units, state.features, strict=True)]
    units = pd.concat([u[u["judge"]] for u in state.units])
    feats = pd.concat(judged)
    allowed = reachable_arms(state.world.catalog, feats, len(feats))
    old = _champion_choices(cfg, state, champion, judged)
    gate = replace(cfg.gate, min_gain=cfg.min_gain, seed=cfg.seed + r)
    evidence = judge(
        None,
        challenger,
        feats,
        units["arm"].to_numpy(),
        decision_profit(units, state.world.catalog),
        units["propensity"].to_numpy(float),
        allowed,
        gate=gate,
        customer_ids=units["customer_id"].to_numpy(),
        champion_choices=old,
    )
    verdict = promote_if_better(state.registry, result.version, champion.version, evidence, len(units))
    assert alias_version(state.registry, CHALLENGER) == result.version
    new = evidence["challenger_choices"]
    if verdict.promoted:
        state.choices[result.version] = np.split(new, np.cumsum([len(f) for f in judged])[:-1])
    last = slice(len(units) - len(judged[-1]), len(units))
    world, t = state.world, r * state.world.config.window_hours
    truth = world.truth(world.rows_of(units["customer_id"].to_numpy()[last]), t)
    return {
        "promoted": verdict.promoted,
        "challenger_version": result.version,
        "challenger_greedy_value": float(truth.values(new[last]).mean()),
        "champion_greedy_value_judged": float(truth.values(old[last]).mean()),
        "promotion_evidence": {
            "diff": verdict.diff,
            "ci": [verdict.ci_low, verdict.ci_high],
            "se": verdict.se,
            "mde": verdict.mde,
            "units": verdict.units,
            "units_differ": verdict.units_differ,
            "estimator": verdict.estimator,
            "level": gate.level,
        },
        "train_units": int(sum(int((~u["judge"]).sum()) for u in state.units)),
    }
