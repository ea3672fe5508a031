"""Outcomes join their decisions exactly once, inside the window, whatever the order they arrive in."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from offerlift.features.attribution import attribute


def reference(decisions: pd.DataFrame, events: pd.DataFrame, window: float) -> dict[str, float]:
    """The obvious loop: each distinct event to the latest decision of its customer covering it."""
    spend = {d: 0.0 for d in decisions["decision_id"]}
    seen = set()
    for _, ev in events.iterrows():
        if ev["event_id"] in seen:
            continue
        seen.add(ev["event_id"])
        mine = decisions[(decisions.customer_id == ev.customer_id) & (decisions.ts <= ev.ts)]
        if len(mine) == 0:
            continue
        last = mine.sort_values("ts", kind="stable").iloc[-1]
        if ev.ts < last.ts + window:
            spend[last.decision_id] += ev.spend
    return spend


def tables(seed: int, n_dec: int, n_ev: int):
    rng = np.random.default_rng(seed)
    decisions = pd.DataFrame(
        {
            "decision_id": [f"d{i}" for i in range(n_dec)],
            "customer_id": rng.choice(["a", "b", "c"], n_dec),
            "ts": rng.choice(np.arange(0, 100, 7.0), n_dec, replace=False)
            if n_dec <= 14
            else rng.uniform(0, 100, n_dec),
        }
    )
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in rng.integers(0, max(1, n_ev), n_ev)],
            "customer_id": rng.choice(["a", "b", "c", "z"], n_ev),
            "ts": rng.uniform(-10, 130, n_ev),
            "visit": 1,
            "buy": rng.integers(0, 2, n_ev),
            "spend": rng.gamma(2, 5, n_ev),
            "redeem": 0,
        }
    )
    events = events.drop_duplicates("event_id").pipe(lambda e: pd.concat([e, e.sample(frac=0.3, random_state=seed)]))
    return decisions, events


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12), st.integers(0, 40), st.floats(1, 50))
def test_join_matches_reference_and_ignores_duplicates(seed, n_dec, n_ev, window):
    decisions, events = tables(seed, n_dec, n_ev)
    got = attribute(decisions, events, window)
    want = reference(decisions, events, window)
    np.testing.assert_allclose(got.joined["spend"].to_numpy(), [want[d] for d in decisions["decision_id"]])
    assert list(got.joined["decision_id"]) == list(decisions["decision_id"])
    assert got.duplicates == len(events) - events["event_id"].nunique()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_running_again_or_in_another_order_counts_nothing_twice(seed):
    decisions, events = tables(seed, 8, 30)
    once = attribute(decisions, events, 20.0).joined
    shuffled = events.sample(frac=1.0, random_state=seed)
    twice = attribute(decisions, pd.concat([shuffled, events]), 20.0).joined
    pd.testing.assert_frame_equal(once, twice)


def test_late_event_is_counted_by_the_next_join_if_inside_the_window():
    decisions = pd.DataFrame({"decision_id": ["d1"], "customer_id": ["a"], "ts": [0.0]})
    first = pd.DataFrame(
        {"event_id": ["e1"], "customer_id": ["a"], "ts": [1.0], "visit": 1, "buy": 1, "spend": 10.0, "redeem": 0}
    )
    late = first.assign(event_id="e2", ts=9.0, spend=5.0)
    too_late = first.assign(event_id="e3", ts=10.0, spend=7.0)
    out = attribute(decisions, pd.concat([first, late, too_late]), window=10.0, as_of=20.0)
    assert out.joined.loc[0, "spend"] == 15.0 and out.unattributed == 1 and not out.joined.loc[0, "open"]


def test_named_decision_wins_over_last_touch():
    decisions = pd.DataFrame({"decision_id": ["d1", "d2"], "customer_id": ["a", "a"], "ts": [0.0, 5.0]})
    ev = pd.DataFrame(
        {
            "event_id": ["e1"],
            "customer_id": ["a"],
            "ts": [6.0],
            "visit": 1,
            "buy": 1,
            "spend": 10.0,
            "redeem": 1,
            "decision_id": ["d1"],
        }
    )
    out = attribute(decisions, ev, window=10.0).joined
    assert list(out["spend"]) == [10.0, 0.0] and list(out["redeem"]) == [1.0, 0.0]
