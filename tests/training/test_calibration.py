"""Calibration statistics: simple references (arm means, the policy-value module), known truth, customer clusters."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from offerlift.features.byo import experiment_from_frame
from offerlift.features.errors import ConfigError
from offerlift.simworld.experiment import make_experiment
from offerlift.training.calibration import (
    ProfitRule,
    apply_rule,
    calibration_learner,
    learner_gain,
    profit_rule,
    sample_units,
    signal_stats,
    unit_profit,
)
from offerlift.training.policy_value import compare_policies

MEANS = {"none": 10.0, "a": 10.6, "b": 10.2}  # true mean spend per arm


def frame(n: int, seed: int, effect: float = 0.0) -> pd.DataFrame:
    """A 3-arm RCT (1/3 each): spend = arm mean + N(0, 4); with `effect`, arm a adds effect * x and b subtracts it."""
    rng = np.random.default_rng(seed)
    arm = rng.choice(list(MEANS), n)
    x = rng.normal(size=n)
    mean = np.array([MEANS[a] for a in arm]) + effect * x * ((arm == "a").astype(float) - (arm == "b"))
    return pd.DataFrame({"arm": arm, "spend": mean + rng.normal(0, 4, n), "x": x, "noise": rng.normal(size=n)})


def experiment(n: int, seed: int, effect: float = 0.0):
    return experiment_from_frame(frame(n, seed, effect), "arm", "none", "spend", features=["x", "noise"])


RULE = ProfitRule(margin=1.0, contact_cost=0.0)


def test_signal_equals_arm_means_when_propensities_are_constant():
    exp = experiment(6000, 0)
    units = exp.units()
    s = signal_stats(exp, RULE, n_boot=50)
    means = units.groupby("arm")["spend"].mean()
    best = (means - means["none"]).drop("none").idxmax()
    assert s["best_arm"] == best
    assert s["best_arm_value"]["value"] == pytest.approx(means[best] - means["none"])
    assert s["control_value"]["value"] == pytest.approx(means["none"])
    assert s["profit_sd"]["value"] == pytest.approx(units["spend"].std())
    assert s["signal"]["value"] == pytest.approx((means[best] - means["none"]) / units["spend"].std())
    assert s["best_arm_share"]["value"] == pytest.approx((means[best] - means["none"]) / means["none"])


def test_signal_equals_the_policy_value_modules_snips_on_the_simulated_world():
    """Propensities vary by customer there (uniform over the arms each can receive): the single-arm policies'
    SNIPS increments must match `compare_policies` (an independent implementation)."""
    exp = make_experiment(3000, seed=4)
    units = exp.units()
    profit = unit_profit(exp, profit_rule("simulated"))
    from offerlift.training.evaluate import allowed_mask

    ref = compare_policies(
        {"none": np.full(len(units), "none", dtype=object)},
        units["arm"].to_numpy(),
        profit,
        units["propensity"].to_numpy(float),
        estimator="snips",
        arm_ids=exp.catalog.arm_ids,
        n_boot=2,
        allowed=allowed_mask(exp, units.index),
    )
    best = ref[ref["policy"].str.startswith("always:") & (ref["policy"] != "always:none")].iloc[0]
    s = signal_stats(exp, profit_rule("simulated"), n_boot=20)
    assert "always:" + s["best_arm"] == best["policy"]
    assert s["best_arm_value"]["value"] == pytest.approx(best["vs_control"])


def test_profit_rules_follow_their_formulas():
    raw = frame(200, 1)
    raw["reward_cost"] = np.where(raw["arm"] == "none", 0.0, 2.0)
    exp = experiment_from_frame(raw, "arm", "none", "spend", features=["x"])
    exp = replace(exp, outcomes=exp.outcomes.assign(reward_cost=raw["reward_cost"].to_numpy()))
    treated = (exp.units()["arm"] != "none").to_numpy()
    spend = exp.units()["spend"].to_numpy()
    assert unit_profit(exp, ProfitRule(margin=0.3, contact_cost=0.1)) == pytest.approx(0.3 * spend - 0.1 * treated)
    got = unit_profit(exp, ProfitRule(margin=0.3, coupon_cost="reward_cost"))
    assert got == pytest.approx(0.3 * spend - 2.0 * treated)
    with pytest.raises(ConfigError, match="missing_col"):
        unit_profit(exp, ProfitRule(coupon_cost="missing_col"))
    with pytest.raises(ConfigError, match="known sources"):
        profit_rule("nope")


def test_apply_rule_puts_the_rules_margin_and_contact_cost_in_the_catalog():
    exp = apply_rule(experiment(300, 2), ProfitRule(margin=0.3, contact_cost=0.1))
    assert exp.catalog.margin == 0.3
    assert {a.contact_cost for a in exp.catalog.arms if not a.is_control} == {0.1}


def test_customer_clusters_widen_the_interval():
    """Every unit twice under the same customer: the same point, and about the interval of the original data
    (resampling customers); the same duplicates as separate customers would narrow it by about 1/sqrt(2)."""
    exp = experiment(3000, 3)

    def doubled(same_customer: bool):
        a = pd.concat([exp.assignments, exp.assignments.assign(unit_id=exp.assignments["unit_id"] + "b")])
        o = pd.concat([exp.outcomes, exp.outcomes.assign(unit_id=exp.outcomes["unit_id"] + "b")])
        f = pd.concat([exp.features, exp.features.set_axis(exp.features.index + "b")])
        if not same_customer:
            a["customer_id"] = a["unit_id"].to_numpy()
            o["customer_id"] = o["unit_id"].to_numpy()
        customers = pd.DataFrame({"customer_id": a["customer_id"].unique()})
        return replace(exp, assignments=a, outcomes=o, features=f, customers=customers)

    def width(e) -> tuple[float, float]:
        s = signal_stats(e, RULE, n_boot=400, seed=1)["best_arm_value"]
        return s["value"], s["high"] - s["low"]

    (p0, w0), (p1, w1), (p2, w2) = width(exp), width(doubled(True)), width(doubled(False))
    assert p1 == pytest.approx(p0) and p2 == pytest.approx(p0)
    assert 0.85 < w1 / w0 < 1.15
    assert 0.6 < w2 / w0 < 0.8


def test_signal_interval_covers_the_true_increment():
    """Known truth: arm a's true increment is 0.6 (clearly the best arm); the 95% CI covers it in most draws."""
    covered = sum(
        lo <= 0.6 <= hi
        for s in (signal_stats(experiment(3000, 100 + k), RULE, n_boot=200, seed=k) for k in range(30))
        for lo, hi in [(s["best_arm_value"]["low"], s["best_arm_value"]["high"])]
    )
    assert covered >= 25  # nominal 28.5 of 30


