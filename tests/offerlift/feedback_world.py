"""A decision log from the simulated world, as the service writes it, for the feedback-loop tests.

`SimLog.decide` decides for every customer of the world with a registered model's greedy choice among the
reachable arms (or a random policy), with a holdout and exploration, and logs each decision as the service does:
the arm, its propensity, the feature snapshot scored and the treated policy's probability of every allowed arm.
`SimLog.outcomes_file` plays the decisions forward in the world and writes their outcome events as a CSV.
The world's exact truth gives the value of any policy.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from offerlift.features.build import latest_features
from offerlift.features.eligibility import reachable_arms
from offerlift.models.registry import RegistrySettings, activate, resolve_tracking_uri
from offerlift.models.scoring import ArmScorer
from offerlift.serving.decision_log import DecisionLog
from offerlift.serving.decision_log import decisions as decision_table
from offerlift.serving.policy import holdout_unit
from offerlift.simworld.world import SimWorld
from offerlift.training.ab_report import treated_policy_probs

HOUR = 3600.0
T0 = 1_764_000_000.0  # the unix time of the world's hour 0
FAST = {"num_iterations": 30, "num_leaves": 7, "min_data_in_leaf": 40}


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


@dataclass
class SimLog:
    """A world, a registry, a service configuration and a decision log under `root`."""

    root: Path
    customers: int = 4000
    seed: int = 0
    holdout: float = 0.1
    world: SimWorld = field(init=False)
    registry: RegistrySettings = field(init=False)
    config: Path = field(init=False)
    log_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.world = SimWorld.default(n_customers=self.customers, seed=self.seed)
        base = resolve_tracking_uri(root=self.root / "mlruns")
        self.registry = RegistrySettings(base.tracking_uri, base.artifact_root, "offerlift", base.experiment)
        self.log_url = f"sqlite:///{self.root / 'decisions.db'}"
        self.config = self.root / "service.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "decision_log_url": self.log_url,
                    "online_store_path": str(self.root / "store.db"),
                    "policy": {"holdout": self.holdout},
                    "registry": {"tracking_uri": self.registry.tracking_uri, "reload_interval_s": 0},
                    "campaign": {"name": "sim", "budget": None},
                }
            )
        )
        DecisionLog(self.log_url).dispose()

    def features(self, t_hours: float) -> pd.DataFrame:
        """Every customer's features at `t_hours` (the online store's rows)."""
        return latest_features(self.world.history_events(), self.world.customers, at=t_hours)

    def register(self, spec: dict[str, Any]) -> str:
        """Log a scorer spec as a new version of the model; returns the version."""
        import mlflow

        from offerlift.models.model_io import log_scorer_model

        activate(self.registry)
        with mlflow.start_run():
            info = log_scorer_model(spec, self.root / f"m{uuid.uuid4().hex}", self.registry.model_name)
        return str(info.registered_model_version)

    def decide(self, scorer: ArmScorer, version: str, t_hours: float, explore: float, rng_seed: int) -> pd.DataFrame:
        """Decide and log every customer once at `t_hours`; returns the logged rows."""
        feats = self.features(t_hours)
        ids = feats.index.astype(str).to_numpy()
        allowed = reachable_arms(self.world.catalog, feats, len(feats))
        incr = scorer.incremental_profit(scorer.features.encode(feats))
        score = np.where(allowed, incr, -np.inf)
        score[:, 0] = 0.0
        greedy = np.argmax(score, axis=1)
        greedy = np.where(score[np.arange(len(ids)), greedy] > 0, greedy, 0)
        probs = treated_policy_probs(allowed, greedy, explore)
        rng = np.random.default_rng([rng_seed, 7])  # never the stream of the world's outcome draws
        hold = holdout_unit(list(ids), "sim") < self.holdout
        explores = rng.random(len(ids)) < explore
        uniform = allowed / allowed.sum(axis=1, keepdims=True)
        explored = (uniform.cumsum(axis=1) > rng.random(len(ids))[:, None]).argmax(axis=1)
        arm = np.where(hold, 0, np.where(explores, explored, greedy))
        p = self.holdout * (arm == 0) + (1 - self.holdout) * probs[np.arange(len(ids)), arm]
        arm_ids = self.world.arm_ids
        records = feats.reset_index().to_dict(orient="records")
        rows = []
        for i, cid in enumerate(ids):
            j = int(arm[i])
            a = self.world.catalog.arm(arm_ids[j])
            grp = "holdout" if hold[i] else ("explore" if explores[i] else "exploit")
            rows.append(
                {
                    "decision_id": str(uuid.uuid4()), "ts": T0 + t_hours * HOUR, "customer_id": cid,
                    "campaign": "sim", "arm": arm_ids[j], "offer_id": None if a.offer is None else a.offer.id,
                    "channel": None if a.channel is None else a.channel.id, "coupon_value": a.coupon_value,
                    "propensity": float(p[i]), "group_propensity": float(probs[i, j]), "grp": grp,
                    "model_version": version, "expected_incremental_profit": float(incr[i, j]),
                    "expected_cost": 0.0, "committed_cost": a.redeem_cost + a.contact_cost, "context": None,
                    "features": json.dumps({k: _plain(v) for k, v in records[i].items() if k != "customer_id"}),
                    "arm_probs": json.dumps({arm_ids[k]: float(probs[i, k]) for k in np.flatnonzero(allowed[i])}),
                }
            )  # fmt: skip
        dlog = DecisionLog(self.log_url)
        with dlog.engine.begin() as conn:
            conn.execute(decision_table.insert(), rows)
        dlog.dispose()
        return pd.DataFrame(rows)

    def outcomes_file(self, decisions: pd.DataFrame, path: Path, seed: int) -> Path:
        """Play the decisions forward and write one outcome event per decision (named by its decision id)."""
        t = (decisions["ts"].to_numpy(float) - T0) / HOUR
        frame = pd.DataFrame({"unit_id": decisions["decision_id"], "customer_id": decisions["customer_id"],
                              "time": t, "arm": decisions["arm"]})  # fmt: skip
        out = self.world.play(frame, seed=seed).outcomes
        events = pd.DataFrame(
            {
                "event_id": out["unit_id"].astype(str) + ":o",
                "customer_id": out["customer_id"],
                "ts": T0 + (out["decision_time"].to_numpy(float) + 24.0) * HOUR,
                "visit": out["visit"].astype(int),
                "buy": out["buy"].astype(int),
                "spend": out["spend"].round(4),
                "redeem": out["redeem"].astype(int),
                "decision_id": out["unit_id"],
            }
        )
        events.to_csv(path, index=False)
        return path


# --- outcomes with a known, strong effect ----------------------------------------------------------------------

BASE_BUY, LIFT_BUY, BASKET, LIFT_BASKET = 0.3, 0.5, 50.0, 60.0
BASKET_SHAPE = 4.0  # gamma baskets: mean BASKET (+ LIFT_BASKET), coefficient of variation 1 / 2


def _responds(features: pd.DataFrame, arm_ids: list[str]) -> np.ndarray:
    """(n, K) True where the customer responds to the arm: customers under 40 to any c5 coupon."""
    young = features["age"].to_numpy(dtype=float) < 40
    c5 = np.array([a.startswith("c5@") for a in arm_ids])
    return young[:, None] & c5[None, :]


def expected_profit(features: pd.DataFrame, catalog: Any) -> np.ndarray:
    """(n, K) the exact expected profit of every arm under `synthetic_events` (margin * spend - coupon if redeemed
    - contact; a coupon is redeemed with every purchase)."""
    ids = catalog.arm_ids
    r = _responds(features, ids)
    p_buy = BASE_BUY + LIFT_BUY * r
    spend = p_buy * (BASKET + LIFT_BASKET * r)
    value = np.array([a.coupon_value for a in catalog.arms])[None, :]
    contact = np.array([a.contact_cost for a in catalog.arms])[None, :]
    return catalog.margin * spend - value * p_buy - contact


def synthetic_events(decisions: pd.DataFrame, features: pd.DataFrame, catalog: Any, seed: int) -> pd.DataFrame:
    """One outcome event per decision (at decision time + 1 day) drawn from the model of `expected_profit`;
    `features` has one row per decision, in order."""
    rng = np.random.default_rng([seed, 11])
    ids = catalog.arm_ids
    j = pd.Index(ids).get_indexer(decisions["arm"])
    r = _responds(features, ids)[np.arange(len(j)), j]
    buy = rng.random(len(j)) < BASE_BUY + LIFT_BUY * r
    spend = np.where(buy, rng.gamma(BASKET_SHAPE, (BASKET + LIFT_BASKET * r) / BASKET_SHAPE), 0.0)
    return pd.DataFrame(
        {
            "event_id": decisions["decision_id"].astype(str) + ":o",
            "customer_id": decisions["customer_id"].astype(str),
            "ts": decisions["ts"].to_numpy(float) + 24 * HOUR,
            "visit": buy.astype(int),
            "buy": buy.astype(int),
            "spend": spend.round(4),
            "redeem": (buy & (j > 0)).astype(int),
            "decision_id": decisions["decision_id"].astype(str),
        }
    )
