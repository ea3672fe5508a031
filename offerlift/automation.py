"""Marketing automation from the command line: segments, coupon abuse, early warning and triggers.

Each ``run_*`` function is one ``offerlift`` sub-command (``offerlift segments|abuse|monitor|triggers``) and returns
a JSON-ready dict. Without an events file every command runs on the simulated world (simworld/default.yaml, its
pre-period events, ``n_customers`` and ``seed``); with one, ``customers`` (a table with customer_id and the
attribute columns) is required. Tables are read and written as .parquet or .csv by suffix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features import abuse as abuse_mod
from offerlift.features import segments as seg_mod
from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError, DataError
from offerlift.serving import monitor as mon_mod
from offerlift.serving import triggers as trig_mod
from offerlift.serving.store_columns import merge_columns
from offerlift.simworld.config import load_world_spec
from offerlift.simworld.world import SimWorld
from offerlift.training.abuse_model import fit_behaviour_model

log = logging.getLogger(__name__)

SEGMENT_STORE_SKIP = (
    "recency_hours",
    "frequency",
    "monetary",
    "lifecycle",
)  # the store has them from offerlift.features.build


@dataclass(frozen=True)
class Inputs:
    """Events, customers, the catalog and (on simulated data) the world itself."""

    events: pd.DataFrame
    customers: pd.DataFrame
    catalog: Catalog
    world: SimWorld | None


def read_table(path: str | Path) -> pd.DataFrame:
    """A .parquet or .csv table."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return trig_mod.read_events(path)


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write .parquet or .csv (tuples of tags become ';'-joined text); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame.reset_index()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, tuple)).any():
            out[col] = out[col].map(lambda v: ";".join(v) if isinstance(v, tuple) else v)
    if path.suffix == ".csv":
        out.to_csv(path, index=False)
    else:
        out.to_parquet(path, index=False)
    return path


def load_inputs(
    events: str | Path | None = None,
    customers: str | Path | None = None,
    n_customers: int = 10_000,
    seed: int = 0,
    catalog: str | Path | None = None,
) -> Inputs:
    """Events and customers from files, or the simulated world's pre-period when `events` is None."""
    if events is None:
        world = SimWorld.default(n_customers=n_customers, seed=seed)
        return Inputs(world.history_events(), world.customers, world.catalog, world)
    if customers is None:
        raise ConfigError("with an events file, give the customers table too (--customers)")
    cat = Catalog.from_yaml(catalog) if catalog is not None else load_world_spec()[0]
    return Inputs(read_table(events), read_table(customers), cat, None)


def world_scores(world: SimWorld) -> trig_mod.Scores:
    """The world's exact incremental profit and expected cost per arm (the best model there can be)."""
    arms = world.arms

    def scores(ids: list[str], at: float) -> tuple[np.ndarray, np.ndarray]:
        truth = world.truth(world.rows_of(ids), at)
        cost = arms.redeem_cost[None, :] * truth.redeem + arms.contact_cost[None, :]
        return truth.incr.astype(float), cost.astype(float)

    return scores


def run_segments(
    events: Path | None = None,
    customers: Path | None = None,
    n_customers: int = 10_000,
    seed: int = 0,
    at: float | None = None,
    by: str = "rfm_segment",
    out: Path | None = None,
    to_store: Path | None = None,
) -> dict[str, Any]:
    """RFM scores, lifecycle, price sensitivity, channel affinity and tags per customer; a report by `by`.

    `at` is the point in time (default: 0 on simulated data, else just after the last event). Writes the
    per-customer table to `out` and merges the segment columns and tags into the online store `to_store` (where
    the service's ``rules.segments`` read them) when given.
    """
    inp = load_inputs(events, customers, n_customers, seed)
    at = 0.0 if at is None and inp.world is not None else at
    table = seg_mod.build_segments(inp.events, inp.customers, at=at, channels=inp.catalog)
    report = seg_mod.segment_report(table, by=by)
    result: dict[str, Any] = {
        "customers": len(table),
        "at": at,
        "by": by,
        "report": report.round(4).to_dict("index"),
        "price_band": table["price_band"].astype(str).value_counts().to_dict(),
        "best_channel": table["best_channel"].value_counts().to_dict(),
        "top_tags": seg_mod.tag_counts(table).head(20).to_dict(),
    }
    if out is not None:
        result["out"] = str(write_table(table, out))
    if to_store is not None:
        cols = [c for c in table.columns if c not in SEGMENT_STORE_SKIP]
        result["store"] = merge_columns(to_store, table[cols], as_of=_as_of(inp, at))
    return result