def test_sample_units_keeps_whole_customers():
    exp = make_experiment(800, seed=1)
    a = exp.assignments
    twice = replace(
        exp,
        assignments=pd.concat([a, a.assign(unit_id=a["unit_id"] + "b", time=1.0)]),
        outcomes=pd.concat([exp.outcomes, exp.outcomes.assign(unit_id=exp.outcomes["unit_id"] + "b")]),
        features=pd.concat([exp.features, exp.features.set_axis(exp.features.index + "b")]),
    )
    sub = sample_units(twice, 501, seed=0)
    counts = sub.assignments["customer_id"].value_counts()
    assert len(sub.assignments) <= 501 and (counts == 2).all() and len(sub.features) == len(sub.assignments)
    with pytest.raises(ConfigError, match="at least 100"):
        sample_units(twice, 50)


def test_learner_gain_is_held_out_and_finds_real_heterogeneity():
    """No heterogeneity: the learned policy cannot beat the best arm beyond noise (in-sample scoring would);
    strong heterogeneity (a helps where x > 0, b where x < 0): the gain is positive with its CI above 0."""
    flat = learner_gain(experiment(4000, 5), RULE, 4000, calibration_learner(n_folds=3), n_boot=200)
    assert flat["gain"]["low"] < 0 < flat["gain"]["high"] or flat["gain"]["high"] < 0
    assert len(flat["policy"]) == flat["units"] == 4000
    strong = learner_gain(experiment(4000, 6, effect=3.0), RULE, 4000, calibration_learner(n_folds=3), n_boot=200)
    assert strong["gain"]["low"] > 0
    assert strong["gain_per_sd"]["value"] == pytest.approx(strong["gain"]["value"] / strong["profit_sd"])
    with pytest.raises(ConfigError, match="held-out"):
        learner_gain(experiment(300, 7), RULE, 300, calibration_learner(n_folds=0))
