"""The closed loop on the simulated world: decide, observe, join, report, retrain, test, promote, again.

Each round serves every customer of the world once at the round's simulated time, through the service's decision
code: `offerlift.serving.decide_many.decide_logged` makes and logs exactly the decisions
`offerlift.serving.decider.Decider.decide` would make one customer after the other (online store, rules, caps,
the pure policy, the champion/challenger split, the decision log; tested equal), in one transaction. The world
plays the decisions forward; its outcomes go into the decision log through the service's outcome path; the
attribution join and the A/B report read them from the log; the world's exact truth values every policy.

Promotion is a champion/challenger design (`offerlift.training.challenger_gate`):

1. After each round a candidate is trained on every logged decision so far of the training customers (all
   groups, with their logged propensities). The customers are split once, by a stable hash, into a training part
   and a screening part (``judge_share``).
2. Safety screen: before it gets traffic, the candidate's greedy policy is valued off-policy against the
   champion's on every logged decision of the screening customers, which no model trains on
   (`offerlift.training.promote.judge`: paired doubly robust difference, customer-level standard error). Only a
   candidate that is clearly worse (its upper bound below 0) is stopped.
3. Live test: the screened candidate becomes the challenger (registry alias ``challenger``) and decides for
   ``challenger_share`` of the customers outside the holdout, drawn again every round. After each round the two
   groups' realized profit is compared on-policy where the two policies could act differently, CUPED-adjusted on
   the customers' point-in-time features, and added to an always-valid one-sided confidence sequence: the
   challenger is promoted when its lower bound is above ``min_gain``, stopped when its upper bound is below 0, and
   retired after ``trial.max_looks`` rounds without a verdict (the next candidate takes its place).

Round 0 starts from a random policy (a model that knows nothing and explores every decision).

Values are the world's exact incremental profit per customer over "no offer to anyone" (0):
- ``policy_value``: the policy that served the round (champion and challenger traffic, holdout, exploration);
- ``greedy_value`` / ``challenger_greedy_value``: the champion's / challenger's greedy choices for every customer;
- ``best_single_arm_value``: the best single arm for everyone; ``ceiling_value``: the feature ceiling
  (`offerlift.references`); ``oracle_value``: the best possible policy; ``share_of_*`` = policy_value / each;
- ``ab_lift`` / ``ab_lift_ci``: the A/B report's estimate (treated vs holdout, per treated customer);
  ``true_lift``: the world's exact mean incremental profit of the treated customers' arms;
- ``true_diff``: the exact difference of the challenger's and the champion's policies as served (customers
  outside the holdout), what the live test estimates; ``promotion_evidence``: the test's estimate, bounds and
  verdict; ``screen``: the safety screen of the round's candidate.
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
    set_alias,
)
from offerlift.models.scoring import FORMAT, ArmScorer, FeatureSpec
from offerlift.references import best_single_arm, feature_ceiling
from offerlift.serving.decide_many import LoggedBatch, decide_logged
from offerlift.serving.decider import Decider, registry_loader
from offerlift.serving.decision_log import DecisionLog
from offerlift.serving.decision_log import decisions as decision_table
from offerlift.serving.decision_log import outcomes as outcome_table
from offerlift.serving.policy import arm_probabilities, holdout_unit
from offerlift.serving.settings import load_settings
from offerlift.simworld.world import SimWorld
from offerlift.training.ab_report import ab_report, decision_profit, write_report
from offerlift.training.challenger_gate import ChallengerTrial, TrialConfig, look_difference
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

    ``explore_scheme``, ``temperature`` and ``explore_floor`` are the exploration of the served policies
    (`offerlift.serving.policy`); ``challenger_share`` the challenger's share of the customers outside the holdout;
    ``trial`` the live test (its ``n_star`` defaults to the round's customers outside the holdout); ``gate`` the
    safety screen's off-policy comparison. ``ceiling_sample`` customers a round value the feature ceiling (0: not
    computed). With ``compiled`` (and lleaves installed) the loop's decisions and the screen score with compiled
    trees (`offerlift.models.compiled`: the same predictions up to about 1e-12, about five times faster). ``world`` is a
    preset name or a spec file (None: the default world). ``n_boot`` is kept for callers."""

    rounds: int = 6
    customers: int = 20_000
    seed: int = 0
    holdout: float = 0.10
    explore: float = 0.10
    explore_scheme: str = "softmax"
    temperature: float = 1.0
    explore_floor: float = 0.2
    challenger_share: float = 0.5
    train: TrainConfig = field(default_factory=lambda: TrainConfig.for_simulated(n_folds=0))
    judge_share: float = 0.3
    min_gain: float = 0.0
    n_boot: int = 500
    gate: GateConfig = field(default_factory=GateConfig)
    trial: TrialConfig | None = None
    workdir: Path = Path("outputs/loop")
    model_name: str = "offerlift-simulated"
    round_hook: RoundHook | None = None
    compiled: bool = True
    ceiling_sample: int = 40_000
    world: str | Path | None = None

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.customers < 200:
            raise ConfigError(f"a loop needs rounds >= 1 and customers >= 200, got {self.rounds}, {self.customers}")
        if not 0.05 <= self.judge_share <= 0.8:
            raise ConfigError(f"judge_share must be in [0.05, 0.8], got {self.judge_share!r}")
        if not 0.0 < self.challenger_share <= 0.5:
            raise ConfigError(f"challenger_share must be in (0, 0.5], got {self.challenger_share!r}")

    def trial_config(self) -> TrialConfig:
        """The live test's settings (``n_star``: the customers of one round outside the holdout)."""
        if self.trial is not None:
            return replace(self.trial, min_gain=self.min_gain)
        return TrialConfig(n_star=max(10, round(self.customers * (1 - self.holdout))), min_gain=self.min_gain)


