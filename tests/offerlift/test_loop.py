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
            "best_single_arm_value",
            "ceiling_value",
            "share_of_ceiling",
            "share_of_best_single_arm",
        ):
            assert key in r, key
        assert r["oracle_value"] > 0 and np.isfinite(r["policy_value"])
        assert isinstance(r["promoted"], bool)
        assert r["policy_value"] < r["oracle_value"] and r["best_single_arm_value"] < r["oracle_value"]
        assert 0 < r["ceiling_value"] <= r["ceiling_oracle_value"]
        assert r["share_of_ceiling"] == pytest.approx(r["policy_value"] / r["ceiling_value"])
        assert r["best_single_arm"] in ("c3@sms", "c3@push", "c3@wechat", "c3@email", "c5@sms", "c5@push",
                                        "c5@wechat", "c5@email", "c10@sms", "c10@push", "c10@wechat", "c10@email",
                                        "c20@sms", "c20@push", "c20@wechat", "c20@email", "c40@sms", "c40@push",
                                        "c40@wechat", "c40@email")  # fmt: skip


def test_the_best_single_arm_is_the_best_of_the_single_arm_policies(loop_run):
    """Checked against the world's exact values of every single-arm policy, one arm at a time."""
    from offerlift.simworld.world import SimWorld

    result, _, _ = loop_run
    world = SimWorld.default(n_customers=2500, seed=3)  # the loop's world before any decision: round 0's truth
    values = {a: world.policy_value(world.single_arm_policy(a)) for a in world.catalog.treatment_arms}
    best = max(values, key=values.get)
    r0 = result["rounds"][0]
    assert r0["best_single_arm"] == best and r0["best_single_arm_value"] == pytest.approx(values[best])


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


def test_every_round_trains_a_candidate_and_screens_it_when_no_test_runs(loop_run):
    result, _, _ = loop_run
    first = result["rounds"][0]
    assert first["challenger_version"] is None and first["promotion_evidence"] == {}  # nothing to test yet
    screen = first["screen"]
    assert screen["ci"][0] <= screen["diff"] <= screen["ci"][1] and screen["units"] > 0
    for r in result["rounds"]:
        assert r["candidate_version"] not in (None, r["model_version"])
        assert r["train_units"] > 0


def test_round_hook_sees_the_rounds_units_with_features(loop_run):
    result, _, _ = loop_run
    for r in result["rounds"]:
        assert r["hook_units"] == 2500 and r["hook_has_features"]
        assert r["hook_time"] == r["round"] * 168.0


@pytest.fixture(scope="module")
def forced_run(tmp_path_factory):
    """A loop whose screen lets every candidate through and whose test promotes at the first look."""
    import offerlift.loop as loop_mod

    work = tmp_path_factory.mktemp("forced")
    uri = resolve_tracking_uri(root=work / "mlruns").tracking_uri
    real = loop_mod.judge

    def lenient(*args, **kwargs):
        evidence = real(*args, **kwargs)
        return {**evidence, "ci_high": abs(evidence["ci_high"]) + 1.0}

    cfg = LoopConfig(
        rounds=3,
        customers=3000,
        seed=4,
        workdir=work,
        min_gain=-1e9,  # promote at the first look: the mechanics of a promotion
        ceiling_sample=0,
        train=TrainConfig(learner="s", n_folds=0, params=FAST),
    )
    mp = pytest.MonkeyPatch()
    mp.setattr(loop_mod, "judge", lenient)
    try:
        result = run_loop(cfg, tracking_uri=uri)
    finally:
        mp.undo()
    return result, work


def test_a_screened_candidate_gets_its_share_and_a_promoted_one_serves_next(forced_run):
    result, work = forced_run
    first, second, third = result["rounds"]
    assert first["screen"]["passed"] and second["challenger_version"] == first["candidate_version"]
    assert second["promoted"] and third["model_version"] == second["challenger_version"]
    assert third["challenger_version"] == second["candidate_version"]
    rows = pd.DataFrame(DecisionLog(f"sqlite:///{work / 'decisions.db'}").read())
    r1 = rows[(rows["ts"] >= 168 * 3600) & (rows["ts"] < 2 * 168 * 3600)]
    by = r1[r1["grp"] != "holdout"].groupby("policy").size()
    assert by["challenger"] / by.sum() == pytest.approx(0.5, abs=0.05)
    assert (r1.loc[r1["policy"] == "challenger", "model_version"] == second["challenger_version"]).all()
    assert r1["challenger_arm"].notna().all() and r1["champion_arm"].notna().all()
    # the random champion explores everything; the challenger exploits 90% of its decisions
    champ = r1[(r1["policy"] == "champion") & (r1["grp"] != "holdout")]
    chall = r1[r1["policy"] == "challenger"]
    assert (champ["grp"] == "explore").all()
    assert (chall["grp"] == "exploit").mean() == pytest.approx(0.9, abs=0.05)
    assert np.isfinite(second["true_diff"]) and np.isfinite(second["challenger_greedy_value"])
    ev = second["promotion_evidence"]
    assert ev["verdict"] == "promote" and ev["looks"] == 1 and ev["ci"][0] <= ev["diff"] <= ev["ci"][1]
    assert 0 < ev["units_differ"] <= ev["units"] == len(r1) - (r1["grp"] == "holdout").sum()


def test_the_verdict_line_names_the_promotion_and_the_floors(forced_run):
    result, _ = forced_run
    second, last = result["rounds"][1], result["rounds"][-1]
    assert result["verdict"].startswith(f"round 1: challenger v{second['challenger_version']} promoted")
    assert f"{last['policy_value']:+.4f}" in result["verdict"] and last["best_single_arm"] in result["verdict"]
