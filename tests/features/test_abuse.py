"""Coupon abuse: behaviour columns on hand-made events, rules, the mask, the world's rings (model: tests/training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offerlift.features.abuse import (
    AbusePolicy,
    AbuseRules,
    abuse_features,
    abuse_mask,
    identity_flags,
    rule_score,
)
from offerlift.features.errors import ConfigError, DataError, SchemaError
from offerlift.simworld.config import load_world_spec
from offerlift.simworld.world import SimWorld

CATALOG = load_world_spec()[0]  # offers c3 (min 15), c5 (30), c10 (60), c20 (120), c40 (250)


def ev(rows: list[tuple]) -> pd.DataFrame:
    cols = ["customer_id", "time", "event", "amount", "offer_id", "reward", "channel"]
    return pd.DataFrame(rows, columns=cols)


def small_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events and customers of three hand-made customers (also used by tests/training/test_abuse_model.py)."""
    events = ev(
        [
            # a: ordinary baskets 40 and 60 (median 50); redeems c40 (min 250) with a basket of 52: below the minimum
            ("a", 1.0, "transaction", 40.0, None, 0.0, None),
            ("a", 2.0, "transaction", 60.0, None, 0.0, None),
            ("a", 3.0, "offer_viewed", 0.0, "c40", 0.0, None),
            ("a", 4.0, "transaction", 52.0, None, 0.0, None),
            ("a", 4.0, "offer_completed", 0.0, "c40", 40.0, None),
            # b: ordinary basket 50, redeems c10 (min 60) spending 75: trade-up
            ("b", 1.0, "transaction", 50.0, None, 0.0, None),
            ("b", 3.0, "offer_viewed", 0.0, "c10", 0.0, None),
            ("b", 3.0, "offer_viewed", 0.0, "c5", 0.0, None),
            ("b", 5.0, "transaction", 75.0, None, 0.0, None),
            ("b", 5.0, "offer_completed", 0.0, "c10", 10.0, None),
            ("b", 50.0, "transaction", 75.0, None, 0.0, None),  # after `at`
        ]
    )
    customers = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "device_id": ["d1", "d1", "d2"],
            "payment_id": ["p1", "p2", "p3"],
        }
    )
    return events, customers


@pytest.fixture
def small() -> tuple[pd.DataFrame, pd.DataFrame]:
    return small_tables()


def test_abuse_features_on_hand_made_events(small):
    events, customers = small
    f = abuse_features(events, customers, at=10.0, catalog=CATALOG)
    assert f["accounts_per_device"].tolist() == [2.0, 2.0, 1.0]
    assert f["accounts_per_payment"].tolist() == [1.0, 1.0, 1.0]
    assert f["transactions"].tolist() == [3.0, 2.0, 0.0]
    assert f["offers_redeemed"].tolist() == [1.0, 1.0, 0.0]
    assert f["below_min_redemptions"].tolist() == [1.0, 0.0, 0.0]
    assert f.loc["a", "trade_up"] == pytest.approx(52.0 / 50.0)
    assert f.loc["b", "trade_up"] == pytest.approx(75.0 / 50.0)
    assert f.loc["a", "min_spend_stretch"] == pytest.approx(250.0 / 50.0)
    assert np.isnan(f.loc["c", "trade_up"])
    p_view, p_share = 2 / 3, 2 / 5  # population: 2 redemptions, 3 views, 5 purchases
    assert f.loc["b", "redeem_per_view"] == pytest.approx((1 + 2 * p_view) / (2 + 2))
    assert f.loc["c", "redeem_share"] == pytest.approx(p_share)


def test_activity_events_change_no_abuse_feature(small):
    events, customers = small
    activity = ev(
        [(c, t, kind, 0.0, None, 0.0, None) for c in ("a", "b", "c", "z") for t in (0.0, 4.0, 5.0) for kind in
         ("app_open", "signup")]
    )  # fmt: skip
    mixed = pd.concat([activity, events], ignore_index=True)
    want = abuse_features(events, customers, at=10.0, catalog=CATALOG)
    pd.testing.assert_frame_equal(abuse_features(mixed, customers, at=10.0, catalog=CATALOG), want)
    with pytest.raises(SchemaError, match="'event'"):
        abuse_features(mixed.assign(event="app_close"), customers)