@dataclass
class LoopState:
    """What the loop carries from round to round: per round, the logged units (decisions joined to their
    outcomes, with a judge flag) and their point-in-time features; per champion version, its greedy choices
    on the screening units of each round; the running live test."""

    world: SimWorld
    registry: RegistrySettings
    events: pd.DataFrame
    random_version: str = ""
    units: list[pd.DataFrame] = field(default_factory=list)
    features: list[pd.DataFrame] = field(default_factory=list)
    choices: dict[str, list[np.ndarray]] = field(default_factory=dict)
    fast: dict[str, ArmScorer] = field(default_factory=dict)
    trial: ChallengerTrial | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)


def random_policy_spec(catalog: Catalog, features: FeatureSpec) -> dict[str, Any]:
    """A model that predicts nothing (every arm scores 0) and explores every decision: the starting point."""
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
        "metadata": {"kind": "random policy", "explore_all": True},
    }


def _settings(cfg: LoopConfig, registry: RegistrySettings, workdir: Path, share: float, period_hours: float):
    return load_settings(
        overrides={
            "insecure": True,
            "use_context_time": True,
            "decision_log_url": f"sqlite:///{workdir / 'decisions.db'}",
            "online_store_path": str(workdir / "online_store.db"),
            "policy": {
                "holdout": cfg.holdout,
                "explore": cfg.explore,
                "explore_scheme": cfg.explore_scheme,
                "temperature": cfg.temperature,
                "explore_floor": cfg.explore_floor,
                "experiment": f"loop-{cfg.seed}",
                "explain_top": 0,
                "challenger_share": share,
                "challenger_period_hours": period_hours,  # the split is drawn again every round
            },
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
    set_alias(state.registry, CHAMPION, version)
    return version


def _serve_round(decider: Decider, world: SimWorld, t_hours: float, rng: np.random.Generator):
    """Every customer once, in a random order, through the service's decisions; (decisions, the batch)."""
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
            "policy": rows["policy"],
            "champion_arm": rows["champion_arm"],
            "challenger_arm": rows["challenger_arm"],
        }
    )
    return decisions, batch


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


def _arm_index(world: SimWorld, arms: pd.Series) -> np.ndarray:
    return pd.Index(world.arm_ids).get_indexer(arms.fillna(world.arm_ids[0]))


