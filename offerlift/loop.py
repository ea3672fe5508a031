"""The closed loop on the simulated world: decide, observe, join, report, retrain, promote, again.

Each round serves every customer of the world once, through exactly the code path of the service
(`serving.decider.Decider.decide`: online store, rules, the pure policy, the decision log), at the round's
simulated time. The world plays the decisions forward; its outcomes come back through `Decider.record_outcomes`;
the attribution join and the A/B report read them from the decision log; the world's exact truth gives the true
value of every policy. The customers are split once, by a stable hash, into a training part and a judging part
(``judge_share``). A challenger trained on every logged decision so far of the training customers (point-in-time
features, logged propensities) is valued off-policy against the champion on every logged decision of the judging
customers, which no model ever trains on, and promoted only when it is better beyond noise (the paired 95% CI of the
difference above ``min_gain``). Round 0 starts from a random policy.

Values are incremental profit per customer over "no offer to anyone":
- ``policy_value``: the exact value of the policy that served the round (the champion's choices as served, with its
  holdout and exploration);
- ``greedy_value``: the exact value of the same model's greedy choices for every customer;
- ``oracle_value``: the exact value of the best possible policy at that time; ``share_of_oracle`` = policy / oracle;
- ``ab_lift`` / ``ab_lift_ci``: the A/B report's estimate (treated vs holdout, per treated customer);
- ``true_lift``: the world's exact mean incremental profit of the treated customers' arms;
- ``challenger_greedy_value``: the exact value the round's challenger would have had on the round's customers
  (whether or not the gate promoted it): it separates what the learner learned from what the gate can prove.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.attribution import attribute
from features.build import build_features, latest_features
from features.catalog import Catalog
from features.errors import ConfigError
from features.experiment import Experiment
from features.model_io import load_model, log_scorer_model
from features.registry import CHALLENGER, CHAMPION, RegistrySettings, activate, alias_version, resolve_tracking_uri
from features.scoring import FORMAT, ArmScorer, FeatureSpec
from features.simworld import SimWorld
from features.store import OnlineStore, refresh_store
from serving.decider import Decider
from serving.settings import load_settings
from training.ab_report import ab_report, decision_profit, write_report
from training.promote import judge, promote_if_better
from training.train import TrainConfig, train_model

log = logging.getLogger(__name__)

HOUR = 3600.0


@dataclass(frozen=True)
class LoopConfig:
    """Size and settings of a loop run."""

    rounds: int = 6
    customers: int = 20_000
    seed: int = 0
    holdout: float = 0.10
    explore: float = 0.10
    train: TrainConfig = field(default_factory=lambda: TrainConfig.for_simulated(n_folds=0))
    judge_share: float = 0.3
    min_gain: float = 0.0
    n_boot: int = 500
    workdir: Path = Path("outputs/loop")
    model_name: str = "offerlift-simulated"

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.customers < 200:
            raise ConfigError(f"a loop needs rounds >= 1 and customers >= 200, got {self.rounds}, {self.customers}")
        if not 0.05 <= self.judge_share <= 0.8:
            raise ConfigError(f"judge_share must be in [0.05, 0.8], got {self.judge_share!r}")


@dataclass
class LoopState:
    """What the loop carries from round to round."""

    world: SimWorld
    registry: RegistrySettings
    events: pd.DataFrame
    decisions: list[pd.DataFrame] = field(default_factory=list)
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

    activate(state.registry)
    with mlflow.start_run(run_name="random-policy"):
        info = log_scorer_model(
            random_policy_spec(state.world.catalog, features), workdir / "random", state.registry.model_name
        )
    version = str(info.registered_model_version)
    from features.registry import set_alias

    set_alias(state.registry, CHAMPION, version)
    return version


def _serve_round(decider: Decider, world: SimWorld, t_hours: float, rng: np.random.Generator) -> pd.DataFrame:
    ids = world.customers["customer_id"].to_numpy()
    rows = []
    for cid in ids[rng.permutation(len(ids))]:
        d = decider.decide(str(cid), {"timestamp": t_hours * HOUR})
        rows.append((d.decision_id, str(cid), t_hours, d.arm, d.propensity, d.group, d.model_version))
    return pd.DataFrame(
        rows, columns=["decision_id", "customer_id", "time", "arm", "propensity", "grp", "model_version"]
    )


def _play(state: LoopState, decider: Decider, decisions: pd.DataFrame, seed: int) -> pd.DataFrame:
    played = state.world.play(
        decisions.rename(columns={"decision_id": "unit_id"})[["unit_id", "customer_id", "time", "arm"]], seed=seed
    )
    out = played.outcomes
    window = state.world.config.window_hours
    events = [
        {
            "event_id": f"{u}:outcome",
            "decision_id": u,
            "customer_id": c,
            "ts": (t + window / 2) * HOUR,
            "visit": float(v),
            "buy": float(b),
            "spend": float(s),
            "redeem": float(r),
        }
        for u, c, t, v, b, s, r in zip(
            out["unit_id"],
            out["customer_id"],
            out["decision_time"],
            out["visit"],
            out["buy"],
            out["spend"],
            out["redeem"],
            strict=True,
        )
    ]
    decider.record_outcomes(events)
    state.events = pd.concat([state.events, played.events], ignore_index=True)
    return out


def _joined(decider: Decider, window_hours: float) -> pd.DataFrame:
    decisions = pd.DataFrame(decider.log.read("decisions"))
    outcomes = pd.DataFrame(decider.log.read("outcomes"))
    return attribute(decisions, outcomes, window_hours * HOUR).joined


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


def _training_experiment(state: LoopState, joined: pd.DataFrame) -> Experiment:
    """Every logged decision so far, with point-in-time features and its logged propensity."""
    d = pd.concat(state.decisions, ignore_index=True)
    j = joined.set_index("decision_id").loc[d["decision_id"]]
    assignments = pd.DataFrame(
        {
            "unit_id": d["decision_id"],
            "customer_id": d["customer_id"],
            "time": d["time"],
            "arm": d["arm"],
            "propensity": d["propensity"],
            "group": d["grp"].where(d["grp"] != "holdout", "holdout"),
        }
    )
    outcomes = pd.DataFrame(
        {
            "unit_id": d["decision_id"],
            "customer_id": d["customer_id"],
            "time": d["time"] + state.world.config.window_hours,
            "visit": j["visit"].to_numpy(),
            "buy": j["buy"].to_numpy(),
            "spend": j["spend"].to_numpy(),
            "redeem": j["redeem"].to_numpy(),
        }
    )
    feats = build_features(state.events, state.world.customers, assignments[["unit_id", "customer_id", "time"]])
    return Experiment(
        "simulated-loop", state.world.catalog, state.world.customers, assignments, outcomes, feats, main_outcome="buy"
    ).validate()


def _judge_split(customer_ids: pd.Series, share: float, seed: int) -> np.ndarray:
    """True for customers whose newest decisions judge the challenger (and are left out of its training)."""
    from serving.policy import holdout_unit

    return holdout_unit(customer_ids.astype(str).tolist(), f"judge-{seed}") < share


def run_loop(cfg: LoopConfig, tracking_uri: str | None = None) -> dict[str, Any]:
    """Run the loop; returns the JSON-ready result with one entry per round (see the module doc)."""
    workdir = Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("decisions.db", "decisions.db-wal", "decisions.db-shm", "online_store.db"):
        (workdir / name).unlink(missing_ok=True)
    base = resolve_tracking_uri(tracking_uri)
    registry = RegistrySettings(base.tracking_uri, base.artifact_root, cfg.model_name, base.experiment)
    world = SimWorld.default(n_customers=cfg.customers, seed=cfg.seed)
    state = LoopState(world=world, registry=registry, events=world.history_events())
    window = world.config.window_hours
    rng = np.random.default_rng(cfg.seed)
    store = OnlineStore(workdir / "online_store.db")
    refresh_store(store, state.events, world.customers, at=0.0)
    spec = FeatureSpec.from_frame(latest_features(state.events, world.customers, at=0.0))
    _register_random(state, spec, workdir)
    started = time.perf_counter()
    explore = 1.0
    for r in range(cfg.rounds):
        t = r * window
        if r > 0:
            refresh_store(store, state.events[state.events["time"] < t], world.customers, at=t)
        decider = Decider(_settings(cfg, registry, explore=explore, workdir=workdir), store=store)
        decider.load_champion()
        t0 = time.perf_counter()
        decisions = _serve_round(decider, world, t, rng)
        state.decisions.append(decisions)
        serve_s = time.perf_counter() - t0
        greedy = _greedy_of(decider, store, world, decisions)
        truth = _truth_values(world, decisions, greedy, t)
        _play(state, decider, decisions, seed=cfg.seed * 1000 + r)
        joined = _joined(decider, window)
        report, report_paths = _report(cfg, state, joined, decisions, workdir / f"round_{r}")
        entry = {
            "round": r,
            "model_version": decisions["model_version"].iloc[0],
            "customers": len(decisions),
            **truth,
            "ab_lift": report["lift"]["estimate"],
            "ab_lift_ci": [report["lift"]["ci_low"], report["lift"]["ci_high"]],
            "srm_ok": report["srm"]["ok"],
            "report": str(report_paths["html"]),
            "serve_seconds": serve_s,
        }
        entry["ab_ci_covers_true_lift"] = bool(entry["ab_lift_ci"][0] <= truth["true_lift"] <= entry["ab_lift_ci"][1])
        entry.update(_retrain_and_promote(cfg, state, decider, joined, decisions, r))
        challenger = load_model(f"models:/{registry.model_name}/{entry['challenger_version']}")
        rows = world.rows_of(decisions["customer_id"])
        entry["challenger_greedy_value"] = float(
            world.truth(rows, t).values(_greedy(challenger, store, decisions)).mean()
        )
        if entry["promoted"]:
            decider.settings = _settings(cfg, registry, explore=cfg.explore, workdir=workdir)
            decider.refresh()
            decider._champion = type(decider._champion).build(
                decider._champion.scorer, decider._champion.version, decider.settings
            )
        state.rounds.append(entry)
        log.info(
            "round %d: policy %.4f, oracle %.4f (%.0f%%), A/B lift %.4f [%.4f, %.4f], true lift %.4f, %s",
            r,
            truth["policy_value"],
            truth["oracle_value"],
            100 * truth["share_of_oracle"],
            entry["ab_lift"],
            *entry["ab_lift_ci"],
            truth["true_lift"],
            "promoted" if entry["promoted"] else "kept",
        )
    decider.close()
    return {
        "rounds": state.rounds,
        "seconds": time.perf_counter() - started,
        "customers": cfg.customers,
        "seed": cfg.seed,
        "workdir": str(workdir),
        "report": state.rounds[-1]["report"],
    }


def _greedy_of(decider: Decider, store: OnlineStore, world: SimWorld, decisions: pd.DataFrame) -> np.ndarray:
    """The serving model's greedy arm for every customer of the round (allowed arms only)."""
    return _greedy(decider.champion.scorer, store, decisions)


