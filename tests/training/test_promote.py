"""The promotion gate never promotes a worse model and does promote a clearly better one."""

from __future__ import annotations

import numpy as np
import pytest

from offerlift.features.eligibility import reachable_arms
from offerlift.features.errors import ConfigError
from offerlift.models.scoring import ArmScorer
from offerlift.simworld.world import make_experiment
from offerlift.training.ab_report import decision_profit
from offerlift.training.promote import GateConfig, greedy_policy, judge, promote_if_better
from offerlift.training.train import TrainConfig, fit_spec

FAST = {"num_iterations": 60, "num_leaves": 7, "min_data_in_leaf": 50}


class Negated(ArmScorer):
    """A model known to be worse: the good model's predicted profits negated (it picks what the good one avoids)."""

    def __init__(self, base: ArmScorer):
        self.__dict__.update(base.__dict__)

    def profit(self, preds):
        return -ArmScorer.profit(self, preds)


QUIET_UNITS = 20_000


def logged(logs, good: ArmScorer, noise: float | None) -> tuple[tuple, np.ndarray, dict[str, float]]:
    """judge's logged-data arguments, the customer ids and the exact values of the good and the negated model.

    With `noise`, the rewards are the world's true incremental profit of the logged arm (over no offer) plus
    N(0, noise^2) noise instead of the realized profit (sd about 15, most of it the level of each customer's
    spending, which no model sees): logs on which a real difference is clearly visible.
    """
    lu = logs.units()
    feats = logs.features.loc[lu.index]
    allowed = reachable_arms(logs.catalog, feats, len(feats))
    world = logs.meta["world"]
    rows = world.rows_of(lu["customer_id"])
    rewards = decision_profit(lu, logs.catalog)
    if noise is not None:
        arm_idx = np.array([logs.catalog.index(a) for a in lu["arm"]])
        true = world.truth(rows).incr[np.arange(len(rows)), arm_idx].astype(float)
        rewards = true + np.random.default_rng(0).normal(0, noise, len(rows))
    args = (feats, lu["arm"].to_numpy(), rewards, lu["propensity"].to_numpy(float), allowed)
    exact = {
        name: world.policy_value(greedy_policy(m, feats, allowed)[0], rows=rows)
        for name, m in (("good", good), ("bad", Negated(good)))
    }
    return args, lu["customer_id"].to_numpy(), exact


@pytest.fixture(scope="module")
def setup():
    train = make_experiment(10_000, seed=11)
    units = train.units()
    X = train.features.loc[units.index]
    spec = fit_spec(
        train,
        TrainConfig.for_simulated(params=FAST),
        X,
        units["arm"].to_numpy(),
        units,
        units["propensity"].to_numpy(float),
    )
    good = ArmScorer(spec)
    realistic, ids, exact = logged(make_experiment(20_000, seed=12), good, noise=None)
    low_noise, quiet_ids, quiet_exact = logged(make_experiment(QUIET_UNITS, seed=13), good, noise=1.0)
    return good, Negated(good), realistic, ids, exact, low_noise, quiet_ids, quiet_exact


def test_the_negated_model_is_truly_worse(setup):
    _, _, _, _, exact, _, _, quiet_exact = setup
    assert exact["good"] > exact["bad"] + 0.1 and quiet_exact["good"] > quiet_exact["bad"] + 0.1


def test_worse_challenger_is_never_promoted_on_realistic_logs(setup):
    good, bad, realistic, ids, *_ = setup
    for om in ("crossfit", "arm_mean"):
        evidence = judge(good, bad, *realistic, gate=GateConfig(outcome_model=om), customer_ids=ids)
        verdict = promote_if_better(None, "2", "1", evidence, len(ids))
        assert not verdict.promoted and verdict.ci_low < 0
        assert verdict.units_differ > 0.5 * len(ids) and verdict.mde > 0


def test_worse_challenger_is_rejected_clearly_when_outcomes_are_quiet(setup):
    good, bad, *_, quiet, ids, exact = setup
    evidence = judge(good, bad, *quiet, customer_ids=ids)
    assert not evidence["promote"] and evidence["ci_high"] < 0
    assert evidence["diff"] == pytest.approx(exact["bad"] - exact["good"], abs=4 * evidence["se"])