def _truth_values(
    world: SimWorld, decider: Decider, decisions: pd.DataFrame, batch: LoggedBatch, t: float, cfg: LoopConfig
) -> dict[str, Any]:
    """Exact values of the round's policies on the round's customers (see the module doc)."""
    rows = world.rows_of(decisions["customer_id"])
    truth = world.truth(rows, t)
    served = _arm_index(world, decisions["arm"])
    treated = decisions["grp"].isin(["explore", "exploit"]).to_numpy()
    values = truth.values(served)
    oracle = float(truth.values(truth.oracle()).mean())
    policy = float(values.mean())
    out: dict[str, Any] = {
        "policy_value": policy,
        "greedy_value": float(truth.values(_arm_index(world, decisions["champion_arm"])).mean()),
        "oracle_value": oracle,
        "share_of_oracle": policy / oracle if oracle > 0 else float("nan"),
        "true_lift": float(values[treated].mean()) if treated.any() else float("nan"),
        "no_offer_value": 0.0,
        **best_single_arm(world, rows, t),
    }
    best = out["best_single_arm_value"]
    out["share_of_best_single_arm"] = policy / best if best > 0 else float("nan")
    by_challenger = (decisions["policy"] == "challenger").to_numpy()
    out["challenger_greedy_value"] = (
        float(truth.values(_arm_index(world, decisions["challenger_arm"])).mean())
        if decisions["challenger_arm"].notna().all()
        else float("nan")
    )
    out["true_diff"] = _true_difference(decider, batch, truth.incr, decisions) if by_challenger.any() else float("nan")
    out.update(_exploration_values(decider, batch, truth.incr, cfg))
    return out


def _exploration_values(decider: Decider, batch: LoggedBatch, incr: np.ndarray, cfg: LoopConfig) -> dict[str, float]:
    """Exact value per customer of one exploration draw on the champion's scores, with the configured scheme and with
    uniform exploration, and what each costs per customer served (explore share x the greedy value given up)."""
    champ = decider.champion
    nan = float("nan")
    if batch.allowed is None or champ.policy.explore >= 1.0:  # the random policy explores everything
        return {"explore_value": nan, "explore_value_uniform": nan, "exploration_cost": nan,
                "exploration_cost_uniform": nan}  # fmt: skip
    zeros = np.zeros_like(batch.incr)

    def value(config: Any) -> float:
        return float((arm_probabilities(batch.incr, zeros, batch.allowed, config) * incr).sum(axis=1).mean())

    values = {
        "explore_value": value(replace(champ.policy, explore=1.0)),
        "explore_value_uniform": value(replace(champ.policy, explore=1.0, explore_scheme="uniform")),
    }
    greedy = value(replace(champ.policy, explore=0.0))
    share = champ.policy.explore * (1.0 - champ.policy.holdout)
    values["exploration_cost"] = share * (greedy - values["explore_value"])
    values["exploration_cost_uniform"] = share * (greedy - values["explore_value_uniform"])
    return values


def _true_difference(decider: Decider, batch: LoggedBatch, incr: np.ndarray, decisions: pd.DataFrame) -> float:
    """The exact difference of the challenger's and the champion's policies as served (same rules, each with its
    exploration), per customer outside the holdout: what the live test estimates."""
    champ, chall = decider.champion, decider.challenger
    if chall is None or batch.allowed is None or batch.challenger_incr is None:
        return float("nan")
    zeros = np.zeros_like(batch.incr)
    p_champ = arm_probabilities(batch.incr, zeros, batch.allowed, champ.policy)
    p_chall = arm_probabilities(batch.challenger_incr, zeros, batch.allowed, chall.policy)
    # without a pacing price the costs do not enter the choice; decisions are in the batch's order
    outside = (decisions["grp"] != "holdout").to_numpy()
    gain = ((p_chall - p_champ) * incr).sum(axis=1)
    return float(gain[outside].mean())


