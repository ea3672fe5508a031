"""Tests of the point-in-time feature builder: a naive reference, point-in-time properties, the online path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offerlift.features.build import (
    ACTIVITY_KINDS,
    EVENT_KINDS,
    LIFECYCLE_STAGES,
    EventIndex,
    build_features,
    check_events,
    event_indexes,
    latest_features,
    lifecycle_stage,
)
from offerlift.features.errors import SchemaError

KINDS = ["transaction", "offer_received", "offer_viewed", "offer_completed"]


def make_events(rng: np.random.Generator, n: int, customers: list[str], horizon: float = 60 * 24.0) -> pd.DataFrame:
    """Random canonical events; times on a coarse grid so that ties with unit times happen often."""
    kind = rng.choice(KINDS, n)
    return pd.DataFrame(
        {
            "customer_id": rng.choice(customers, n),
            "time": rng.integers(0, int(horizon / 12), n) * 12.0,
            "event": kind,
            "amount": np.where(kind == "transaction", rng.exponential(10.0, n).round(2), 0.0),
            "offer_id": np.where(kind == "transaction", None, rng.choice(["o1", "o2"], n)),
            "reward": np.where(kind == "offer_completed", rng.integers(1, 6, n), 0).astype(float),
            "channel": None,
        }
    )


def make_customers(ids: list[str]) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "signup_time": -24.0 * np.arange(n),
            "age": np.linspace(20, 70, n),
            "gender": (["F", "M", None] * n)[:n],
            "reach_sms": ([1, 0] * n)[:n],
        }
    )


def naive_features(events: pd.DataFrame, customers: pd.DataFrame, as_of: pd.DataFrame) -> pd.DataFrame:
    """The reference: one unit at a time, with plain filters."""
    rows = []
    cust = customers.set_index("customer_id")
    for unit in as_of.itertuples(index=False):
        e = events[(events["customer_id"] == unit.customer_id) & (events["time"] < unit.time)]
        tx = e[e["event"] == "transaction"]
        rec = e[e["event"] == "offer_received"]
        n_view = int((e["event"] == "offer_viewed").sum())
        done = e[e["event"] == "offer_completed"]
        last7 = tx[tx["time"] >= unit.time - 168]
        last30 = tx[tx["time"] >= unit.time - 720]
        n = len(tx)
        rows.append(
            {
                "recency_hours": unit.time - tx["time"].max() if n else np.nan,
                "frequency": n,
                "monetary": tx["amount"].sum(),
                "avg_basket": tx["amount"].sum() / n if n else np.nan,
                "tx_7d": len(last7),
                "spend_7d": last7["amount"].sum(),
                "tx_30d": len(last30),
                "spend_30d": last30["amount"].sum(),
                "offers_received": len(rec),
                "offers_viewed": n_view,
                "offers_completed": len(done),
                "rewards_earned": done["reward"].sum(),
                "view_rate": n_view / len(rec) if len(rec) else np.nan,
                "completion_rate": len(done) / len(rec) if len(rec) else np.nan,
                "hours_since_offer": unit.time - rec["time"].max() if len(rec) else np.nan,
                "tenure_days": (unit.time - cust.loc[unit.customer_id, "signup_time"]) / 24.0
                if unit.customer_id in cust.index
                else np.nan,
            }
        )
    return pd.DataFrame(rows, index=pd.Index(as_of["unit_id"].to_numpy(), name="unit_id"))


def make_units(rng: np.random.Generator, n: int, customers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "unit_id": [f"u{i}" for i in range(n)],
            "customer_id": rng.choice(customers, n),
            "time": rng.integers(0, 130, n) * 12.0,
        }
    )


def test_features_match_naive_per_unit_loop() -> None:
    rng = np.random.default_rng(7)
    ids = [f"c{i}" for i in range(12)]
    events = make_events(rng, 600, ids)
    customers = make_customers(ids[:-1])  # one customer without attributes
    as_of = make_units(rng, 80, [*ids, "stranger"])
    got = build_features(events, customers, as_of)
    want = naive_features(events, customers, as_of)
    assert list(got.index) == list(as_of["unit_id"])
    for col in want.columns:
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-9, err_msg=col)
    assert got.loc[as_of["customer_id"].eq("stranger").to_numpy(), "frequency"].eq(0).all()


def test_demographics_and_flags_pass_through_with_customer_level_categories() -> None:
    ids = ["a", "b", "c"]
    customers = make_customers(ids)
    as_of = pd.DataFrame({"unit_id": ["x", "y"], "customer_id": ["b", "zz"], "time": [5.0, 5.0]})
    got = build_features(make_events(np.random.default_rng(0), 20, ids), customers, as_of)
    assert isinstance(got["gender"].dtype, pd.CategoricalDtype)
    assert list(got["gender"].cat.categories) == ["F", "M"]  # from all customers, not the two units
    assert got.loc["x", "gender"] == "M" and pd.isna(got.loc["y", "gender"])
    assert got.loc["x", "age"] == 45.0 and np.isnan(got.loc["y", "age"])
    assert got.loc["x", "reach_sms"] == 0.0


def test_lifecycle_rules_and_fixed_categories() -> None:
    stage = lifecycle_stage(np.array([0, 1, 2, 4, 5, 5, 9]), np.array([0, 1, 2, 4, 2, 3, 9]))
    assert list(stage.categories) == list(LIFECYCLE_STAGES)
    assert list(stage) == ["never_bought", "potential", "regular", "regular", "repeat", "loyal", "loyal"]


def test_event_index_counts_strictly_before() -> None:
    idx = EventIndex(["a", "a", "b", "a"], np.array([1.0, 2.0, 2.0, 3.0]), {"v": np.array([1.0, 2.0, 4.0, 8.0])})
    codes = idx.codes(["a", "a", "a", "b", "nobody"])
    t = np.array([2.0, 2.5, 9.0, 2.0, 9.0])
    assert list(idx.count_before(codes, t)) == [1, 2, 3, 0, 0]
    assert list(idx.sum_before("v", codes, t)) == [1.0, 3.0, 11.0, 0.0, 0.0]
    np.testing.assert_array_equal(idx.last_before(codes, t), [1.0, 2.0, 3.0, np.nan, np.nan])


def test_latest_features_uses_the_same_builder() -> None:
    rng = np.random.default_rng(3)
    ids = [f"c{i}" for i in range(5)]
    events, customers = make_events(rng, 200, ids), make_customers(ids)
    online = latest_features(events, customers, ["c1", "c3"], at=300.0)
    as_of = pd.DataFrame({"unit_id": ["c1", "c3"], "customer_id": ["c1", "c3"], "time": [300.0, 300.0]})
    pd.testing.assert_frame_equal(online, build_features(events, customers, as_of))
    everything = latest_features(events, customers)
    assert everything["frequency"].sum() == (events["event"] == "transaction").sum()


def test_missing_column_and_bad_time_name_the_column() -> None:
    events = make_events(np.random.default_rng(1), 10, ["a"])
    as_of = pd.DataFrame({"unit_id": ["u"], "customer_id": ["a"], "time": [1.0]})
    with pytest.raises(SchemaError, match="'amount'"):
        build_features(events.drop(columns="amount"), make_customers(["a"]), as_of)
    bad = events.copy()
    bad.loc[3, "time"] = np.nan
    with pytest.raises(SchemaError, match="'time'") as info:
        build_features(bad, make_customers(["a"]), as_of)
    assert info.value.rows == [3]
    with pytest.raises(SchemaError, match="duplicate unit ids"):
        build_features(events, make_customers(["a"]), pd.concat([as_of, as_of]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    cut=st.integers(0, 120).map(lambda k: k * 12.0),
    drop_share=st.floats(0.0, 1.0),
    n_new=st.integers(0, 30),
)
def test_events_at_or_after_t_never_change_features_at_t(seed: int, cut: float, drop_share: float, n_new: int) -> None:
    """Point in time: drop, change and add events at or after `cut`; units at times <= cut must not move."""
    rng = np.random.default_rng(seed)
    ids = [f"c{i}" for i in range(6)]
    events, customers = make_events(rng, 150, ids), make_customers(ids)
    as_of = make_units(rng, 30, ids)
    as_of.loc[0, "time"] = cut  # at least one unit exactly at the cut
    before = build_features(events, customers, as_of)

    late = events["time"].to_numpy() >= cut
    changed = events.loc[~late | (rng.random(len(events)) > drop_share)].copy()
    later = changed["time"].to_numpy() >= cut
    changed.loc[later, "amount"] = changed.loc[later, "amount"] * 3 + 1
    changed.loc[later, "event"] = rng.choice(KINDS, int(later.sum()))
    extra = make_events(rng, n_new, ids)
    extra["time"] = cut + extra["time"]  # all at or after the cut
    changed = pd.concat([extra, changed], ignore_index=True)
    after = build_features(changed, customers, as_of)

    keep = as_of["time"].to_numpy() <= cut
    pd.testing.assert_frame_equal(before.loc[keep], after.loc[keep], check_exact=True)


def test_row_order_of_events_does_not_matter() -> None:
    rng = np.random.default_rng(5)
    ids = [f"c{i}" for i in range(5)]
    events, customers = make_events(rng, 300, ids), make_customers(ids)
    as_of = make_units(rng, 40, ids)
    shuffled = events.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(
        build_features(events, customers, as_of), build_features(shuffled, customers, as_of), rtol=1e-12
    )


def test_prebuilt_indexes_give_the_same_features() -> None:
    rng = np.random.default_rng(11)
    ids = [f"c{i}" for i in range(4)]
    events, customers = make_events(rng, 100, ids), make_customers(ids)
    as_of = make_units(rng, 20, ids)
    pd.testing.assert_frame_equal(
        build_features(events, customers, as_of),
        build_features(events, customers, as_of, indexes=event_indexes(events)),
    )


def activity_events(rng: np.random.Generator, n: int, customers: list[str], horizon: float = 60 * 24.0) -> pd.DataFrame:
    """Random app_open and signup events on the same coarse time grid as `make_events` (ties with units)."""
    return pd.DataFrame(
        {
            "customer_id": rng.choice(customers, n),
            "time": rng.integers(0, int(horizon / 12), n) * 12.0,
            "event": rng.choice(ACTIVITY_KINDS, n),
            "amount": 0.0,
            "offer_id": None,
            "reward": 0.0,
            "channel": None,
        }
    )


def test_activity_events_are_valid_and_in_the_contract() -> None:
    assert set(ACTIVITY_KINDS) == {"app_open", "signup"} and set(ACTIVITY_KINDS) <= set(EVENT_KINDS)
    events = activity_events(np.random.default_rng(0), 10, ["a", "b"])
    assert check_events(events) is events
    bad = events.assign(event=["app_open"] * 9 + ["app_close"])
    with pytest.raises(SchemaError, match="'event'") as info:
        check_events(bad)
    assert info.value.rows == [9]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_activity=st.integers(1, 200))
def test_activity_events_change_no_feature(seed: int, n_activity: int) -> None:
    """app_open and signup events (also at the units' own times, also of unknown customers) move no feature."""
    rng = np.random.default_rng(seed)
    ids = [f"c{i}" for i in range(6)]
    events, customers = make_events(rng, 150, ids), make_customers(ids)
    as_of = make_units(rng, 30, ids)
    events = events.sort_values("time", kind="stable", ignore_index=True)
    mixed = pd.concat([events, activity_events(rng, n_activity, [*ids, "newcomer"])], ignore_index=True)
    mixed = mixed.sort_values("time", kind="stable", ignore_index=True)  # interleaved, same order of the rest
    want = build_features(events, customers, as_of)
    pd.testing.assert_frame_equal(build_features(mixed, customers, as_of), want, check_exact=True)
    online = latest_features(mixed, customers, ids, at=900.0)
    pd.testing.assert_frame_equal(online, latest_features(events, customers, ids, at=900.0), check_exact=True)