def test_clearly_better_challenger_is_promoted_and_the_alias_would_move(setup):
    good, bad, *_, quiet, ids, exact = setup
    evidence = judge(bad, good, *quiet, customer_ids=ids)
    verdict = promote_if_better(None, "3", "2", evidence, len(ids))
    assert verdict.promoted and verdict.ci_low > 0
    assert verdict.diff == pytest.approx(exact["good"] - exact["bad"], abs=4 * verdict.se)


def test_identical_challenger_is_not_promoted(setup):
    good, _, realistic, ids, *_ = setup
    evidence = judge(good, good, *realistic, customer_ids=ids)
    assert evidence["diff"] == 0 and evidence["n_differ"] == 0 and not evidence["promote"]


def test_given_champion_choices_are_used_instead_of_scoring_it(setup):
    good, bad, realistic, ids, *_ = setup
    choices = greedy_policy(bad, realistic[0], realistic[4])[0]
    a = judge(bad, good, *realistic, customer_ids=ids, gate=GateConfig(outcome_model="arm_mean"))
    b = judge(
        None, good, *realistic, customer_ids=ids, gate=GateConfig(outcome_model="arm_mean"), champion_choices=choices
    )
    assert a["diff"] == b["diff"] and a["se"] == b["se"]


def test_gate_config_names_bad_values():
    with pytest.raises(ConfigError, match="outcome_model"):
        GateConfig(outcome_model="oracle")
    with pytest.raises(ConfigError, match="level"):
        GateConfig(level=0.4)


NULL_DRAWS, NULL_UNITS = 40, 2_000
GATE_PARAMS = {**FAST, "objective": "regression", "verbosity": -1}


@pytest.fixture(scope="module")
def null_draws(setup):
    """Per fresh logged draw: the gate's evidence for the good model against no offer, and its exact gain.

    A challenger whose exact gain is exactly min_gain is "truly no better": the gate (promote when ci_low > min_gain)
    promoting it with min_gain at the exact gain is a false promotion. The exact gain is known only after judging
    (it is the value of the challenger's choices), so the rule is applied to the returned bound.
    """
    good = setup[0]
    out = []
    for s in range(NULL_DRAWS):
        logs = make_experiment(NULL_UNITS, seed=300 + s)
        lu = logs.units()
        feats = logs.features.loc[lu.index]
        allowed = reachable_arms(logs.catalog, feats, len(feats))
        args = (feats, lu["arm"].to_numpy(), decision_profit(lu, logs.catalog), lu["propensity"].to_numpy(float))
        ids = lu["customer_id"].to_numpy()
        evidence = judge(None, good, *args, allowed, gate=GateConfig(params=GATE_PARAMS), customer_ids=ids)
        world = logs.meta["world"]  # no offer's exact incremental value is 0
        out.append((evidence, world.policy_value(evidence["challenger_choices"], rows=world.rows_of(ids))))
    return out


def test_truly_no_better_challenger_is_promoted_at_most_at_the_nominal_rate(null_draws):
    assert all(e["promote"] == (e["ci_low"] > 0) for e, _ in null_draws)
    promoted = sum(e["ci_low"] > exact for e, exact in null_draws)
    # Binomial(40, 0.05): P(>= 6) = 0.014, so 5 of 40 is the most a calibrated 95% bound allows here.
    assert promoted <= 5, f"{promoted} false promotions in {NULL_DRAWS} draws at level 0.95"
    assert all(e["n_differ"] > 0.05 * NULL_UNITS for e, _ in null_draws)  # the policies differ: not a trivial 0


def test_gate_bound_is_the_difference_minus_z_times_the_se(null_draws):
    e, _ = null_draws[0]
    assert e["ci_low"] == pytest.approx(e["diff"] - 1.6448536 * e["se"])
    assert e["ci_high"] == pytest.approx(e["diff"] + 1.6448536 * e["se"])
    assert e["mde"] == pytest.approx((1.6448536 + 0.8416212) * e["se"])


def test_gate_errors_spread_about_one_cluster_standard_error(null_draws):
    z = np.array([(e["diff"] - exact) / e["se"] for e, exact in null_draws])
    # The cluster-robust se is right in scale and the estimate unbiased (40 draws: sd of z within about +-0.25).
    assert 0.7 < z.std(ddof=1) < 1.35 and abs(z.mean()) < 0.6
