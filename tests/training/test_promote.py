"""The promotion gate never promotes a worse model and does promote a clearly better one."""

from __future__ import annotations

import numpy as np
import pytest

from features.eligibility import reachable_arms
from features.scoring import ArmScorer
from features.simworld import make_experiment
from training.ab_report import decision_profit
from training.promote import judge, promote_if_better
from training.train import TrainConfig, fit_spec

FAST = {"num_iterations": 40, "num_leaves": 7, "min_data_in_leaf": 30}


@pytest.fixture(scope="module")
def setup():
    train = make_experiment(6000, seed=11)
    logs = make_experiment(6000, seed=12)
    units = train.units()
    X = train.features.loc[units.index]
    good = ArmScorer(
        fit_spec(
            train,
            TrainConfig(learner="s", params=FAST),
            X,
            units["arm"].to_numpy(),
            units,
            units["propensity"].to_numpy(float),
        )
    )
    shuffled = units.copy()
    rng = np.random.default_rng(0)
    for col in ("spend", "redeem", "buy"):
        shuffled[col] = rng.permutation(shuffled[col].to_numpy())
    shuffled["spend"] = shuffled["spend"] * 0 + 500.0 * (shuffled["arm"] != "none")  # every offer looks great
    bad = ArmScorer(
        fit_spec(
            train,
            TrainConfig(learner="s", params=FAST),
            X,
            units["arm"].to_numpy(),
            shuffled,
            units["propensity"].to_numpy(float),
        )
    )
    lu = logs.units()
    feats = logs.features.loc[lu.index]
    args = (
        feats,
        lu["arm"].to_numpy(),
        decision_profit(lu.rename(columns={"group": "grp"}), logs.catalog),
        lu["propensity"].to_numpy(float),
        reachable_arms(logs.catalog, feats, len(feats)),
    )
    return good, bad, args


def test_worse_challenger_is_never_promoted(setup):
    good, bad, args = setup
    evidence = judge(good, bad, *args, n_boot=200)
    verdict = promote_if_better(None, "2", "1", evidence, len(args[0]))
    assert not verdict.promoted and verdict.diff < 0


def test_identical_challenger_is_not_promoted(setup):
    good, _, args = setup
    evidence = judge(good, good, *args, n_boot=100)
    assert evidence["diff"] == 0 and not evidence["promote"]
