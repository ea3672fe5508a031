"""Tests of the balance table (standardized mean differences, pooled SD)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from offerlift.features.balance import balance_table
from offerlift.features.errors import DataError


def small() -> tuple[pd.DataFrame, pd.Series]:
    features = pd.DataFrame(
        {
            "x": [1.0, 2.0, 3.0, 4.0, 6.0, 5.0, 5.0],
            "gender": pd.Categorical(["F", "F", "M", "M", "M", "F", None], categories=["F", "M"]),
        },
        index=[f"u{i}" for i in range(7)],
    )
    arms = pd.Series(["none", "none", "none", "a", "a", "b", "b"], index=features.index)
    return features, arms


def test_smd_matches_hand_computed_values() -> None:
    features, arms = small()
    table = balance_table(features, arms, "none")
    # x: control 1,2,3 (mean 2, var 1); a: 4,6 (mean 5, var 2) -> 3 / sqrt(1.5)
    assert table.loc["x", "a"] == pytest.approx(3 / math.sqrt(1.5))
    # b: 5,5 (mean 5, var 0) -> 3 / sqrt(0.5)
    assert table.loc["x", "b"] == pytest.approx(3 / math.sqrt(0.5))
    # gender=F: control 1,1,0 (mean 2/3, var 1/3); a: 0,0 (var 0) -> (-2/3) / sqrt(1/6)
    assert table.loc["gender=F", "a"] == pytest.approx((-2 / 3) / math.sqrt(1 / 6))
    # missing gender: only in b (0.5, var 0.5) vs control (0, var 0) -> 0.5 / sqrt(0.25)
    assert table.loc["gender=<missing>", "b"] == pytest.approx(1.0)
    assert list(table.columns) == ["a", "b", "max_abs_smd"]
    assert table.loc["x", "max_abs_smd"] == pytest.approx(3 / math.sqrt(0.5))


def test_identical_groups_give_zero_and_constant_different_groups_give_inf() -> None:
    features = pd.DataFrame({"same": [1.0, 1.0, 1.0, 1.0], "shift": [0.0, 0.0, 1.0, 1.0]})
    table = balance_table(features, pd.Series(["none", "none", "t", "t"]), "none")
    assert table.loc["same", "t"] == 0.0
    assert np.isinf(table.loc["shift", "t"]) and table.loc["shift", "t"] > 0


def test_random_assignment_is_balanced_and_a_shift_is_not() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    arms = pd.Series(rng.choice(["none", "a", "b"], n))
    features = pd.DataFrame({"z": rng.normal(size=n), "tier": rng.choice(["gold", "silver"], n)})
    features["shifted"] = features["z"] + (arms == "a").to_numpy() * 0.5
    table = balance_table(features, arms, "none")
    assert table.loc[["z", "tier=gold", "tier=silver"], "max_abs_smd"].max() < 0.1
    assert table.loc["shifted", "a"] == pytest.approx(0.5, abs=0.1)


def test_unknown_control_and_misaligned_arms_are_data_errors() -> None:
    features, arms = small()
    with pytest.raises(DataError, match="'zzz'"):
        balance_table(features, arms, "zzz")
    with pytest.raises(DataError, match="rows"):
        balance_table(features, arms.iloc[:3], "none")


def test_support_compares_an_arm_with_the_controls_that_could_have_got_it() -> None:
    """Units randomized among the arms they can get: arm "a" needs consent, so only consenting units draw it.
    Against every control the consent flag looks badly imbalanced; against the consenting controls it is not."""
    rng = np.random.default_rng(0)
    n = 20_000
    consent = rng.random(n) < 0.5
    u = rng.random(n)
    arm = np.where(consent, np.select([u < 1 / 3, u < 2 / 3], ["none", "b"], "a"), np.where(u < 0.5, "none", "b"))
    features = pd.DataFrame({"consent": consent.astype(float), "x": rng.normal(size=n)})
    support = pd.DataFrame({"none": True, "a": consent, "b": True})
    naive = balance_table(features, pd.Series(arm), "none")
    within = balance_table(features, pd.Series(arm), "none", support=support)
    assert naive.loc["consent", "a"] > 0.5
    assert within["max_abs_smd"].max() < 0.05
    assert within.loc["consent", "b"] == pytest.approx(naive.loc["consent", "b"])
