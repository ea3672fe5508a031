"""Tests of the simulated world: determinism, the truth against a reference, the oracle, sampling, events."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError, SchemaError
from offerlift.features.schema import validate_table
from offerlift.simworld.config import WorldConfig, load_world_spec, spec_to_world
from offerlift.simworld.experiment import arm_probabilities
from offerlift.simworld.play import EVENT_COLUMNS
from offerlift.simworld.world import SimWorld, make_experiment

N = 3000


@cache
def world0() -> SimWorld:
    """A shared small world: tests that play forward use their own world (playing changes fatigue)."""
    return SimWorld.default(N, seed=7)


def decisions_for(world: SimWorld, rows: np.ndarray, arms: np.ndarray, time: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": world.customers["customer_id"].to_numpy()[rows],
            "time": np.full(rows.size, time),
            "arm": np.asarray(world.arm_ids, dtype=object)[arms],
        }
    )


def reference_truth(world: SimWorld, i: int, a: int, t: float = 0.0) -> tuple[float, float, float, float]:
    """(buy, spend, redeem, profit) of customer row i and arm a, one scalar at a time, from the formulas."""
    h, cfg, arm = world.hidden, world.config, world.catalog.arms[a]
    city = cfg.cities[world.visible.city[i]].id
    p0, basket = float(h.base_rate[i]), float(h.basket[i])
    for s in cfg.shocks:
        if s.city == city and s.start <= t < s.end and s.metric == "buy_rate":
            p0 *= s.factor
    if arm.offer is None:
        return p0, p0 * basket, 0.0, world.catalog.margin * p0 * basket
    j = [c.id for c in world.catalog.channels].index(arm.channel.id)
    recent = sum(1 for x in world.contacts.times[i] if t - cfg.fatigue.window_hours <= x < t)
    delivered = (
        world.customers[f"reach_{arm.channel.id}"].iloc[i] and world.customers[f"consent_{arm.channel.id}"].iloc[i]
    )
    expo = float(delivered) * float(h.open_rate[i, j]) * math.exp(-float(h.fatigue_rate[i]) * recent)
    v, m = arm.offer.coupon_value, arm.offer.min_spend
    usable = math.exp(-cfg.population.min_spend_aversion * max(0.0, m / basket - 1.0))
    lift = float(h.sensitivity[i]) * (1.0 - math.exp(-v / float(h.value_scale[i]))) * usable
    qf, big_m = float(h.redeem_affinity[i]) * usable, max(basket, m)
    if h.abuser[i]:
        lift, qf, big_m = 0.0, cfg.abusers.redeem_rate, basket
    buy = p0 + (1 - p0) * expo * lift
    redeem = expo * (p0 * qf + (1 - p0) * lift)
    spend = p0 * basket + expo * (p0 * qf * (big_m - basket) + (1 - p0) * lift * big_m)
    profit = world.catalog.margin * spend - arm.redeem_cost * redeem - arm.contact_cost
    return buy, spend, redeem, profit


def test_default_catalog_has_twenty_offer_arms_and_control_first():
    catalog, _ = load_world_spec()
    assert len(catalog.treatment_arms) == 20 and catalog.arm_ids[0] == "none"
    assert Catalog.from_dict(catalog.to_dict()).arm_ids == catalog.arm_ids


def test_same_seed_gives_the_same_world_and_another_seed_does_not():
    a, b, c = SimWorld.default(500, seed=3), SimWorld.default(500, seed=3), SimWorld.default(500, seed=4)
    pd.testing.assert_frame_equal(a.customers, b.customers)
    np.testing.assert_array_equal(a.truth().profit, b.truth().profit)
    pd.testing.assert_frame_equal(a.history_events(), b.history_events())
    dec = decisions_for(a, np.arange(500), np.arange(500) % 21)
    pd.testing.assert_frame_equal(a.play(dec).outcomes, b.play(dec).outcomes)
    assert not np.array_equal(a.truth().profit, c.truth().profit)


def test_truth_has_the_right_shapes_and_ranges():
    truth = world0().truth()
    shape = (N, 21)
    for arr in (truth.buy, truth.spend, truth.redeem, truth.profit, truth.eligible, truth.incr):
        assert arr.shape == shape
    assert ((truth.buy > 0) & (truth.buy < 1)).all()
    assert ((truth.redeem >= 0) & (truth.redeem <= truth.buy + 1e-6)).all()
    assert (truth.spend > 0).all() and np.isfinite(truth.profit).all()
    assert (truth.redeem[:, 0] == 0).all() and (truth.incr[:, 0] == 0).all() and truth.eligible[:, 0].all()


def test_truth_matches_a_scalar_reference_implementation():
    world = world0()
    rows = np.arange(0, N, 97)
    for t in (0.0, 31.0):
        truth = world.truth(rows, t)
        for k, i in enumerate(rows):
            for a in range(len(world.arm_ids)):
                ref = reference_truth(world, int(i), a, t)
                got = (truth.buy[k, a], truth.spend[k, a], truth.redeem[k, a], truth.profit[k, a])
                np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-5, err_msg=f"row {i} arm {a} t {t}")


def test_chunked_truth_equals_the_whole_truth():
    world = world0()
    whole = world.truth().profit
    pieces = np.vstack([t.profit for _, t in world.iter_truth(chunk_size=700)])
    np.testing.assert_array_equal(whole, pieces)


def test_oracle_is_at_least_as_good_as_every_single_arm_and_random_policy():
    world = world0()
    best = world.policy_value(world.oracle())
    for arm in world.arm_ids:
        everyone = np.full(N, world.catalog.index(arm))
        assert best >= world.policy_value(everyone) - 1e-9
        assert best >= world.policy_value(world.single_arm_policy(arm)) - 1e-9
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert best >= world.policy_value(rng.integers(0, 21, N)) - 1e-9
    assert world.policy_value(np.zeros(N, dtype=int)) == 0.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, N - 1), st.integers(0, 20)), min_size=1, max_size=40))
def test_no_policy_beats_the_oracle_and_regret_is_value_gap(pairs):
    world = world0()
    rows, arm_idx = (np.array(x) for x in zip(*pairs, strict=True))
    regret = world.regret(arm_idx, rows)
    assert regret >= -1e-9
    oracle = world.policy_value(world.oracle(rows), rows)
    assert regret == pytest.approx(oracle - world.policy_value(arm_idx, rows), abs=1e-9)


def test_regret_of_the_oracle_is_zero():
    world = world0()
    assert world.regret(world.oracle()) == 0.0


def test_scorecard_agrees_with_policy_value():
    world = world0()
    card = world.scorecard()
    assert card["oracle"] == pytest.approx(world.policy_value(world.oracle()), abs=1e-9)
    arm = card["best_single_arm"]
    assert card["best_single_arm_value"] == pytest.approx(world.policy_value(world.single_arm_policy(arm)), abs=1e-6)


def test_default_world_leaves_room_for_a_learned_policy():
    card = SimWorld.default(20_000, seed=1).scorecard()
    assert card["best_single_arm_value"] > 0.0
    assert card["oracle"] > 2.0 * card["best_single_arm_value"]
    assert 0.1 < card["oracle_share_none"] < 0.6
    assert len({a for a, v in card["single_arm_values"].items() if v > 0}) >= 2


def test_oracle_prefers_different_arms_for_different_customers():
    world = world0()
    picks = np.bincount(world.oracle(), minlength=21)
    assert (picks > 0).sum() >= 10
    channels = {world.catalog.arm(world.arm_ids[k]).channel.id for k in np.flatnonzero(picks[1:]) + 1}
    assert channels == {"sms", "push", "wechat", "email"}


def test_sampled_outcomes_converge_to_the_truth():
    world = SimWorld.default(2000, seed=11)
    rng = np.random.default_rng(5)
    n = 50_000
    rows, arms = rng.integers(0, 2000, n), rng.integers(0, 21, n)
    truth = world.truth(rows, 0.0)
    out = world.play(decisions_for(world, rows, arms), seed=9, record=False).outcomes
    i = np.arange(n)
    for col, expected in (("buy", truth.buy), ("spend", truth.spend), ("redeem", truth.redeem)):
        y = out[col].to_numpy(dtype=float)
        se = y.std() / math.sqrt(n)
        assert abs(y.mean() - expected[i, arms].mean()) < 4 * se + 1e-9, col
    profit = out["profit"].to_numpy()
    assert abs(profit.mean() - truth.profit[i, arms].mean()) < 4 * profit.std() / math.sqrt(n)


def test_emitted_outcomes_pass_the_schema_and_match_the_events():
    world = SimWorld.default(1000, seed=2)
    rows, arms = np.arange(1000), np.arange(1000) % 21
    result = world.play(decisions_for(world, rows, arms, time=5.0))
    out = validate_table(result.outcomes, "outcomes")
    assert (out["time"] >= 5.0).all() and out["unit_id"].is_unique
    ev = result.events
    assert tuple(ev.columns) == EVENT_COLUMNS and ev["time"].is_monotonic_increasing
    counts = ev["event"].value_counts()
    assert counts.get("transaction", 0) == out["buy"].sum()
    assert counts.get("offer_completed", 0) == out["redeem"].sum()
    assert counts.get("offer_received", 0) == out["delivered"].sum()
    assert counts.get("offer_viewed", 0) == out["viewed"].sum()
    assert ev.loc[ev["event"] == "offer_received", "channel"].notna().all()
    assert (ev.loc[ev["event"] != "transaction", "amount"] == 0).all()


def test_unknown_customer_or_arm_is_a_schema_error():
    world = SimWorld.default(50, seed=0)
    with pytest.raises(SchemaError, match="nobody"):
        world.play(pd.DataFrame({"customer_id": ["nobody"], "time": [0.0], "arm": ["none"]}))
    with pytest.raises(SchemaError, match="unknown arm"):
        world.play(decisions_for(world, np.array([0]), np.array([0])).assign(arm="c7@fax"))


def test_contacting_an_opted_out_customer_is_a_violation_with_no_effect():
    world = SimWorld.default(2000, seed=4)
    opted_out = np.flatnonzero(~world.customers["consent_sms"].to_numpy())
    assert opted_out.size > 0
    k = world.catalog.index("c10@sms")
    truth = world.truth(opted_out)
    assert not truth.eligible[:, k].any()
    np.testing.assert_allclose(truth.incr[:, k], -world.catalog.arm("c10@sms").contact_cost, atol=1e-5)
    np.testing.assert_array_equal(truth.buy[:, k], truth.buy[:, 0])
    assert not np.isin(world.oracle(opted_out), [world.catalog.index(f"{o}@sms") for o in ("c3", "c10")]).any()
    result = world.play(decisions_for(world, opted_out, np.full(opted_out.size, k)))
    assert (result.outcomes["violation"] == 1).all() and (result.outcomes["delivered"] == 0).all()
    assert (result.outcomes["redeem"] == 0).all()
    assert not (result.events["event"] == "offer_received").any()


def test_fatigue_lowers_the_effect_after_contacts():
    world = SimWorld.default(2000, seed=6)
    k = world.catalog.index("c10@wechat")
    before = world.truth(time=1.0)
    world.play(decisions_for(world, np.arange(2000), np.full(2000, k), time=0.0))
    after = world.truth(time=1.0)
    lift_before = before.buy[:, k] - before.buy[:, 0]
    lift_after = after.buy[:, k] - after.buy[:, 0]
    reached = before.eligible[:, k] & (lift_before > 1e-4)
    assert reached.sum() > 100
    assert (lift_after[reached] < lift_before[reached]).all()
    np.testing.assert_array_equal(lift_after[~before.eligible[:, k]], lift_before[~before.eligible[:, k]])
    later = world.truth(time=0.0 + world.config.fatigue.window_hours + 1.0)
    assert (later.buy[reached, k] - later.buy[reached, 0] > lift_after[reached]).mean() > 0.9


def test_fatigue_applies_within_one_batch_of_decisions():
    world = SimWorld.default(300, seed=6)
    reach = world.eligible()[:, world.catalog.index("c5@push")]
    rows = np.flatnonzero(reach)[:20]
    before = world.contacts.count(rows, 100.0, 168.0)
    dec = pd.concat([decisions_for(world, rows, np.full(rows.size, world.catalog.index("c5@push")), t) for t in (1, 2)])
    world.play(dec)
    np.testing.assert_array_equal(world.contacts.count(rows, 100.0, 168.0), before + 2)


def test_abusers_redeem_without_incremental_purchase():
    world = SimWorld.default(5000, seed=8)
    ab = world.hidden.abuser
    assert 0.02 < ab.mean() < 0.04
    truth = world.truth(np.flatnonzero(ab))
    np.testing.assert_allclose(truth.buy[:, 1:], truth.buy[:, :1].repeat(20, axis=1), rtol=1e-6)
    np.testing.assert_allclose(truth.spend[:, 1:], truth.spend[:, :1].repeat(20, axis=1), rtol=1e-5)
    assert (truth.redeem[:, 1:] > 0).all() and (truth.incr[:, 1:] < 0).all()
    assert (world.oracle(np.flatnonzero(ab)) == 0).all()
    rings = world.customers.loc[ab].groupby("device_id")["customer_id"].size()
    assert rings.min() >= world.config.abusers.ring_min
    rows = np.repeat(np.flatnonzero(ab), 20)
    out = world.play(decisions_for(world, rows, np.full(rows.size, world.catalog.index("c5@push")))).outcomes
    assert out["redeem"].mean() > 0.1
    assert out["buy"].mean() == pytest.approx(truth.buy[:, 0].mean(), abs=0.05)


def test_a_shock_lowers_the_city_rate_inside_its_hours_only():
    world = world0()
    shock = next(s for s in world.config.shocks if s.start >= 0)
    city = world.customers["city"].to_numpy() == shock.city
    base = world.truth(time=shock.start - 1.0).buy[:, 0]
    inside = world.truth(time=shock.start + 1.0).buy[:, 0]
    np.testing.assert_allclose(inside[city], shock.factor * base[city], rtol=1e-6)
    np.testing.assert_array_equal(inside[~city], base[~city])
    np.testing.assert_array_equal(world.truth(time=shock.end).buy[:, 0], base)


def test_history_events_are_canonical_and_before_time_zero():
    world = world0()
    ev = world.history_events()
    assert tuple(ev.columns) == EVENT_COLUMNS
    assert ev["time"].between(-world.config.history.hours, 0.0, inclusive="left").all()
    assert set(ev["event"]) == {"transaction", "offer_received", "offer_viewed", "offer_completed"}
    assert ev["customer_id"].isin(world.customers["customer_id"]).all()
    completed = ev.loc[ev["event"] == "offer_completed", ["customer_id", "time"]]
    tx = ev.loc[ev["event"] == "transaction", ["customer_id", "time"]]
    assert len(completed.merge(tx, on=["customer_id", "time"])) == len(completed)
    assert (ev.loc[ev["event"] == "offer_completed", "reward"] > 0).all()


def test_customers_table_hides_the_truth():
    cols = set(world0().customers.columns)
    assert {"city", "tier", "age", "income", "signup_time", "device_id", "payment_id", "consent_sms"} <= cols
    assert not cols & {"base_rate", "basket", "sensitivity", "abuser", "open_rate", "fatigue_rate"}


def test_make_experiment_is_a_valid_randomized_experiment():
    exp = make_experiment(2000, seed=1)
    world = exp.meta["world"]
    assert exp.main_outcome == "buy" and (exp.assignments["group"] == "experiment").all()
    assert list(exp.features.index) == list(exp.assignments["unit_id"])
    n_eligible = world.eligible().sum(axis=1)
    np.testing.assert_allclose(exp.assignments["propensity"], 1.0 / n_eligible)
    assert exp.assignments["arm"].nunique() == 21
    assert not exp.features.columns.isin(["sensitivity", "abuser", "base_rate"]).any()
    assert (exp.meta["events"]["time"] < 0).any() and (exp.meta["events"]["time"] >= 0).any()
    again = make_experiment(2000, seed=1)
    pd.testing.assert_frame_equal(exp.outcomes, again.outcomes)


def test_make_experiment_with_given_propensities():
    exp = make_experiment(1500, seed=2, propensities={"none": 0.5, "c10@sms": 0.5})
    assert set(exp.assignments["arm"]) == {"none", "c10@sms"}
    sms_ok = exp.meta["world"].eligible()[:, exp.catalog.index("c10@sms")]
    np.testing.assert_allclose(exp.assignments["propensity"], np.where(sms_ok, 0.5, 1.0))
    with pytest.raises(ConfigError, match="unknown arms"):
        arm_probabilities(exp.meta["world"], {"c99@sms": 1.0})
    with pytest.raises(ConfigError, match="no eligible arm"):
        arm_probabilities(exp.meta["world"], {"c10@sms": 1.0})


def test_world_config_rejects_unknown_keys_and_bad_shocks():
    with pytest.raises(ConfigError, match="sensitivty"):
        WorldConfig.from_dict({"population": {"sensitivty": 1.0}})
    with pytest.raises(ConfigError, match="atlantis"):
        WorldConfig.from_dict({"cities": [{"id": "x"}], "shocks": [{"city": "atlantis", "start": 0, "end": 1}]})
    catalog, _ = load_world_spec()
    with pytest.raises(ConfigError, match="unknown sections"):
        spec_to_world({"catalog": catalog.to_dict(), "wrold": {}})


def test_a_catalog_without_channels_works_and_offers_always_arrive():
    spec = {
        "catalog": {"name": "tiny", "offers": [{"id": "c5", "coupon_value": 5, "min_spend": 20}]},
        "world": {"cities": [{"id": "one"}], "abusers": {"share": 0.0}},
    }
    catalog, config = spec_to_world(spec)
    world = SimWorld(catalog, config, 400, seed=0)
    truth = world.truth()
    assert truth.profit.shape == (400, 2) and truth.eligible.all()
    assert ((truth.buy[:, 1] >= truth.buy[:, 0]) & (truth.redeem[:, 1] > 0)).all()
    out = world.play(decisions_for(world, np.arange(400), np.ones(400, dtype=int))).outcomes
    assert (out["delivered"] == 1).all() and (out["violation"] == 0).all()