def _as_of(inp: Inputs, at: float | None) -> float:
    """The time a table computed at `at` is valid for (the last event's time when `at` is None)."""
    if at is not None:
        return float(at)
    return float(inp.events["time"].max()) if len(inp.events) else 0.0


def run_abuse(
    events: Path | None = None,
    customers: Path | None = None,
    n_customers: int = 10_000,
    seed: int = 0,
    at: float | None = None,
    exclude_at: float = 0.8,
    cap_at: float = 0.5,
    cap_value: float = 5.0,
    behaviour_model: bool = True,
    out: Path | None = None,
    to_store: Path | None = None,
) -> dict[str, Any]:
    """Coupon-abuse risk per customer (identity rules, behaviour model on the rules' weak labels) and its bands.

    On simulated data the result also has precision and recall against the world's true abusers. With
    `to_store`, ``abuse_risk`` and ``abuse_band`` are merged into that online store, where the service's
    ``rules.abuse`` reads them.
    """
    inp = load_inputs(events, customers, n_customers, seed)
    at = 0.0 if at is None and inp.world is not None else at
    policy = abuse_mod.AbusePolicy(exclude_at=exclude_at, cap_at=cap_at, cap_value=cap_value)
    feats = abuse_mod.abuse_features(inp.events, inp.customers, at=at, catalog=inp.catalog)
    model = None
    if behaviour_model:
        try:
            model = fit_behaviour_model(feats)
        except DataError as exc:  # too few weak labels: rules only
            log.warning("no behaviour model: %s", exc)
    scores = abuse_mod.abuse_scores(feats, model=model, policy=policy)
    result: dict[str, Any] = {
        "customers": len(scores),
        "bands": scores["band"].value_counts().to_dict(),
        "behaviour_model": model is not None,
        "policy": {"exclude_at": exclude_at, "cap_at": cap_at, "cap_value": cap_value},
    }
    if inp.world is not None:
        truth = inp.world.hidden.abuser
        for name, flag in (("exclude", scores["band"] == "exclude"), ("cap_or_exclude", scores["band"] != "low")):
            flag = flag.to_numpy()
            tp = int((flag & truth).sum())
            result[f"{name}_precision"] = tp / max(int(flag.sum()), 1)
            result[f"{name}_recall"] = tp / max(int(truth.sum()), 1)
    if out is not None:
        result["out"] = str(write_table(feats.join(scores), out))
    if to_store is not None:
        cols = scores[["risk", "band"]].rename(columns={"risk": "abuse_risk", "band": "abuse_band"})
        result["store"] = merge_columns(to_store, cols, as_of=_as_of(inp, at))
    return result


def run_monitor(
    events: Path | None = None,
    customers: Path | None = None,
    n_customers: int = 100_000,
    seed: int = 0,
    config: Path | None = None,
    metrics: Sequence[str] = ("orders", "basket"),
    dimensions: Sequence[str] = ("all", "city", "tier"),
    start: float | None = None,
    end: float | None = None,
    log_path: Path | None = None,
) -> dict[str, Any]:
    """Replay the hourly metrics through the early-warning monitor (campaigns are logged, not served: a dry run).

    `config` is a YAML file with ``detector:`` and ``campaigns:`` (see `offerlift.serving.monitor.load_monitor_config`);
    every alert, recovery, start and stop goes to `log_path` (JSON lines) and into the result.
    """
    inp = load_inputs(events, customers, n_customers, seed)
    detector, rules = mon_mod.load_monitor_config(config) if config is not None else (mon_mod.Detector(), [])
    t0 = time.perf_counter()
    table = mon_mod.metric_table(inp.events, inp.customers, metrics, dimensions, start=start, end=end)
    monitor = mon_mod.Monitor(detector, rules, sink=mon_mod.JsonlLog(log_path))
    records = monitor.run(table)
    return {
        "hours": int(table["hour"].nunique()) if len(table) else 0,
        "series": int(table.groupby(["metric", "dimension", "value"]).ngroups) if len(table) else 0,
        "alerts": sum(r["kind"] == "alert" for r in records),
        "campaign_starts": sum(r["kind"] == "start" for r in records),
        "records": records,
        "seconds": time.perf_counter() - t0,
        "log": None if log_path is None else str(log_path),
    }