def test_without_a_catalog_the_threshold_columns_are_neutral(small):
    events, customers = small
    f = abuse_features(events, customers.drop(columns=["device_id", "payment_id"]))
    assert (f["below_min_redemptions"] == 0).all() and f["min_spend_stretch"].isna().all()
    assert (f["accounts_per_device"] == 1).all()


def test_rule_score_takes_the_strongest_rule_and_names_every_reason(small):
    events, customers = small
    f = abuse_features(events, customers, at=10.0, catalog=CATALOG)
    f.loc["c", "accounts_per_payment"] = 4.0
    f.loc["c", "accounts_per_device"] = 3.0
    score, reasons = rule_score(f, AbuseRules(payment_weight=0.7, device_weight=0.6, below_min_weight=0.9))
    assert score.tolist() == [0.9, 0.0, 0.7]
    assert "below the minimum spend" in reasons[0] and reasons[1] == ""
    assert "payment id shared by 4 accounts" in reasons[2] and "device shared by 3 accounts" in reasons[2]


@pytest.mark.parametrize("bad", [{"payment_weight": 1.5}, {"device_accounts": 1}])
def test_bad_rules_are_config_errors(bad):
    with pytest.raises(ConfigError):
        AbuseRules(**bad)


def test_abuse_policy_validates_and_names_unknown_keys():
    with pytest.raises(ConfigError, match="cap_at"):
        AbusePolicy(exclude_at=0.3, cap_at=0.6)
    with pytest.raises(ConfigError, match="exclude"):
        AbusePolicy.from_dict({"exclude": 0.9})
    assert AbusePolicy.from_dict({"cap_value": 3}).cap_value == 3


def naive_mask(risk: np.ndarray, policy: AbusePolicy) -> np.ndarray:
    out = np.ones((risk.size, len(CATALOG.arms)), dtype=bool)
    for i, r in enumerate(risk):
        for j, arm in enumerate(CATALOG.arms):
            if arm.is_control:
                continue
            if r >= policy.exclude_at or (r >= policy.cap_at and arm.coupon_value > policy.cap_value):
                out[i, j] = False
    return out


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 3.0, 5.0, 20.0]),
)
def test_abuse_mask_matches_a_naive_reference_and_shrinks_as_risk_grows(risk, a, b, cap_value):
    policy = AbusePolicy(exclude_at=max(a, b), cap_at=min(a, b), cap_value=cap_value)
    risk = np.array(risk)
    mask = abuse_mask(risk, CATALOG, policy)
    np.testing.assert_array_equal(mask, naive_mask(risk, policy))
    assert mask[:, 0].all()
    order = np.argsort(risk)
    sorted_mask = mask[order]
    assert (sorted_mask[1:] <= sorted_mask[:-1]).all()  # a riskier customer never gets an arm a safer one lacks


def test_abuse_mask_rejects_a_matrix_of_risks():
    with pytest.raises(DataError):
        abuse_mask(np.zeros((2, 2)), CATALOG)


@pytest.fixture(scope="module")
def world() -> SimWorld:
    return SimWorld.default(4000, seed=5)


@pytest.fixture(scope="module")
def world_features(world: SimWorld) -> pd.DataFrame:
    return abuse_features(world.history_events(), world.customers, at=0.0, catalog=world.catalog)


def test_identity_rules_find_the_worlds_rings(world, world_features):
    truth = world.hidden.abuser
    flagged = identity_flags(world_features)
    assert (flagged & ~truth).sum() == 0  # households share a device with one account only: never flagged
    assert (flagged & truth).sum() >= 0.95 * truth.sum()
