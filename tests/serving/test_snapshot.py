"""Every logged decision keeps what it was decided on: the scored features (point-in-time exact whatever the store
holds later) and the treated policy's probability of every allowed arm."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from offerlift.features.store import OnlineStore
from offerlift.models.scoring import ArmScorer
from offerlift.serving.policy import PolicyConfig, decide
from tests.serving.conftest import customers_frame, tiny_spec
from tests.serving.test_decide_many import logged_decider


@pytest.fixture
def setup(tmp_path):
    store = tmp_path / "store.db"
    frame = customers_frame(50, seed=3)
    OnlineStore(store).put_frame(frame, as_of=0.0)
    spec = tiny_spec(seed=0, trees=3)
    return logged_decider(tmp_path, store, "snap", spec), frame, spec, store


def _row(decider, decision_id: str) -> dict:
    return next(r for r in decider.log.read() if r["decision_id"] == decision_id)


def test_a_decision_keeps_its_features_when_the_store_changes_after_it(setup):
    decider, frame, spec, store = setup
    first = decider.decide("cust00007", {"timestamp": 3600.0})
    changed = frame.loc[["cust00007"]].assign(age=99.0, monetary=frame.loc["cust00007", "monetary"] * 10, city="wuhan")
    OnlineStore(store).put_frame(changed, as_of=10.0)
    second = decider.decide("cust00007", {"timestamp": 7200.0})
    snap1 = json.loads(_row(decider, first.decision_id)["features"])
    snap2 = json.loads(_row(decider, second.decision_id)["features"])
    original = frame.loc["cust00007"]
    assert snap1["age"] == original["age"] and snap1["city"] == original["city"]
    assert snap1["monetary"] == pytest.approx(original["monetary"])
    assert (snap2["age"], snap2["city"]) == (99.0, "wuhan")
    # the snapshot scores exactly as the decision did: its logged expected profit comes back
    scorer = ArmScorer(spec)
    incr = scorer.incremental_profit(scorer.features.encode_records([snap1]))
    assert incr[0, scorer.arms.index(first.arm)] == pytest.approx(first.expected_incremental_profit, abs=1e-12)


def test_the_context_overrides_are_in_the_snapshot_and_missing_values_are_null(setup):
    decider, frame, _, _ = setup
    d = decider.decide("cust00003", {"timestamp": 3600.0, "city": "chengdu", "features": {"income": 123.0}})
    snap = json.loads(_row(decider, d.decision_id)["features"])
    assert (snap["city"], snap["income"]) == ("chengdu", 123.0)
    cold = decider.decide("nobody", {"timestamp": 3600.0})
    assert json.loads(_row(decider, cold.decision_id)["features"]) == {}
    assert np.isnan(frame["recency_hours"]).any()  # the store holds NaN; JSON holds null
    nan_id = frame.index[np.isnan(frame["recency_hours"])][0]
    snap_nan = json.loads(_row(decider, decider.decide(nan_id, {"timestamp": 3600.0}).decision_id)["features"])
    assert snap_nan["recency_hours"] is None


def test_logged_arm_probabilities_are_the_policys_and_their_keys_the_allowed_arms(setup):
    decider, _, _, _ = setup
    rows = [decider.decide(f"cust{i:05d}", {"timestamp": 3600.0}) for i in range(30)]
    logged = pd.DataFrame(decider.log.read()).set_index("decision_id").loc[[r.decision_id for r in rows]]
    for (_, row), d in zip(logged.iterrows(), rows, strict=True):
        probs = json.loads(row["arm_probs"])
        assert "none" in probs and sum(probs.values()) == pytest.approx(1.0)
        assert d.arm in probs  # the arm given was allowed
        within = probs[d.arm]  # the logged propensity is holdout * 1[none] + (1 - holdout) * treated probability
        assert row["propensity"] == pytest.approx(0.1 * (d.arm == "none") + 0.9 * within)


def test_treated_probabilities_of_the_pure_policy_match_its_draws():
    """The probabilities `decide` reports are those its draws follow (frequencies over many draws)."""
    rng = np.random.default_rng(0)
    n, k = 4, 5
    incr = rng.normal(0, 1, (n, k))
    allowed = rng.random((n, k)) < 0.7
    cfg = PolicyConfig(holdout=0.0, explore=0.4, explore_scheme="softmax", temperature=0.5)
    reps = 20_000
    d = decide(np.repeat(incr, reps, 0), np.zeros((n * reps, k)), np.repeat(allowed, reps, 0), np.ones(n * reps),
               rng.random((n * reps, 2)), cfg)  # fmt: skip
    freq = np.stack([np.bincount(d.arm[i * reps : (i + 1) * reps], minlength=k) / reps for i in range(n)])
    np.testing.assert_allclose(d.arm_probs[::reps], freq, atol=0.015)
    assert np.allclose(d.arm_probs.sum(axis=1), 1.0)