def demo_trigger_stream(world: SimWorld, hours: float = 24.0, sessions: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """A demo stream for the triggers on simulated data: ``app_open`` sessions (Poisson, `sessions` per customer
    over the last `hours` before 0), a third of them followed by a purchase within 10 minutes, in time order."""
    rng = np.random.default_rng(seed)
    ids = world.customers["customer_id"].to_numpy()
    counts = rng.poisson(sessions, ids.size)
    who = np.repeat(ids, counts)
    t = rng.uniform(-hours, 0.0, who.size)
    buys = rng.random(who.size) < 1 / 3
    frame = pd.DataFrame({"customer_id": who, "time": t, "event": "app_open"})
    tx = pd.DataFrame({"customer_id": who[buys], "time": t[buys] + rng.uniform(0, 10 / 60, buys.sum())})
    tx = tx.assign(event="transaction", amount=50.0)
    out = pd.concat([frame.assign(amount=0.0), tx], ignore_index=True)
    out = out.assign(offer_id=None, reward=0.0, channel=None)
    return out.sort_values("time", kind="stable").reset_index(drop=True)


def run_triggers(
    events: Path | None = None,
    customers: Path | None = None,
    rules: Path | None = None,
    n_customers: int = 2_000,
    seed: int = 0,
    outbox: Path = Path("outputs/triggers/outbox.jsonl"),
    decide: str = "policy",
    service_config: Path | None = None,
    fixed_arm: str | None = None,
    until: float | None = None,
) -> dict[str, Any]:
    """Replay an event stream through trigger rules and send what the policy decides to a JSON-lines outbox.

    `rules`: YAML with a ``triggers:`` list (default: active 5 minutes without an order; new customer without a
    first order after 3 days). `decide`: ``policy`` (the pure policy; scores are the world's truth on simulated
    data, else `fixed_arm` for everyone) or ``service`` (the service's Decider from `service_config`, champion
    model from the registry). On simulated data the stream is :func:`demo_trigger_stream` plus the signups.
    """
    trigger_rules = (
        trig_mod.load_trigger_rules(rules) if rules else [trig_mod.ACTIVE_NO_ORDER, trig_mod.NEW_NO_FIRST_ORDER]
    )
    inp = load_inputs(events, customers, n_customers, seed)
    stream = inp.events
    if inp.world is not None:
        demo = demo_trigger_stream(inp.world, seed=seed)
        stream = pd.concat([demo, trig_mod.signup_events(inp.customers, -24.0 * 7, 0.0)], ignore_index=True)
    closer = None
    if decide == "service":
        from offerlift.serving.decider import Decider
        from offerlift.serving.settings import load_settings

        decider = Decider(load_settings(service_config))
        decider.load_champion()
        decide_fn, closer = decider.decide, decider.close
    elif decide == "policy":
        attrs = inp.customers.set_index(inp.customers["customer_id"].astype(str))
        if inp.world is not None:
            scores = world_scores(inp.world)
        elif fixed_arm is not None:
            scores = trig_mod.constant_scores(inp.catalog, {fixed_arm: 1.0})
        else:
            raise ConfigError("decide=policy on an events file needs --fixed-arm (or use decide=service)")
        decide_fn = trig_mod.PolicyDecider(inp.catalog, attrs, scores, seed=seed)
    else:
        raise ConfigError(f"decide must be 'policy' or 'service', got {decide!r}")
    engine = trig_mod.TriggerEngine(trigger_rules, decide_fn, trig_mod.FileAdapter(outbox), customers=inp.customers)
    if inp.world is not None:  # the pre-period's buyers are not new customers
        engine.prime(inp.events.loc[inp.events["time"] < stream["time"].min()])
    t0 = time.perf_counter()
    fired = trig_mod.replay(stream, engine, until=until)
    seconds = time.perf_counter() - t0
    if closer is not None:
        closer()
    return {
        "events": len(stream),
        "firings": len(fired),
        "status": fired["status"].value_counts().to_dict() if len(fired) else {},
        "by_trigger": fired.groupby("trigger")["status"].value_counts().unstack(fill_value=0).to_dict("index"),
        "outbox": str(outbox),
        "seconds": seconds,
    }