def _judge_split(customer_ids: pd.Series, share: float, seed: int) -> np.ndarray:
    """True for customers whose decisions screen candidates (and are left out of their training)."""
    return holdout_unit(customer_ids.astype(str).tolist(), f"judge-{seed}") < share


def _round_units(cfg: LoopConfig, decisions: pd.DataFrame, joined: pd.DataFrame) -> pd.DataFrame:
    """The round's decisions with their attributed outcomes and the judge flag (index decision_id)."""
    j = joined.set_index("decision_id").loc[decisions["decision_id"]]
    units = decisions.set_index("decision_id")
    for col in ("visit", "buy", "spend", "redeem"):
        units[col] = j[col].to_numpy(dtype=float)
    units["judge"] = _judge_split(units["customer_id"], cfg.judge_share, cfg.seed)
    return units


def run_loop(cfg: LoopConfig, tracking_uri: str | None = None, progress: Callable[[str], None] | None = None):
    """Run the loop; returns the JSON-ready result with one entry per round (see the module doc). ``progress``
    gets one line per finished round."""
    workdir = Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("decisions.db", "decisions.db-wal", "decisions.db-shm", "decisions.db.lock", "online_store.db"):
        (workdir / name).unlink(missing_ok=True)
    base = resolve_tracking_uri(tracking_uri)
    registry = RegistrySettings(base.tracking_uri, base.artifact_root, cfg.model_name, base.experiment)
    world = make_world(cfg)
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
        line = round_line(entry)
        log.info("%s", line)
        if progress is not None:
            progress(line)
    store.close()
    return {
        "rounds": state.rounds,
        "seconds": time.perf_counter() - started,
        "customers": cfg.customers,
        "seed": cfg.seed,
        "world": str(cfg.world) if cfg.world is not None else "default",
        "workdir": str(workdir),
        "report": state.rounds[-1]["report"],
        "verdict": verdict_line(state.rounds),
    }


def make_world(cfg: LoopConfig) -> SimWorld:
    """The loop's world: the named preset or spec file of ``cfg.world`` (None: the default world)."""
    if cfg.world is None:
        return SimWorld.default(n_customers=cfg.customers, seed=cfg.seed)
    from offerlift.simworld.config import resolve_world

    return SimWorld.from_yaml(resolve_world(cfg.world), n_customers=cfg.customers, seed=cfg.seed)


def round_line(entry: dict[str, Any]) -> str:
    """One line of progress for a finished round."""
    verdict = entry["promotion_evidence"].get("verdict", "-")
    return (
        f"round {entry['round']} ({entry['seconds']:.0f}s): served {entry['policy_value']:+.4f} per customer "
        f"(best single arm {entry['best_single_arm_value']:+.4f}, ceiling {_fmt(entry.get('ceiling_value'))}, "
        f"oracle {entry['oracle_value']:+.4f}); challenger {entry.get('challenger_version') or '-'}: {verdict}"
    )


def rounds_table(result: dict[str, Any]) -> str:
    """The rounds as a fixed-width text table with the floors, the ceiling, the shares and the test's verdicts."""
    head = (
        f"{'round':>5} {'champion':>8} {'challenger':>10} {'served':>8} {'best arm':>8} {'ceiling':>8} "
        f"{'oracle':>8} {'% ceil':>6} {'% orcl':>6} {'A/B lift [95% CI]':>26} {'true lift':>9}  verdict"
    )
    lines = [head]
    for r in result["rounds"]:
        ceiling = r.get("ceiling_value")
        share_c = f"{r['share_of_ceiling']:.0%}" if ceiling and ceiling > 0 else "-"
        lo, hi = r["ab_lift_ci"]
        ev = r.get("promotion_evidence") or {}
        verdict = ev.get("verdict", "-")
        if verdict != "-":
            verdict = f"{verdict} ({ev['diff']:+.3f}, bound {ev['ci'][0]:+.3f})"
        challenger = f"v{r['challenger_version']}" if r.get("challenger_version") else "-"
        lines.append(
            f"{r['round']:>5} {'v' + str(r['model_version']):>8} {challenger:>10} "
            f"{r['policy_value']:>+8.4f} {r['best_single_arm_value']:>+8.4f} {_fmt(ceiling):>8} "
            f"{r['oracle_value']:>+8.4f} {share_c:>6} {r['share_of_oracle']:>6.0%} "
            f"{r['ab_lift']:>+8.3f} [{lo:+.3f}, {hi:+.3f}] {r['true_lift']:>+9.4f}  {verdict}"
        )
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:+.4f}"


