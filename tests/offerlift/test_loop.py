"""The closed loop runs end to end on the service's code path and reports every round honestly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerlift.loop import LoopConfig, run_loop
from offerlift.models.registry import CHAMPION, RegistrySettings, alias_version, resolve_tracking_uri
from offerlift.serving.decision_log import DecisionLog
from offerlift.training.train import TrainConfig

FAST = {"num_iterations": 20, "num_leaves": 7, "min_data_in_leaf": 20}


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("loop")
    uri = resolve_tracking_uri(root=work / "mlruns").tracking_uri
    cfg = LoopConfig(
        rounds=2,
        customers=2500,
        seed=3,
        workdir=work,
        n_boot=100,
        train=TrainConfig(learner="s", n_folds=0, params=FAST),
        round_hook=lambda world, units, t: {
            "hook_units": len(units),
            "hook_time": t,
            "hook_has_features": "age" in units,
        },
    )
    return run_loop(cfg, tracking_uri=uri), work, uri


def test_every_round_reports_the_promised_fields(loop_run):
    result, _, _ = loop_run
    assert [r["round"] for r in result["rounds"]] == [0, 1]
    for r in result["rounds"]:
        for key in (
            "policy_value",
            "oracle_value",
            "share_of_oracle",
            "ab_lift",
            "ab_lift_ci",
            "true_lift",
            "promoted",
        ):
            assert key in r, key
        assert r["oracle_value"] > 0 and np.isfinite(r["policy_value"])
        assert r["ab_lift_ci"][0] <= r["ab_lift"] <= r["ab_lift_ci"][1]
        assert isinstance(r["promoted"], bool)


def test_round_zero_is_the_random_policy_with_logged_propensities(loop_run):
    result, work, _ = loop_run
    rows = pd.DataFrame(DecisionLog(f"sqlite:///{work / 'decisions.db'}").read())
    first = rows[rows["model_version"] == result["rounds"][0]["model_version"]]
    assert set(first["grp"]) <= {"explore", "holdout"}
    assert len(rows) == 2 * 2500
    assert first["propensity"].between(0, 1, inclusive="right").all()


def test_alias_moves_only_when_the_round_says_promoted(loop_run):
    result, _, uri = loop_run
    registry = RegistrySettings(uri, None, "offerlift-simulated")
    promoted = [r["challenger_version"] for r in result["rounds"] if r["promoted"]]
    expected = promoted[-1] if promoted else result["rounds"][0]["model_version"]
    assert alias_version(registry, CHAMPION) == expected


def test_reports_are_written(loop_run):
    result, _, _ = loop_run
    for r in result["rounds"]:
        with open(r["report"]) as fh:
            assert "A/B report" in fh.read()


def test_every_decision_gets_its_outcome_joined_exactly_once(loop_run):
    _, work, _ = loop_run
    dlog = DecisionLog(f"sqlite:///{work / 'decisions.db'}")
    decisions = pd.DataFrame(dlog.read("decisions"))
    outcomes = pd.DataFrame(dlog.read("outcomes"))
    assert len(outcomes) == len(decisions) == outcomes["decision_id"].nunique()
    assert set(outcomes["decision_id"]) == set(decisions["decision_id"])


def test_gate_evidence_says_how_much_it_could_detect(loop_run):
    result, _, _ = loop_run
    for r in result["rounds"]:
        ev = r["promotion_evidence"]
        assert ev["se"] > 0 and ev["mde"] > ev["se"] and 0 <= ev["units_differ"] <= ev["units"]
        assert ev["ci"][0] <= ev["diff"] <= ev["ci"][1]
        assert np.isfinite(r["challenger_greedy_value"]) and np.isfinite(r["champion_greedy_value_judged"])
    units = [r["promotion_evidence"]["units"] for r in result["rounds"]]
    assert units[1] > units[0]  # the gate pools every round's judged decisions


def test_round_hook_sees_the_rounds_units_with_features(loop_run):
    result, _, _ = loop_run
    for r in result["rounds"]:
        assert r["hook_units"] == 2500 and r["hook_has_features"]
        assert r["hook_time"] == r["round"] * 168.0


def test_a_promoted_challenger_serves_the_next_round_with_exploration(tmp_path):
    uri = resolve_tracking_uri(root=tmp_path / "mlruns").tracking_uri
    cfg = LoopConfig(
        rounds=3,
        customers=3000,
        seed=4,
        workdir=tmp_path,
        min_gain=-1e9,  # a gate that lets everything through: the mechanics of a promotion
        train=TrainConfig(learner="s", n_folds=0, params=FAST),
    )
    result = run_loop(cfg, tracking_uri=uri)
    first, second, third = result["rounds"]
    assert first["promoted"] and second["model_version"] == first["challenger_version"]
    assert third["model_version"] == second["challenger_version"]
    rows = pd.DataFrame(DecisionLog(f"sqlite:///{tmp_path / 'decisions.db'}").read())
    served = rows[rows["model_version"] == second["model_version"]]
    assert set(served["grp"]) == {"holdout", "explore", "exploit"}
    exploit = served[served["grp"] == "exploit"]
    assert (exploit["propensity"] > 0.8).all()  # the greedy arm: 0.9 * (0.9 + 0.1 / allowed arms)
