"""Early warning: hourly metrics against a naive reference, the detector, explained alerts, campaigns that start
on an alert and stop on recovery, budget or time, and the evidence log."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from offerlift.features.errors import ConfigError, SchemaError
from offerlift.serving.monitor import (
    METRICS,
    CampaignRule,
    Detector,
    JsonlLog,
    Monitor,
    PolicyExecutor,
    load_monitor_config,
    metric_table,
)

CITIES = ("north", "south", "east")
TIERS = ("bronze", "silver")


def random_events(rng: np.random.Generator, n: int, customers: list[str], hours: float = 60.0) -> pd.DataFrame:
    kind = rng.choice(["transaction", "offer_received", "offer_viewed", "offer_completed"], n, p=[0.5, 0.2, 0.1, 0.2])
    return pd.DataFrame(
        {
            "customer_id": rng.choice(customers, n),
            "time": rng.uniform(-40.0, hours, n).round(1),
            "event": kind,
            "amount": np.where(kind == "transaction", rng.exponential(20.0, n).round(2), 0.0),
            "offer_id": np.where(kind == "transaction", None, rng.choice(["o1", "o2"], n)),
            "reward": 0.0,
            "channel": np.where(kind == "offer_received", rng.choice(["sms", "push"], n), None),
        }
    )


def naive(events, customers, metric, dim, hour) -> tuple[float, float]:
    """Reference numerator and denominator of one (metric, dimension value, hour) cell, with plain filters."""
    city = customers.set_index("customer_id")["city"]
    e = events.assign(city=events["customer_id"].map(city))
    in_value = e["city"] == dim if dim != "all" else pd.Series(True, index=e.index)
    t0, t1 = float(hour), float(hour + 1)
    now = e[in_value & (e["time"] >= t0) & (e["time"] < t1)]
    tx = now[now["event"] == "transaction"]
    if metric == "orders":
        pop = (customers["city"] == dim).sum() if dim != "all" else len(customers)
        return len(tx), float(pop)
    if metric == "basket":
        return tx["amount"].sum(), float(len(tx))
    if metric == "conversion":
        before = e[in_value & (e["event"] == "transaction") & (e["time"] >= t0 - 720) & (e["time"] < t0)]
        return float(tx["customer_id"].nunique()), float(before["customer_id"].nunique())
    rec = e[in_value & (e["event"] == "offer_received") & (e["time"] >= t0 - 168) & (e["time"] < t0)]
    return float((now["event"] == "offer_completed").sum()), float(len(rec))


def test_metric_table_matches_a_naive_reference():
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(30)]
    customers = pd.DataFrame({"customer_id": ids, "city": rng.choice(CITIES, 30)})
    events = random_events(rng, 600, ids)
    table = metric_table(events, customers, list(METRICS), ("all", "city"), start=0.0, end=60.0)
    assert len(table) == len(METRICS) * 4 * 60
    for row in table.sample(120, random_state=1).itertuples():
        num, den = naive(events, customers, row.metric, row.value, row.hour)
        assert row.num == pytest.approx(num), row
        assert row.den == pytest.approx(den), row
        if den > 0:
            assert row.rate == pytest.approx(num / den * METRICS[row.metric].scale)


def test_channel_dimension_credits_redemptions_to_the_receiving_channel():
    events = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "b"],
            "time": [0.5, 2.5, 1.5, 3.5],
            "event": ["offer_received", "offer_completed", "offer_received", "offer_completed"],
            "amount": 0.0,
            "offer_id": ["o1", "o1", "o1", "o1"],
            "reward": 0.0,
            "channel": ["sms", None, "push", None],
        }
    )
    customers = pd.DataFrame({"customer_id": ["a", "b"], "city": ["north", "south"]})
    t = metric_table(events, customers, ["redemption"], ["channel"], start=0.0, end=4.0).set_index(["value", "hour"])
    assert t.loc[("sms", 2), "num"] == 1 and t.loc[("push", 3), "num"] == 1 and t["num"].sum() == 2
    assert t.loc[("sms", 1), "den"] == 1 and t.loc[("sms", 0), "den"] == 0
    with pytest.raises(ConfigError, match="redemption metric only"):
        metric_table(events, customers, ["orders"], ["channel"])
    with pytest.raises(SchemaError, match="region"):
        metric_table(events, customers, ["orders"], ["region"])


def test_detector_baseline_is_the_same_hour_median_and_spread_is_floored():
    det = Detector(scale="same_hour", rel_floor=0.0, min_expected=0.0)
    past = np.array([10.0, 12.0, 11.0, 13.0, 9.0, np.nan, 11.0])
    base, spread, z = det.score(past, 5.0, 1e9, METRICS["basket"])
    assert base == 11.0
    assert spread == pytest.approx(1.4826 * 1.0)
    assert z == pytest.approx((5.0 - 11.0) / spread)
    # a count metric is never more certain than Poisson noise: 11 per 1000 of 1000 customers = 11 expected orders
    _, spread, _ = det.score(np.full(7, 11.0), 5.0, 1000.0, METRICS["orders"])
    assert spread == pytest.approx(np.sqrt(11.0 * 1000 / 1000))
    assert np.isnan(
        det.score(np.array([1.0, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan]), 1.0, 10, METRICS["basket"])[2]
    )
    pooled = Detector()
    assert np.isnan(pooled.score(np.full(7, 11.0), 5.0, 1000.0, METRICS["orders"], np.zeros(10))[2])  # warming up
    _, spread, _ = pooled.score(np.full(7, 11.0), 5.0, 1000.0, METRICS["orders"], np.full(48, 2.0))
    assert spread == pytest.approx(np.sqrt(11.0) * 1.4826 * 2.0)


@pytest.mark.parametrize("bad", [{"lookback": 2}, {"threshold": 0.0}, {"scale": "weekly"}, {"explain_share": 1.5}])
def test_bad_detector_settings_are_config_errors(bad):
    with pytest.raises(ConfigError):
        Detector(**bad)


def synthetic_table(seed: int, days: int = 10, drop: tuple[str, int, int, float] | None = None, again: int = 0):
    """Hourly orders of customers in 3 cities x 2 tiers (a daily cycle); `drop` = (city, start, end, factor),
    repeated `again` hours later when `again` is set."""
    rng = np.random.default_rng(seed)
    pop = {(c, t): 10_000 for c in CITIES for t in TIERS}
    hours = np.arange(days * 24)
    rate = 2.0 * (1.0 + 0.5 * np.sin(2 * np.pi * hours / 24))  # per 1000 customers per hour
    cells = {}
    for (c, t), n in pop.items():
        lam = rate * n / 1000.0
        for shift in (0, again) if again else (0,):
            if drop is not None and c == drop[0]:
                lam = np.where((hours >= drop[1] + shift) & (hours < drop[2] + shift), lam * drop[3], lam)
        cells[(c, t)] = rng.poisson(lam).astype(float)
    rows = []
    for dim, values, pick in (("all", ["all"], lambda k, v: True), ("city", CITIES, lambda k, v: k[0] == v)):
        for v in values:
            num = sum(x for k, x in cells.items() if pick(k, v))
            den = sum(n for k, n in pop.items() if pick(k, v))
            rows.append(pd.DataFrame({"dimension": dim, "value": v, "hour": hours, "num": num, "den": float(den)}))
    for v in TIERS:
        num = sum(x for k, x in cells.items() if k[1] == v)
        rows.append(pd.DataFrame({"dimension": "tier", "value": v, "hour": hours, "num": num, "den": 30_000.0}))
    table = pd.concat(rows, ignore_index=True).assign(metric="orders")
    table["rate"] = table["num"] / table["den"] * 1000.0
    return table


RULE = CampaignRule(name="rescue", metric="orders", dimension="city", budget=100.0, max_hours=48.0)


def test_a_quiet_week_raises_no_alert():
    for seed in range(3):
        monitor = Monitor(rules=[RULE])
        assert monitor.run(synthetic_table(seed)) == []


def test_a_city_drop_is_detected_explained_by_the_city_and_starts_and_stops_a_campaign(tmp_path):
    sink = JsonlLog(tmp_path / "monitor.jsonl")
    monitor = Monitor(rules=[RULE], sink=sink)
    records = monitor.run(synthetic_table(1, drop=("south", 200, 208, 0.3)))
    alerts = [r for r in records if r["kind"] == "alert"]
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert["dimension"], alert["values"]) == ("city", ["south"])
    assert 200 < alert["time"] <= 203  # detected within 3 hours of the start (an hour is known at its end)
    city = alert["evidence"]["explanation"]["city"]
    assert city["values"][0]["deficit_share"] > 0.8 > city["values"][0]["volume_share"]
    assert city["score"] > alert["evidence"]["explanation"]["tier"]["score"]
    kinds = [(r["kind"], r["values"]) for r in records]
    assert ("start", ["south"]) in kinds and ("stop", ["south"]) in kinds
    stop = next(r for r in records if r["kind"] == "stop")
    assert stop["evidence"]["reason"] == "recovered" and 208 <= stop["time"] <= 214
    lines = [json.loads(x) for x in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    assert [x["kind"] for x in lines] == [r["kind"] for r in records]


def test_policy_executor_targets_the_value_and_segment_within_the_budget():
    targets = pd.DataFrame(
        {"city": ["south", "south", "south", "north"], "rfm_segment": ["at_risk", "at_risk", "loyal", "at_risk"]},
        index=pd.Index(["a", "b", "c", "d"], name="customer_id"),
    )
    calls = []

    def decide(ids, context):
        calls.append((list(ids), dict(context)))
        return pd.DataFrame({"customer_id": ids, "arm": ["c5@sms"] * len(ids), "cost": [60.0] * len(ids)})

    sent = []
    rule = CampaignRule(
        name="r", metric="orders", dimension="city", segment={"rfm_segment": "at_risk"}, arms=("c5@sms",), budget=100.0
    )
    monitor = Monitor(rules=[rule], executor=PolicyExecutor(targets, decide, send=sent.append))
    monitor.run(synthetic_table(2, drop=("south", 200, 212, 0.2)))
    assert calls[0][0] == ["a", "b"]
    assert calls[0][1]["arms"] == ["c5@sms"] and calls[0][1]["campaign"] == "r"
    assert sent[0]["customer_id"].tolist() == ["a"]  # the second offer would break the budget
    stop = next(r for r in monitor.records if r["kind"] == "stop")
    assert stop["evidence"]["served"] == {"contacted": 1, "committed": 60.0}


def test_a_campaign_stops_after_max_hours():
    rule = CampaignRule(name="short", metric="orders", dimension="city", max_hours=3.0)
    monitor = Monitor(rules=[rule])
    monitor.run(synthetic_table(3, days=12, drop=("east", 200, 230, 0.2)))
    starts = [r for r in monitor.records if r["kind"] == "start"]
    stops = [r for r in monitor.records if r["kind"] == "stop"]
    assert len(starts) == 1 and stops[0]["evidence"]["reason"] == "max_hours"
    assert stops[0]["time"] - starts[0]["time"] == 3.0


@pytest.mark.parametrize(("cooldown", "starts"), [(0.0, 2), (100.0, 1)])
def test_a_second_drop_restarts_the_campaign_only_after_the_cooldown(cooldown, starts):
    rule = CampaignRule(name="r", metric="orders", dimension="city", cooldown_hours=cooldown)
    monitor = Monitor(rules=[rule])
    monitor.run(synthetic_table(4, days=12, drop=("east", 200, 206, 0.2), again=30))
    assert len([r for r in monitor.records if r["kind"] == "alert"]) == 2
    assert len([r for r in monitor.records if r["kind"] == "start"]) == starts


def test_step_takes_one_hour_at_a_time():
    table = synthetic_table(0, days=1)
    with pytest.raises(SchemaError, match="one hour"):
        Monitor().step(table[table["hour"] < 2])


def test_monitor_config_from_yaml(tmp_path):
    path = tmp_path / "monitor.yaml"
    path.write_text(
        "detector: {threshold: 3.5, confirm: 3}\n"
        "campaigns:\n"
        "  - {name: rescue, metric: orders, dimension: city, arms: [c5@sms], budget: 500,"
        " segment: {rfm_segment: [at_risk]}}\n"
    )
    detector, rules = load_monitor_config(path)
    assert detector.threshold == 3.5 and detector.confirm == 3
    assert rules[0].arms == ("c5@sms",) and rules[0].segment == {"rfm_segment": ["at_risk"]}
    path.write_text("campaigns:\n  - {name: x, metric: orders, dimension: city, budgett: 1}\n")
    with pytest.raises(ConfigError, match="budgett"):
        load_monitor_config(path)
    path.write_text("campaigns:\n  - {name: x, metric: revenue, dimension: city}\n")
    with pytest.raises(ConfigError, match="revenue"):
        load_monitor_config(path)


def test_metric_table_ignores_activity_events():
    rng = np.random.default_rng(1)
    ids = [f"c{i}" for i in range(10)]
    customers = pd.DataFrame({"customer_id": ids, "city": rng.choice(CITIES, 10)})
    events = random_events(rng, 100, ids)
    opens = events.assign(event="app_open", amount=0.0)
    a = metric_table(events, customers, ["orders", "basket"], ["city"], start=0.0, end=60.0)
    b = metric_table(pd.concat([events, opens]), customers, ["orders", "basket"], ["city"], start=0.0, end=60.0)
    pd.testing.assert_frame_equal(a, b)