def verdict_line(rounds: list[dict[str, Any]]) -> str:
    """The loop in one line: the first promotion and where the served policy ended, against its floors."""
    promoted = [r for r in rounds if r["promoted"]]
    last = rounds[-1]
    head = (
        f"round {promoted[0]['round']}: challenger v{promoted[0]['challenger_version']} promoted"
        if promoted
        else "no challenger was promoted"
    )
    ceiling = last.get("ceiling_value")
    share = f", {last['share_of_ceiling']:.0%} of the feature ceiling" if ceiling and ceiling > 0 else ""
    gap = last["policy_value"] - last["best_single_arm_value"]
    return (
        f"{head}; round {last['round']}: served policy {last['policy_value']:+.4f} per customer{share}, "
        f"{gap:+.4f} {'above' if gap >= 0 else 'below'} the best single coupon ({last['best_single_arm']})"
    )


def _round(
    cfg: LoopConfig, state: LoopState, store: OnlineStore, workdir: Path, r: int, rng: np.random.Generator
) -> dict[str, Any]:
    """One round: serve, value exactly, play, join, report, test the challenger, retrain and screen."""
    world, window = state.world, state.world.config.window_hours
    t = r * window
    t0 = time.perf_counter()
    if r > 0:
        refresh_store(store, state.events[state.events["time"] < t], world.customers, at=t)
    share = cfg.challenger_share if state.trial is not None else 0.0
    settings = _settings(cfg, state.registry, workdir, share, window)
    plain = registry_loader(settings)

    def load(version: str) -> ArmScorer:
        cached = state.fast.get(str(version))
        return cached if cached is not None else _judging_scorer(cfg, state, str(version), plain(str(version)))

    decider = Decider(settings, store=store, loader=load)
    decider.load_champion()
    if state.trial is not None and (decider.challenger is None or
                                    decider.challenger.version != state.trial.challenger_version):  # fmt: skip
        raise ConfigError(f"challenger {state.trial.challenger_version} is not the one the service loaded")
    decisions, batch = _serve_round(decider, world, t, rng)
    serve_s = time.perf_counter() - t0
    truth = _truth_values(world, decider, decisions, batch, t, cfg)
    _play(state, decider.log, decisions, seed=cfg.seed * 1000 + r)
    units = _round_units(cfg, decisions, _joined_round(decider.log, t, window))
    as_of = pd.DataFrame({"unit_id": units.index, "customer_id": units["customer_id"].to_numpy(), "time": t})
    feats = build_features(state.events, world.customers, as_of)
    state.units.append(units)
    state.features.append(feats)
    report, paths = _report(cfg, state, units, feats, workdir / f"round_{r}", t)
    entry: dict[str, Any] = {
        "round": r,
        "model_version": decider.champion.version,
        "customers": len(decisions),
        **truth,
        "ab_lift": report["lift"]["estimate"],
        "ab_lift_ci": [report["lift"]["ci_low"], report["lift"]["ci_high"]],
        "srm_ok": report["srm"]["ok"],
        "report": str(paths["html"]),
        "serve_seconds": serve_s,
    }
    entry["ab_ci_covers_true_lift"] = bool(entry["ab_lift_ci"][0] <= truth["true_lift"] <= entry["ab_lift_ci"][1])
    if cfg.ceiling_sample > 0:
        rows = world.rows_of(units["customer_id"].to_numpy())
        ceil = feature_ceiling(world, feats.reset_index(drop=True), rows, t, cfg.ceiling_sample, cfg.seed + r)
        entry.update(ceil)
        c = ceil["ceiling_value"]
        entry["share_of_ceiling"] = truth["policy_value"] / c if c > 0 else float("nan")
        entry["greedy_share_of_ceiling"] = truth["greedy_value"] / c if c > 0 else float("nan")
    if cfg.round_hook is not None:
        entry.update(cfg.round_hook(world, units.join(feats), t))
    champion = decider.champion
    decider.close()
    entry.update(_test_challenger(cfg, state, units, feats, r))
    entry.update(_retrain_and_screen(cfg, state, r))
    entry["champion_greedy_value_judged"] = entry["greedy_value"]
    entry["champion_version_next"] = alias_version(state.registry, CHAMPION) or champion.version
    entry["seconds"] = time.perf_counter() - t0
    return entry