def _greedy(scorer: ArmScorer, store: OnlineStore, decisions: pd.DataFrame) -> np.ndarray:
    from features.eligibility import reachable_arms
    from training.evaluate import greedy_arms

    frame = store.to_frame(scorer.features.columns).loc[decisions["customer_id"]]
    incr = scorer.incremental_profit(scorer.features.encode(frame))
    allowed = reachable_arms(scorer.catalog, frame, len(frame))
    return greedy_arms(incr, allowed)


def _report(cfg: LoopConfig, state: LoopState, joined: pd.DataFrame, decisions: pd.DataFrame, out: Path):
    rows = joined.set_index("decision_id").loc[decisions["decision_id"]].reset_index()
    feats = build_features(
        state.events,
        state.world.customers,
        rows.assign(unit_id=rows["decision_id"], time=rows["ts"] / HOUR)[["unit_id", "customer_id", "time"]],
    )
    rows["pre_spend"] = feats["spend_30d"].to_numpy()
    report = ab_report(
        rows,
        state.world.catalog,
        cfg.holdout,
        campaign=f"round-{rows['ts'].iloc[0] / HOUR:.0f}h",
        covariate="pre_spend",
    )
    return report, write_report(report, out)


def _retrain_and_promote(
    cfg: LoopConfig, state: LoopState, decider: Decider, joined: pd.DataFrame, decisions: pd.DataFrame, r: int
) -> dict[str, Any]:
    exp = _training_experiment(state, joined)
    judged = _judge_split(exp.assignments["customer_id"], cfg.judge_share, cfg.seed)
    train_exp = _subset(exp, ~judged)
    result = train_model(train_exp, cfg.train, state.registry)
    challenger = load_model(result.model_uri)
    champion_version = decider.champion.version
    champion = None if r == 0 else decider.champion.scorer
    units = exp.units()[judged]
    feats = exp.features.loc[units.index]
    from features.eligibility import reachable_arms

    allowed = reachable_arms(exp.catalog, feats, len(feats))
    rewards = decision_profit(units.assign(redeem=units["redeem"]), exp.catalog)
    evidence = judge(
        champion,
        challenger,
        feats,
        units["arm"].to_numpy(),
        rewards,
        units["propensity"].to_numpy(float),
        allowed,
        cfg.min_gain,
        cfg.n_boot,
        cfg.seed + r,
    )
    verdict = promote_if_better(state.registry, result.version, champion_version, evidence, int(judged.sum()))
    assert alias_version(state.registry, CHALLENGER) == result.version
    return {
        "promoted": verdict.promoted,
        "challenger_version": result.version,
        "promotion_evidence": {"diff": verdict.diff, "ci": [verdict.ci_low, verdict.ci_high], "units": verdict.units},
        "train_units": int((~judged).sum()),
    }


def _subset(exp: Experiment, keep: np.ndarray) -> Experiment:
    a = exp.assignments[keep].reset_index(drop=True)
    o = exp.outcomes.set_index("unit_id").loc[a["unit_id"]].reset_index()
    return Experiment(exp.name, exp.catalog, exp.customers, a, o, exp.features.loc[a["unit_id"]], exp.main_outcome)
