"""Marketing automation on the simulated world: coupon abuse, segments, early warning with campaigns, triggers.

Run: ``.venv/bin/python benchmarks/automation_bench.py [--seed 0] [--quick]``; writes
benchmarks/results/automation.md (and automation.json). Every figure is measured against the world's hidden truth:

1. Coupon abuse: precision and recall of the risk score against the world's true abusers, on the default world
   (rings of 3-8 accounts on one device and payment id) and on a harder variant built here (rings of 1-4: some
   farmers share nothing); the profit the abuse mask saves, exact: the value of a learned greedy policy, of the
   best single arm and of the oracle, with and without the mask.
2. Segments: rank correlation of the estimated price sensitivity and channel affinity with the hidden traits,
   and the true value of a coupon by segment.
3. Early warning: a world built here with 5 weeks of pre-period and 14 scheduled city shocks (buy rate -> metric
   ``orders``, spend -> ``basket``), its transactions thinned by a daily cycle (the world has none; the seasonal
   baseline must cope with one): detection delay, alert precision and recall, for several detector settings.
4. Campaigns on alerts: a live week with 3 more shocks, the monitor running hour by hour with a rule that starts
   a win-back campaign in the city that explains an orders drop (served by the pure policy on the world's exact
   scores, abuse mask applied) and stops it on recovery. Each offer is played in the world twice with the same
   random draws (with the coupon and without it), so the campaign's incremental purchases are exact draws; the
   city's orders with and without the campaign are compared.
5. Triggers: replay speed of the trigger engine against a bare loop over the same events.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._env import environment_md
from offerlift.automation import demo_trigger_stream, world_scores
from offerlift.features.abuse import (
    abuse_features,
    abuse_mask,
    abuse_scores,
    identity_flags,
    rule_score,
)
from offerlift.features.segments import build_segments
from offerlift.serving.monitor import CampaignRule, Detector, Monitor, PolicyExecutor, metric_table
from offerlift.serving.policy import PolicyConfig
from offerlift.serving.rules import Rules
from offerlift.serving.triggers import (
    ACTIVE_NO_ORDER,
    Message,
    PolicyDecider,
    SendResult,
    TriggerEngine,
    constant_scores,
    replay,
)
from offerlift.simworld.config import DEFAULT_SPEC, spec_to_world
from offerlift.simworld.experiment import make_experiment
from offerlift.simworld.play import background_transactions, event_frame, sort_events
from offerlift.simworld.truth import shock_multiplier
from offerlift.simworld.world import SimWorld
from offerlift.training.abuse_model import fit_behaviour_model
from offerlift.training.evaluate import greedy_arms
from offerlift.training.train import TrainConfig, evaluate_config

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("automation_bench")

HISTORY_HOURS = 24 * 35
EVAL_FROM = -24 * 26  # the detector needs a week of baseline and two days of residuals first
GRACE = 3.0  # an alert up to 3 h after a shock's end still counts as its detection (a late one)
HISTORY_SHOCKS = [  # (city, metric, start, hours, factor)
    ("wuhan", "buy_rate", -600, 12, 0.4),
    ("chengdu", "buy_rate", -560, 6, 0.5),
    ("shanghai", "buy_rate", -515, 8, 0.7),
    ("guangzhou", "spend", -470, 10, 0.6),
    ("beijing", "buy_rate", -430, 4, 0.6),
    ("wuhan", "spend", -390, 8, 0.7),
    ("chengdu", "buy_rate", -350, 12, 0.75),
    ("shanghai", "spend", -300, 6, 0.8),
    ("guangzhou", "buy_rate", -260, 3, 0.5),
    ("beijing", "spend", -220, 6, 0.6),
    ("wuhan", "buy_rate", -180, 24, 0.5),
    ("chengdu", "spend", -130, 5, 0.5),
    ("shanghai", "buy_rate", -90, 4, 0.5),
    ("guangzhou", "buy_rate", -50, 10, 0.8),
]
LIVE_SHOCKS = [
    ("chengdu", "buy_rate", 30, 6, 0.5),
    ("wuhan", "buy_rate", 80, 12, 0.4),
    ("shanghai", "buy_rate", 124, 8, 0.6),
]
METRIC_OF = {"buy_rate": "orders", "spend": "basket"}


def daily_profile(t: np.ndarray) -> np.ndarray:
    """Share of purchases kept at hour-of-day: 1.0 at 20:00, 0.2 at 08:00 (the benchmark's daily cycle)."""
    return 0.6 + 0.4 * np.cos(2 * np.pi * (np.mod(t, 24.0) - 20.0) / 24.0)


def thin_daily(events: pd.DataFrame) -> pd.DataFrame:
    """Drop transactions by the daily profile (other events stay). The draw of an event is a function of its
    time alone (the fraction of time x 9973), so two coupled streams keep exactly the same common events."""
    t = events["time"].to_numpy(dtype=float)
    u = np.modf(np.abs(t) * 9973.0)[0]
    keep = (events["event"] != "transaction").to_numpy() | (u < daily_profile(t))
    return events.loc[keep].reset_index(drop=True)


def spec_with(**world: Any) -> dict[str, Any]:
    """The default world spec with some world keys replaced."""
    spec = yaml.safe_load(DEFAULT_SPEC.read_text())
    spec["world"].update(world)
    return spec


# --- 1. coupon abuse ---------------------------------------------------------------------------------------


def detection_row(name: str, flag: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    tp = int((flag & truth).sum())
    return {
        "rule": name,
        "flagged": int(flag.sum()),
        "precision": tp / max(int(flag.sum()), 1),
        "recall": tp / max(int(truth.sum()), 1),
    }


def abuse_variant(name: str, spec: dict[str, Any], n: int, seed: int, learner: str, tmp: Path) -> dict[str, Any]:
    """Detection and exact profit of the abuse mask on one world variant."""
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    t0 = time.perf_counter()
    exp = make_experiment(n, seed, spec=path)
    world = exp.meta["world"]
    truth = world.hidden.abuser
    feats = abuse_features(world.history_events(), world.customers, at=0.0, catalog=world.catalog)
    model = fit_behaviour_model(feats)
    scores = abuse_scores(feats, model=model)
    behaviour = scores["behaviour_score"].to_numpy()
    risk = scores["risk"].to_numpy()
    ident = identity_flags(feats)
    rules, _ = rule_score(feats)
    rows = [
        detection_row("identity rules (payment or device shared by >= 3)", ident, truth),
        detection_row("all rules (+ redemption below the minimum spend)", rules >= 0.8, truth),
        detection_row("behaviour model p >= 0.5 (weak labels)", behaviour >= 0.5, truth),
        detection_row("risk >= 0.8 (excluded)", risk >= 0.8, truth),
        detection_row("risk >= 0.5 (capped or excluded)", risk >= 0.5, truth),
    ]
    missed = truth & ~ident
    out: dict[str, Any] = {
        "variant": name,
        "customers": n,
        "abusers": int(truth.sum()),
        "missed_by_identity": int(missed.sum()),
        "detection": rows,
        "behaviour_auc": float(roc_auc_score(truth, behaviour)),
        "behaviour_auc_without_identity": float(roc_auc_score(truth[~ident], behaviour[~ident]))
        if truth[~ident].any()
        else float("nan"),
        "behaviour_recall_of_missed": float((behaviour[missed] >= 0.5).mean()) if missed.any() else float("nan"),
    }
    out["profit"] = abuse_profit(exp, world, risk, learner, seed)
    out["seconds"] = time.perf_counter() - t0
    log.info("abuse %s done in %.0fs", name, out["seconds"])
    return out


def abuse_profit(exp, world: SimWorld, risk: np.ndarray, learner: str, seed: int) -> list[dict[str, Any]]:
    """Exact value per customer at time 0 of policies with and without the abuse mask (and with perfect flags)."""
    held = evaluate_config(exp, TrainConfig(learner=learner, n_folds=2, n_boot=50, seed=seed))[0]
    units = exp.units()
    rows = world.rows_of(units["customer_id"])
    mask = abuse_mask(risk[rows], world.catalog)
    perfect = abuse_mask(world.hidden.abuser[rows].astype(float), world.catalog)
    truth = world.truth(rows, 0.0)
    true_incr = np.where(truth.eligible, truth.incr, -np.inf)
    card = world.scorecard(rows)
    k = world.catalog.index(card["best_single_arm"])
    single = world.single_arm_policy(card["best_single_arm"], rows)
    policies = {
        f"learned greedy ({learner}-learner, cross-fitted)": lambda m: greedy_arms(held.incr, held.allowed & m),
        f"best single arm ({card['best_single_arm']})": lambda m: np.where(m[:, k], single, 0),
        "oracle (exact truth)": lambda m: greedy_arms(true_incr, m),
    }
    out = []
    everyone = np.ones_like(mask)
    ab = world.hidden.abuser[rows]
    for name, policy in policies.items():
        plain, masked, ideal = policy(everyone), policy(mask), policy(perfect)
        out.append(
            {
                "policy": name,
                "without_mask": world.policy_value(plain, rows, 0.0),
                "with_mask": world.policy_value(masked, rows, 0.0),
                "perfect_flags": world.policy_value(ideal, rows, 0.0),
                "abusers_treated_without": float((plain[ab] > 0).mean()),
                "abusers_treated_with": float((masked[ab] > 0).mean()),
            }
        )
    return out


# --- 2. segments -------------------------------------------------------------------------------------------


def segments_section(n: int, seed: int) -> dict[str, Any]:
    """How well the segment estimates track the hidden traits, and the true value of a coupon per segment."""
    world = SimWorld.default(n, seed=seed)
    seg = build_segments(world.history_events(), world.customers, at=0.0, channels=world.catalog)
    ok = ~world.hidden.abuser
    viewed = (seg["price_band"].astype(str) != "unknown").to_numpy()
    out: dict[str, Any] = {"customers": n}
    out["price_spearman"] = float(
        spearmanr(seg["price_sensitivity"][ok & viewed], world.hidden.sensitivity[ok & viewed]).statistic
    )
    out["affinity_spearman"] = {}
    for j, ch in enumerate(c.id for c in world.catalog.channels):
        aff = seg[f"affinity_{ch}"].to_numpy()
        use = ok & (aff > 0)
        out["affinity_spearman"][ch] = float(spearmanr(aff[use], world.hidden.open_rate[use, j]).statistic)
    truth = world.truth(None, 0.0)
    best = truth.values(truth.oracle())
    frame = pd.DataFrame({"band": seg["price_band"].astype(str), "rfm": seg["rfm_segment"].astype(str), "best": best})
    frame["treated"] = truth.oracle() > 0
    out["by_price_band"] = frame.groupby("band")[["best", "treated"]].mean().round(4).to_dict("index")
    out["by_rfm"] = frame.groupby("rfm")[["best", "treated"]].mean().round(4).to_dict("index")
    out["band_sizes"] = frame["band"].value_counts().to_dict()
    return out


# --- 3. detection ------------------------------------------------------------------------------------------


def shock_dicts(shocks: list[tuple]) -> list[dict[str, Any]]:
    return [{"city": c, "metric": m, "start": s, "end": s + h, "factor": f} for c, m, s, h, f in shocks]


def monitor_world(n: int, seed: int) -> SimWorld:
    """The default world with 5 weeks of pre-period and the benchmark's history and live shocks."""
    spec = spec_with(
        history={"hours": HISTORY_HOURS, "contacts_per_week": 0.8}, shocks=shock_dicts(HISTORY_SHOCKS + LIVE_SHOCKS)
    )
    catalog, config = spec_to_world(spec)
    return SimWorld(catalog, config, n, seed=seed)


def score_alerts(records: list[dict[str, Any]], shocks: list[tuple], since: float) -> dict[str, Any]:
    """Match alerts to shocks: precision over alerts, recall over shocks, detection delays."""
    alerts = [r for r in records if r["kind"] == "alert" and r["time"] >= since]
    first: dict[int, float] = {}
    tp = 0
    wrong = []
    for a in alerts:
        hit = [
            i
            for i, (city, metric, start, hours, _) in enumerate(shocks)
            if a["metric"] == METRIC_OF[metric]
            and a["dimension"] == "city"
            and city in a["values"]
            and start < a["time"] <= start + hours + GRACE
        ]
        if hit:
            tp += 1
            for i in hit:
                first.setdefault(i, a["time"] - shocks[i][2])
        else:
            wrong.append((a["time"], a["metric"], a["dimension"], a["values"]))
    delays = np.array(list(first.values()))
    return {
        "alerts": len(alerts),
        "true_alerts": tp,
        "precision": tp / max(len(alerts), 1),
        "recall": len(first) / len(shocks),
        "delay_median": float(np.median(delays)) if delays.size else float("nan"),
        "delay_max": float(delays.max()) if delays.size else float("nan"),
        "missed": [
            f"{shocks[i][0]} {shocks[i][1]} x{shocks[i][4]} {shocks[i][3]}h"
            for i in range(len(shocks))
            if i not in first
        ],
        "false": wrong[:6],
        "delays": {f"{shocks[i][0]}@{shocks[i][2]}": d for i, d in first.items()},
    }


DETECTORS = {
    "pooled MAD + CUSUM, threshold 3 (default)": Detector(),
    "same-hour MAD + CUSUM, threshold 3": Detector(scale="same_hour"),
    "same-hour MAD, no CUSUM, threshold 3": Detector(scale="same_hour", cusum_h=0.0),
    "pooled MAD, no CUSUM, threshold 3": Detector(cusum_h=0.0),
    "pooled MAD + CUSUM, threshold 2.5": Detector(threshold=2.5),
    "pooled MAD + CUSUM, threshold 4": Detector(threshold=4.0, cusum_h=8.0),
}


def detection_section(world: SimWorld, events: pd.DataFrame, detectors: dict[str, Detector]) -> dict[str, Any]:
    """Every detector on one world's pre-period: alerts matched to the scheduled shocks."""
    t0 = time.perf_counter()
    table = metric_table(events, world.customers, ("orders", "basket"), ("all", "city", "tier"), -HISTORY_HOURS, 0.0)
    table_s = time.perf_counter() - t0
    out: dict[str, Any] = {"table_seconds": table_s, "rows": len(table), "variants": {}}
    for name, det in detectors.items():
        t0 = time.perf_counter()
        records = Monitor(det).run(table)
        res = score_alerts(records, HISTORY_SHOCKS, EVAL_FROM)
        res["seconds"] = time.perf_counter() - t0
        out["variants"][name] = res
        log.info("detector %s: %s", name, {k: res[k] for k in ("alerts", "precision", "recall", "delay_median")})
    return out


def pool_detection(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Sum the alerts and detections of every seed per detector."""
    first = next(iter(per_seed.values()))
    out: dict[str, Any] = {"seeds": sorted(per_seed), "rows": first["rows"], "variants": {}}
    out["table_seconds"] = float(np.mean([r["table_seconds"] for r in per_seed.values()]))
    for name in first["variants"]:
        runs = {s: r["variants"][name] for s, r in per_seed.items()}
        delays = np.array([d for r in runs.values() for d in r["delays"].values()])
        alerts = sum(r["alerts"] for r in runs.values())
        true = sum(r["true_alerts"] for r in runs.values())
        missed: dict[str, int] = {}
        for r in runs.values():
            for m in r["missed"]:
                missed[m] = missed.get(m, 0) + 1
        out["variants"][name] = {
            "alerts": alerts,
            "true_alerts": true,
            "precision": true / max(alerts, 1),
            "recall": delays.size / (len(HISTORY_SHOCKS) * len(runs)),
            "delay_median": float(np.median(delays)) if delays.size else float("nan"),
            "delay_max": float(delays.max()) if delays.size else float("nan"),
            "missed": [f"{k} ({v}/{len(runs)})" for k, v in sorted(missed.items(), key=lambda kv: -kv[1])],
            "false": [f"seed {s}: {x}" for s, r in runs.items() for x in r["false"]][:6],
        }
    return out


# --- 4. campaigns on alerts --------------------------------------------------------------------------------


def live_background(world: SimWorld, start: float, end: float, seed: int, shocks: bool = True) -> pd.DataFrame:
    """Ordinary purchases in [start, end), as the world makes its pre-period (shocks at purchase time). With the
    same seed, the stream without shocks holds every purchase of the stream with them, and more (coupled)."""
    rng = np.random.default_rng(seed)
    cfg, hidden = world.config, world.hidden
    cids = world.customers["customer_id"].to_numpy()
    rate = -np.log1p(-hidden.base_rate.astype(float)) / cfg.window_hours
    rows, times, amounts = background_transactions(
        cids, rate, hidden.basket, start, end, cfg.population.spend_noise_sd, rng
    )
    u = rng.random(rows.size)
    mult = shock_multiplier(cfg, "buy_rate", world.visible.city[rows], times) if shocks else None
    keep = u < mult if mult is not None else np.ones(rows.size, dtype=bool)
    spend = shock_multiplier(cfg, "spend", world.visible.city[rows], times) if shocks else None
    if spend is not None:
        amounts = amounts * spend
    return event_frame(cids[rows[keep]], times[keep], "transaction", amount=amounts[keep].astype(float))


def live_past_campaigns(world: SimWorld, start: float, end: float, seed: int) -> pd.DataFrame:
    """Offer events and redeemed purchases of routine campaigns in [start, end), like the pre-period has (random
    eligible arms, ``history.contacts_per_week``, started up to a week before `start`); contacts not recorded."""
    rng = np.random.default_rng(seed)
    n, hist = world.n_customers, world.config.history
    counts = rng.poisson(hist.contacts_per_week * (end - start + 168.0) / 168.0, n)
    rows = np.repeat(np.arange(n), counts)
    ok = world.eligible(rows)[:, 1:]
    arm = np.argmax(rng.random(ok.shape) * ok, axis=1) + 1
    keep = ok.any(axis=1)
    dec = pd.DataFrame(
        {
            "customer_id": world.customers["customer_id"].to_numpy()[rows[keep]],
            "time": rng.uniform(start - 168.0, end, int(keep.sum())),
            "arm": np.asarray(world.arm_ids, dtype=object)[arm[keep]],
        }
    )
    ev = world.play(dec, seed=seed, record=False).events
    done = ev.loc[ev["event"] == "offer_completed", ["customer_id", "time"]].assign(redeemed=True)
    ev = ev.merge(done, on=["customer_id", "time"], how="left")
    ev = ev.loc[(ev["event"] != "transaction") | ev["redeemed"].fillna(False).astype(bool)].drop(columns="redeemed")
    return ev.loc[(ev["time"] >= start) & (ev["time"] < end)].reset_index(drop=True)


class PlayingExecutor(PolicyExecutor):
    """The monitor's policy executor whose sends are played in the world, with and without the coupon."""

    def __init__(self, world: SimWorld, targets: pd.DataFrame, decider: PolicyDecider, seed: int):
        super().__init__(targets, decider.decide_many, send=self._play)
        self.world = world
        self.rng = np.random.default_rng(seed)
        self.extra: list[pd.DataFrame] = []
        self.stats: list[dict[str, Any]] = []

    def _play(self, sent: pd.DataFrame) -> None:
        world, t = self.world, float(sent["time"].iloc[0])
        dec = pd.DataFrame({"customer_id": sent["customer_id"].to_numpy(), "time": t, "arm": sent["arm"].to_numpy()})
        rows = world.rows_of(dec["customer_id"])
        arm_idx = pd.Index(world.arm_ids).get_indexer(dec["arm"])
        truth = world.truth(rows, t)
        i = np.arange(rows.size)
        seed = int(self.rng.integers(1 << 31))
        without = world.play(dec.assign(arm="none"), seed=seed, record=False).outcomes
        played = world.play(dec, seed=seed, record=True)
        inc = (played.outcomes["buy"].to_numpy() == 1) & (without["buy"].to_numpy() == 0)
        ids = set(played.outcomes["customer_id"].to_numpy()[inc])
        ev = played.events
        tx = ev.loc[(ev["event"] == "transaction") & ev["customer_id"].isin(ids)]
        self.extra.append(thin_daily(tx))
        arms = world.arms
        self.stats.append(
            {
                "time": t,
                "campaign": str(sent["campaign"].iloc[0]),
                "value": str(sent["value"].iloc[0]),
                "offers": int(rows.size),
                "committed": float(sent["cost"].sum()),
                "expected_cost": float(
                    (arms.redeem_cost[arm_idx] * truth.redeem[i, arm_idx] + arms.contact_cost[arm_idx]).sum()
                ),
                "expected_incremental_orders": float((truth.buy[i, arm_idx] - truth.buy[i, 0]).sum()),
                "drawn_incremental_orders": int(inc.sum()),
                "incremental_profit": float(truth.values(arm_idx).sum()),
            }
        )

    def extra_events(self) -> pd.DataFrame:
        return pd.concat(self.extra, ignore_index=True) if self.extra else pd.DataFrame(columns=["customer_id", "time"])


def add_extra(rows: pd.DataFrame, extra: pd.DataFrame, dims: dict[str, pd.Series], h: int) -> pd.DataFrame:
    """The orders rows of hour `h` plus the campaign's incremental purchases in that hour."""
    sel = extra.loc[(extra["time"] >= h) & (extra["time"] < h + 1)] if len(extra) else extra
    if not len(sel):
        return rows
    rows = rows.copy()
    for dim, of in dims.items():
        counts = sel["customer_id"].map(of).value_counts() if dim != "all" else pd.Series({"all": len(sel)})
        hit = (rows["dimension"] == dim).to_numpy()
        rows.loc[hit, "num"] += rows.loc[hit, "value"].map(counts).fillna(0).to_numpy()
    rows["rate"] = rows["num"] / rows["den"] * 1000.0
    return rows


def campaign_section(world: SimWorld, history: pd.DataFrame, seed: int, budget: float) -> dict[str, Any]:
    """A live week with and without the automatic campaign, and without the shocks (see the module doc)."""
    routine = live_past_campaigns(world, 0.0, 168.0, seed + 11)
    live = {
        shocked: thin_daily(pd.concat([live_background(world, 0.0, 168.0, seed + 7, shocked), routine]))
        for shocked in (True, False)
    }
    customers = world.customers
    events = sort_events(pd.concat([history, live[True]], ignore_index=True))
    table = metric_table(events, customers, ("orders",), ("all", "city", "tier"), -HISTORY_HOURS, 168.0)
    rule = CampaignRule(
        name="win-back",
        metric="orders",
        dimension="city",
        segment={"lifecycle": ["potential", "regular", "repeat", "loyal"]},
        budget=budget,
        max_hours=48.0,
    )
    seg = build_segments(history, customers, at=0.0, channels=world.catalog)
    attrs = customers.set_index("customer_id")
    targets = attrs[["city", "tier"]].join(seg[["lifecycle", "rfm_segment", "price_band"]].astype(str))
    feats = abuse_features(history, customers, at=0.0, catalog=world.catalog)
    risk = abuse_scores(feats, model=fit_behaviour_model(feats))["risk"]
    full_mask = pd.DataFrame(abuse_mask(risk.to_numpy(), world.catalog), index=risk.index)
    decider = PolicyDecider(
        world.catalog,
        attrs,
        world_scores(world),
        Rules(cap_per_customer=None),
        PolicyConfig(holdout=0.0, explore=0.0),
        extra_mask=lambda ids: full_mask.loc[ids].to_numpy(),
    )
    executor = PlayingExecutor(world, targets, decider, seed)
    runs = {"without": Monitor(Detector()), "with": Monitor(Detector(), executor=executor)}
    dims = {"city": attrs["city"], "tier": attrs["tier"], "all": None}
    for h, rows in table.groupby("hour", sort=True):
        if h == 0:  # the pre-period only warms the detector up; the rule is live from hour 0
            for mon in runs.values():
                mon.rules = [rule]
        runs["without"].step(rows)
        runs["with"].step(add_extra(rows, executor.extra_events(), dims, int(h)))
    city_of = attrs["city"]
    counts = {
        "no shock": hourly_city_orders(live[False], city_of),
        "shock, no campaign": hourly_city_orders(live[True], city_of),
        "shock, automatic campaign": hourly_city_orders(
            pd.concat([live[True], executor.extra_events()], ignore_index=True), city_of
        ),
    }
    return summarize_live(runs, executor, counts)


def hourly_city_orders(events: pd.DataFrame, city_of: pd.Series) -> pd.DataFrame:
    """Transactions per (city, hour) of the live week."""
    tx = events.loc[(events["event"] == "transaction") & (events["time"] >= 0)] if "event" in events else events
    frame = pd.DataFrame({"city": tx["customer_id"].map(city_of).to_numpy(), "hour": np.floor(tx["time"]).astype(int)})
    return frame.groupby(["city", "hour"]).size().unstack(fill_value=0)


def summarize_live(runs: dict[str, Monitor], executor: PlayingExecutor, counts: dict[str, pd.DataFrame]) -> dict:
    """Per live shock: detection, the campaign, and the city's orders in the three coupled streams."""
    out = []
    for city, _, start, hours, factor in LIVE_SHOCKS:
        end = start + hours
        entry: dict[str, Any] = {"shock": f"{city} orders x{factor} for {hours}h from hour {start}"}
        for name, mon in runs.items():
            recs = [r for r in mon.records if r["values"] == [city] and start <= r["time"] <= end + 72]
            stop = next((r for r in recs if r["kind"] == "stop"), None)
            entry[name] = {
                "alert": next((r["time"] for r in recs if r["kind"] == "alert"), None),
                "recovered": next((r["time"] for r in recs if r["kind"] == "recover"), None),
                "stopped": None if stop is None else [stop["time"], stop["evidence"]["reason"]],
            }
        windows = {"during the shock": (start, end), "24 h after it": (end, end + 24), "to the week's end": (end, 168)}
        entry["orders"] = {
            name: {w: int(c.loc[city].reindex(range(a, b), fill_value=0).sum()) for w, (a, b) in windows.items()}
            for name, c in counts.items()
        }
        camp = [x for x in executor.stats if x["value"] == city and start <= x["time"] <= end + 48]
        if camp:
            entry["campaign"] = camp[0]
        out.append(entry)
    return {"shocks": out}


# --- 5. triggers -------------------------------------------------------------------------------------------


class CountingAdapter:
    """A channel adapter that only counts (the benchmark times the engine, not a file system)."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, message: Message) -> SendResult:
        self.sent += 1
        return SendResult("sent")


def triggers_section(n: int, seed: int) -> dict[str, Any]:
    """Replay speed of the trigger engine (events per second) against a bare loop over the same events."""
    world = SimWorld.default(n, seed=seed)
    stream = demo_trigger_stream(world, hours=24.0, sessions=1.0, seed=seed)
    t0 = time.perf_counter()
    sink = []
    for cid, t, kind in zip(stream["customer_id"], stream["time"], stream["event"], strict=True):
        sink.append({"customer_id": cid, "time": t, "event": kind})
    floor = time.perf_counter() - t0
    attrs = world.customers.set_index("customer_id")
    out: dict[str, Any] = {"events": len(stream), "floor_seconds": floor, "runs": {}}
    deciders = {
        "fixed arm (constant scores)": PolicyDecider(
            world.catalog, attrs, constant_scores(world.catalog, {"c5@push": 1.0})
        ),
        "pure policy on the world's exact scores": PolicyDecider(world.catalog, attrs, world_scores(world)),
    }
    for name, decider in deciders.items():
        engine = TriggerEngine([ACTIVE_NO_ORDER], decider, CountingAdapter(), customers=world.customers)
        t0 = time.perf_counter()
        fired = replay(stream, engine, until=1.0)
        sec = time.perf_counter() - t0
        out["runs"][name] = {
            "seconds": sec,
            "ratio_to_floor": sec / floor,
            "events_per_s": len(stream) / sec,
            "firings": len(fired),
            "status": fired["status"].value_counts().to_dict(),
            "ms_per_firing": 1000 * sec / max(len(fired), 1),
        }
    return out


# --- report ------------------------------------------------------------------------------------------------


def f(x: Any, fmt: str = "{:.3f}") -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else fmt.format(x)


def report_abuse(res: list[dict[str, Any]]) -> list[str]:
    lines = ["## 1. Coupon abuse", ""]
    for v in res:
        lines += [
            f"### {v['variant']}: {v['customers']:,} customers, {v['abusers']} abusers "
            f"({v['missed_by_identity']} share neither a payment id nor a device with 2 others)",
            "",
            "| rule | flagged | precision | recall |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r['rule']} | {r['flagged']} | {r['precision']:.3f} | {r['recall']:.3f} |" for r in v["detection"]
        ]
        lines += [
            "",
            f"Behaviour model alone (no identity columns): ROC AUC {v['behaviour_auc']:.3f} over everyone, "
            f"{f(v['behaviour_auc_without_identity'])} among the accounts the identity rules do not flag; it flags "
            f"(p >= 0.5) {f(v['behaviour_recall_of_missed'], '{:.1%}')} of the abusers the identity rules miss.",
            "",
            "Exact value at time 0 (mean incremental profit per customer over no offer; mask = exclude at risk >= 0.8, "
            "coupons above 5 only below 0.5):",
            "",
            "| policy | without mask | with mask | saved | with perfect flags | abusers treated (without -> with) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for p in v["profit"]:
            lines.append(
                f"| {p['policy']} | {p['without_mask']:+.4f} | {p['with_mask']:+.4f} | "
                f"{p['with_mask'] - p['without_mask']:+.4f} | {p['perfect_flags']:+.4f} | "
                f"{p['abusers_treated_without']:.0%} -> {p['abusers_treated_with']:.0%} |"
            )
        lines.append("")
    lines += [
        "The oracle never sends farmers a coupon (their lift is 0 and they redeem), so the mask can only cost it "
        "value (false positives): its row is the price of the mask's mistakes. A policy that cannot see abuse "
        "(the learned one, or one arm for everyone) loses money on farmers, and that is what the mask saves.",
        "",
    ]
    return lines


def report_segments(s: dict[str, Any]) -> list[str]:
    aff = ", ".join(f"{k} {v:+.2f}" for k, v in s["affinity_spearman"].items())
    lines = [
        "## 2. Segments",
        "",
        f"{s['customers']:,} customers, 4 weeks of pre-period events (about 3 offers received per customer). "
        f"Spearman rank correlation with the hidden traits (abusers left out): price sensitivity (customers with a "
        f"viewed offer) {s['price_spearman']:+.2f}; channel affinity vs the hidden open rate (where usable): {aff}.",
        "",
        "| price band | customers | oracle's incremental profit per customer | share the oracle treats |",
        "|---|---:|---:|---:|",
    ]
    for band in ("unknown", "low", "mid", "high"):
        r = s["by_price_band"].get(band)
        if r:
            lines.append(f"| {band} | {s['band_sizes'].get(band, 0):,} | {r['best']:+.4f} | {r['treated']:.0%} |")
    lines += [
        "",
        "With a few offers per customer, the bands mostly say whether the customer redeemed a viewed offer (high) or "
        "not (low); mid needs several views. The high band is worth more to the oracle than the low band.",
        "",
        "| RFM segment | oracle's incremental profit per customer | share the oracle treats |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {r['best']:+.4f} | {r['treated']:.0%} |" for k, r in s["by_rfm"].items()]
    return [*lines, ""]


def report_detection(d: dict[str, Any], n: int) -> list[str]:
    seeds = ", ".join(str(x) for x in d["seeds"])
    shocks = "; ".join(f"{c} {m} x{x} {h}h from {s % 24:02d}:00" for c, m, s, h, x in HISTORY_SHOCKS)
    lines = [
        "## 3. Early warning: detection",
        "",
        f"{len(d['seeds'])} worlds (seeds {seeds}) of {n:,} customers; metrics orders (transactions per 1,000 "
        "customers) and basket, by city and tier, hourly; "
        f"{len(HISTORY_SHOCKS)} shocks scored from hour {EVAL_FROM} to 0 ({shocks}). An alert is true when it "
        f"names the shocked city for the shocked metric between the shock's start and {GRACE:.0f} h after its "
        "end; delay = alert time (the end of the hour that confirmed it) - shock start. "
        f"Counts are summed over the worlds. Metric table: {d['rows']:,} rows in {d['table_seconds']:.1f}s.",
        "",
        "| detector | alerts | true | precision | recall | median delay (h) | max delay (h) | missed (worlds) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in d["variants"].items():
        lines.append(
            f"| {name} | {r['alerts']} | {r['true_alerts']} | {r['precision']:.2f} | {r['recall']:.2f} | "
            f"{f(r['delay_median'], '{:.0f}')} | {f(r['delay_max'], '{:.0f}')} | {'; '.join(r['missed']) or '-'} |"
        )
    default = next(iter(d["variants"].values()))
    lines += ["", f"False alerts of the default detector: {default['false'] or 'none'}.", ""]
    return lines


def report_campaign(c: dict[str, Any], budget: float) -> list[str]:
    lines = [
        "## 4. Campaigns started by alerts: the live week",
        "",
        f"Rule: an orders drop explained by a city starts a win-back campaign in that city for customers who "
        f"bought before (lifecycle potential to loyal), any arm, budget {budget:,.0f} (charged at the worst case: "
        "coupon value + contact cost), abuse mask on; each target is decided once by the pure policy on the "
        "world's exact scores (the best model there can be); the campaign stops when the city's orders recover "
        "(or after 48 h). The week is played three times with the same random draws: without the shocks, with "
        "them, and with them plus the campaign (its offers played with and without the coupon, same draws, so "
        "only the purchases the coupon caused are added). Orders are the city's transactions after the daily "
        "cycle's thinning.",
        "",
    ]
    for s in c["shocks"]:
        w, camp = s["with"], s.get("campaign")
        lines += [
            f"### {s['shock']}",
            "",
            f"Alert at hour {f(w['alert'], '{:.0f}')} (without the campaign: {f(s['without']['alert'], '{:.0f}')}); "
            f"the city's series recovered at {f(w['recovered'], '{:.0f}')} "
            f"(without: {f(s['without']['recovered'], '{:.0f}')}); campaign stop: {w['stopped']}.",
            "",
            "| city orders | during the shock | 24 h after it | to the week's end |",
            "|---|---:|---:|---:|",
        ]
        base = s["orders"]["no shock"]
        for name, r in s["orders"].items():
            cells = [
                f"{r[k]:,}" + ("" if name == "no shock" else f" ({r[k] - base[k]:+,})")
                for k in ("during the shock", "24 h after it", "to the week's end")
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if camp:
            lines += [
                "",
                f"Campaign: {camp['offers']:,} offers at hour {camp['time']:.0f}, committed {camp['committed']:,.0f} "
                f"(worst case), expected cost {camp['expected_cost']:,.0f}, exact incremental profit "
                f"{camp['incremental_profit']:+,.0f}; incremental purchases expected "
                f"{camp['expected_incremental_orders']:,.0f}, drawn {camp['drawn_incremental_orders']:,} (before the "
                "daily thinning).",
            ]
        lines.append("")
    return [*lines, *campaign_reading(c)]


def campaign_reading(c: dict[str, Any]) -> list[str]:
    """The totals over the live shocks, and what they mean."""
    windows = ("during the shock", "24 h after it", "to the week's end")
    added = {
        w: sum(s["orders"]["shock, automatic campaign"][w] - s["orders"]["shock, no campaign"][w] for s in c["shocks"])
        for w in windows
    }
    lost = sum(s["orders"]["no shock"][windows[0]] - s["orders"]["shock, no campaign"][windows[0]] for s in c["shocks"])
    camps = [s["campaign"] for s in c["shocks"] if "campaign" in s]
    profit = sum(x["incremental_profit"] for x in camps)
    cost = sum(x["expected_cost"] for x in camps)
    ratios = [x["committed"] / x["expected_cost"] for x in camps if x["expected_cost"] > 0] or [float("nan")]
    lo, hi = min(ratios), max(ratios)
    return [
        f"Reading: over the {len(c['shocks'])} shocks, the shocks cost {lost:,} orders; the automatic campaigns added "
        f"{added[windows[0]]:,} orders during the shocks, {added[windows[1]]:,} in the 24 hours after them and "
        f"{added[windows[2]]:,} by the end of the week, for an exact incremental profit of {profit:+,.0f} at an "
        f"expected cost of {cost:,.0f}. In this world a coupon is seen within 42 hours of the contact and its "
        "purchase falls at a random time in the rest of the week, so a campaign cannot refill an hourly metric "
        "during a shock of a few hours; the metric recovered when the shock ended, with or without the campaign, "
        "and the campaign's value is its profit (positive here, because the policy sends only offers with a "
        f"positive uplift). Charging the budget at the worst case (every coupon redeemed) committed {lo:.0f} to "
        f"{hi:.0f} times the expected cost.",
        "",
    ]


def report_triggers(t: dict[str, Any]) -> list[str]:
    lines = [
        "## 5. Triggers: replay speed",
        "",
        f"Rule 'active in the app, no order within 5 minutes' over a demo stream of {t['events']:,} events "
        f"(app opens, a third followed by a purchase). Floor: a bare Python loop turning the same events into "
        f"dicts, {t['floor_seconds'] * 1000:.0f} ms.",
        "",
        "| decision | seconds | ratio to floor | events/s | firings | ms per firing | statuses |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in t["runs"].items():
        lines.append(
            f"| {name} | {r['seconds']:.2f} | {r['ratio_to_floor']:.0f} | {r['events_per_s']:,.0f} | "
            f"{r['firings']:,} | {r['ms_per_firing']:.2f} | {r['status']} |"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--abuse-customers", type=int, default=20_000)
    parser.add_argument("--segment-customers", type=int, default=20_000)
    parser.add_argument("--monitor-customers", type=int, default=300_000)
    parser.add_argument("--trigger-customers", type=int, default=20_000)
    parser.add_argument("--detection-seeds", type=int, default=3, help="worlds (seeds) the detectors are scored on")
    parser.add_argument("--learner", default="s")
    parser.add_argument("--budget", type=float, default=200_000.0)
    parser.add_argument("--sections", default="abuse,segments,detection,campaign,triggers")
    parser.add_argument("--out", type=Path, default=RESULTS / "automation.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sections = set(args.sections.split(","))
    res: dict[str, Any] = {"seed": args.seed, "args": {k: str(v) for k, v in vars(args).items()}}
    t_start = time.perf_counter()
    if "abuse" in sections:
        with tempfile.TemporaryDirectory() as tmp:
            res["abuse"] = [
                abuse_variant(
                    "default world: rings of 3-8 accounts",
                    spec_with(),
                    args.abuse_customers,
                    args.seed,
                    args.learner,
                    Path(tmp),
                ),
                abuse_variant(
                    "variant: rings of 1-4 accounts",
                    spec_with(
                        abusers={
                            **yaml.safe_load(DEFAULT_SPEC.read_text())["world"]["abusers"],
                            "ring_min": 1,
                            "ring_max": 4,
                        }
                    ),
                    args.abuse_customers,
                    args.seed,
                    args.learner,
                    Path(tmp),
                ),
            ]
    if "segments" in sections:
        res["segments"] = segments_section(args.segment_customers, args.seed)
    if sections & {"detection", "campaign"}:
        per_seed = {}
        for k in range(args.detection_seeds if "detection" in sections else 1):
            t0 = time.perf_counter()
            world = monitor_world(args.monitor_customers, args.seed + k)
            history = thin_daily(world.history_events())
            log.info("monitor world %d: %d events in %.0fs", args.seed + k, len(history), time.perf_counter() - t0)
            if "detection" in sections:
                per_seed[args.seed + k] = detection_section(world, history, DETECTORS)
            if "campaign" in sections and k == 0:
                res["campaign"] = campaign_section(world, history, args.seed, args.budget)
        if per_seed:
            res["detection"] = pool_detection(per_seed)
    if "triggers" in sections:
        res["triggers"] = triggers_section(args.trigger_customers, args.seed)
    res["seconds"] = time.perf_counter() - t_start
    write(res, args)


def write(res: dict[str, Any], args: argparse.Namespace) -> None:
    lines = [
        "# Marketing automation on the simulated world",
        "",
        environment_md(
            {"seed": str(args.seed), "command": "python benchmarks/automation_bench.py " + " ".join(sys.argv[1:])}
        ),
        f"- run time: {res['seconds'] / 60:.1f} min",
        "",
    ]
    if "abuse" in res:
        lines += report_abuse(res["abuse"])
    if "segments" in res:
        lines += report_segments(res["segments"])
    if "detection" in res:
        lines += report_detection(res["detection"], args.monitor_customers)
    if "campaign" in res:
        lines += report_campaign(res["campaign"], args.budget)
    if "triggers" in res:
        lines += report_triggers(res["triggers"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