def _report(cfg: LoopConfig, state: LoopState, units: pd.DataFrame, feats: pd.DataFrame, out: Path, t: float):
    rows = units.reset_index()
    rows["pre_spend"] = feats["spend_30d"].to_numpy()
    report = ab_report(rows, state.world.catalog, cfg.holdout, campaign=f"round-{t:.0f}h", covariate="pre_spend")
    return report, write_report(report, out)


def covariates(feats: pd.DataFrame) -> np.ndarray:
    """The point-in-time numeric features of the decisions, for CUPED (missing values as 0 plus a flag)."""
    num = feats.select_dtypes(include=[np.number, "bool"]).astype(float)
    cols = [num.fillna(0.0).to_numpy()]
    missing = num.isna().to_numpy()
    if missing.any():
        cols.append(missing[:, missing.any(axis=0)].astype(float))
    X = np.hstack(cols)
    keep = X.std(axis=0) > 0
    return X[:, keep]


def _test_challenger(
    cfg: LoopConfig, state: LoopState, units: pd.DataFrame, feats: pd.DataFrame, r: int
) -> dict[str, Any]:
    """The live test's look at this round (when a challenger served), its verdict and the promotion."""
    trial = state.trial
    if trial is None:
        return {"promoted": False, "challenger_version": None, "promotion_evidence": {}}
    outside = (units["grp"] != "holdout").to_numpy()
    u = units[outside]
    look = look_difference(
        decision_profit(u, state.world.catalog),
        (u["policy"] == "challenger").to_numpy(),
        (u["grp"] == "explore").to_numpy(),
        u["champion_arm"].to_numpy(dtype=object),
        u["challenger_arm"].to_numpy(dtype=object),
        covariates(feats[outside]),
    )
    evidence = trial.add(look)
    verdict = evidence["verdict"]
    record = {
        "promote": evidence["promote"],
        "value_a": float("nan"),
        "value_b": float("nan"),
        "diff": evidence["diff"],
        "ci_low": evidence["ci"][0],
        "ci_high": evidence["ci"][1],
        "estimator": "on-policy champion/challenger, CUPED, one-sided confidence sequence",
        "reason": (
            f"challenger v{trial.challenger_version} vs champion v{trial.champion_version} after {evidence['looks']} "
            f"look(s): {evidence['diff']:+.4f} per unit (se {evidence['se']:.4f}), always-valid one-sided "
            f"{evidence['level']:.0%} bounds [{evidence['ci'][0]:+.4f}, {evidence['ci'][1]:+.4f}] -> {verdict}"
        ),
        "se": evidence["se"],
        "mde": evidence["mde"],
        "n_differ": evidence["informative_units"],
    }
    result = promote_if_better(state.registry, trial.challenger_version, trial.champion_version, record,
                               evidence["units"])  # fmt: skip
    if verdict != "continue":
        state.trial = None
    return {
        "promoted": result.promoted,
        "challenger_version": trial.challenger_version,
        "promotion_evidence": {
            "diff": evidence["diff"],
            "ci": evidence["ci"],
            "se": evidence["se"],
            "mde": evidence["mde"],
            "units": evidence["units"],
            "units_differ": evidence["informative_units"],
            "estimator": record["estimator"],
            "level": evidence["level"],
            "verdict": verdict,
            "looks": evidence["looks"],
            "boundary_z": evidence["boundary_z"],
            "variance_kept": evidence["variance_kept"],
        },
    }


