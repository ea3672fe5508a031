"""Exact calibration values of the world against brute-force references over its single-arm policies."""

from __future__ import annotations

import numpy as np
import pytest

from offerlift.simworld import calibration as exact
from offerlift.simworld.experiment import make_experiment


@pytest.fixture(scope="module")
def exp():
    return make_experiment(3000, seed=21)


def test_exact_stats_against_every_single_arm_policy(exp):
    world, rows, _ = exact.world_of(exp)
    values = {a: world.policy_value(world.single_arm_policy(a, rows), rows) for a in exp.catalog.treatment_arms}
    best = max(values, key=values.get)
    s = exact.exact_stats(exp, profit_sd=2.0)
    assert s["best_arm"] == best and s["best_arm_value"] == pytest.approx(values[best], rel=1e-5)
    assert s["oracle_value"] >= s["best_arm_value"] - 1e-9
    assert s["signal"] == pytest.approx(values[best] / 2.0, rel=1e-5)
    # the no-offer profit: margin x the true spend without an offer (no coupon, no contact)
    spend = world.truth(rows).spend[:, 0].astype(float).mean()
    assert s["control_value"] == pytest.approx(exp.catalog.margin * spend, rel=1e-5)
    assert s["oracle_share"] == pytest.approx(s["oracle_value"] / s["control_value"])
    assert "signal" not in exact.exact_stats(exp)


def test_single_arm_and_policy_values_agree(exp):
    units = exp.units()
    arm = exp.catalog.treatment_arms[0]
    k = exp.catalog.index(arm)
    world, rows, _ = exact.world_of(exp)
    policy = units[["customer_id"]].assign(arm_index=np.where(world.eligible(rows)[:, k], k, 0))
    assert exact.policy_value(exp, policy) == pytest.approx(exact.single_arm_value(exp, arm, units["customer_id"]))


def test_feature_ceiling_is_a_valid_policy_below_the_oracle(exp):
    train = make_experiment(3000, seed=22)
    ceil = exact.feature_ceiling(train, exp, rounds=50)
    world, rows, _ = exact.world_of(exp)
    assert ceil["value"] <= world.policy_value(world.oracle(rows), rows) + 1e-9
    assert world.eligible(rows)[np.arange(rows.size), ceil["arms"]].all()
    assert 0.0 <= ceil["share_none"] <= 1.0 and ceil["train_units"] == 3000