def _experiment(state: LoopState, judged: bool) -> Experiment:
    """Every logged decision so far of the screening (or of the training) customers, with point-in-time features
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
    """The scorer the loop uses for a model version: compiled trees when configured and available (cached)."""
    if not cfg.compiled:
        return scorer
    if version not in state.fast:
        from offerlift.models import compiled

        state.fast[version] = scorer
        if compiled.available():
            try:
                state.fast[version] = compiled.compile_scorer(scorer, Path(cfg.workdir) / "compiled")
            except Exception as exc:  # the screen still works with the plain scorer, only slower
                log.warning("could not compile model %s for the screen, using LightGBM: %s", version, exc)
    return state.fast[version]


def _champion_choices(cfg: LoopConfig, state: LoopState, version: str, judged: list[pd.DataFrame]) -> np.ndarray:
    """The champion's greedy arm on every screening unit so far (cached per round; the random policy offers
    nothing)."""
    cached = state.choices.setdefault(version, [])
    if len(cached) < len(judged) and version != state.random_version:
        scorer = state.fast.get(version) or _judging_scorer(cfg, state, version, load_model(_model_uri(state, version)))
    for r in range(len(cached), len(judged)):
        feats = judged[r]
        if version == state.random_version:
            cached.append(np.zeros(len(feats), dtype=np.intp))
        else:
            allowed = reachable_arms(state.world.catalog, feats, len(feats))
            cached.append(greedy_policy(scorer, feats, allowed)[0])
    return np.concatenate(cached)


def _model_uri(state: LoopState, version: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(state.registry.tracking_uri)
    return f"models:/{state.registry.model_name}/{version}"


def _retrain_and_screen(cfg: LoopConfig, state: LoopState, r: int) -> dict[str, Any]:
    """Train the round's candidate; when no live test runs, screen it and make it the next round's challenger."""
    result = train_model(_experiment(state, judged=False), cfg.train, state.registry)
    out: dict[str, Any] = {"candidate_version": str(result.version), "train_units": 0, "screen": {}}
    out["train_units"] = int(sum(int((~u["judge"]).sum()) for u in state.units))
    if state.trial is not None:
        out["screen"] = {"skipped": f"challenger v{state.trial.challenger_version} is still in its live test"}
        set_alias(state.registry, CHALLENGER, state.trial.challenger_version)
        return out
    champion = alias_version(state.registry, CHAMPION)
    candidate = _judging_scorer(cfg, state, str(result.version), load_model(result.model_uri))
    judged = [f[u["judge"].to_numpy()] for u, f in zip(state.units, state.features, strict=True)]
    units = pd.concat([u[u["judge"]] for u in state.units])
    feats = pd.concat(judged)
    allowed = reachable_arms(state.world.catalog, feats, len(feats))
    old = _champion_choices(cfg, state, champion, judged)
    gate = replace(cfg.gate, seed=cfg.seed + r)
    evidence = judge(
        None,
        candidate,
        feats,
        units["arm"].to_numpy(),
        decision_profit(units, state.world.catalog),
        units["propensity"].to_numpy(float),
        allowed,
        gate=gate,
        customer_ids=units["customer_id"].to_numpy(),
        champion_choices=old,
    )
    passed = bool(evidence["ci_high"] > 0)
    out["screen"] = {
        "diff": float(evidence["diff"]),
        "ci": [float(evidence["ci_low"]), float(evidence["ci_high"])],
        "se": float(evidence["se"]),
        "units": int(evidence["n"]),
        "passed": passed,
        "estimator": evidence["estimator"],
    }
    if passed:
        state.trial = ChallengerTrial(str(result.version), str(champion), cfg.trial_config())
        set_alias(state.registry, CHALLENGER, str(result.version))
    log.info(
        "screen of candidate v%s against champion v%s: %+.4f [%+.4f, %+.4f] -> %s",
        result.version, champion, evidence["diff"], evidence["ci_low"], evidence["ci_high"],
        "live test next round" if passed else "stopped",
    )  # fmt: skip
    return out
