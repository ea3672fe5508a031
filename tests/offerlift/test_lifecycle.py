"""The feedback loop on a decision log, through the API: outcomes from a file, the join, the A/B report,
off-policy evaluation, retraining, promotion through the gate, a manual promotion and a rollback; every step run
twice changes nothing the second time, and the estimates cover the exact values of the outcome model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerlift import feedback, lifecycle, promotion
from offerlift.features.errors import ModelError
from offerlift.feedback import open_log
from offerlift.logged_data import load_units
from offerlift.loop import random_policy_spec
from offerlift.models.registry import CHALLENGER, CHAMPION, alias_version, set_alias
from offerlift.models.scoring import ArmScorer, FeatureSpec
from tests.offerlift.feedback_world import FAST, HOUR, T0, SimLog, expected_profit, synthetic_events

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> SimLog:
    return SimLog(tmp_path_factory.mktemp("lifecycle"), customers=6000, seed=0)


def _runs(sim: SimLog) -> int:
    import mlflow

    mlflow.set_tracking_uri(sim.registry.tracking_uri)
    return len(mlflow.search_runs(experiment_names=[sim.registry.experiment], output_format="list"))


def test_the_loop_on_the_log_end_to_end(sim, tmp_path):
    cfg = sim.config
    spec = random_policy_spec(sim.world.catalog, FeatureSpec.from_frame(sim.features(0.0)))
    v1 = sim.register(spec)
    set_alias(sim.registry, CHAMPION, v1)
    decisions = sim.decide(ArmScorer(spec), v1, 0.0, explore=1.0, rng_seed=1)
    feats = sim.features(0.0).loc[decisions["customer_id"]]
    path = tmp_path / "outcomes.csv"
    synthetic_events(decisions, feats, sim.world.catalog, seed=1).to_csv(path, index=False)

    first = feedback.record_outcomes(path, config=cfg)
    assert (first["new"], first["duplicate"], first["unattributed"], first["late"]) == (6000, 0, 0, 0)
    again = feedback.record_outcomes(path, config=cfg)
    assert (again["new"], again["duplicate"]) == (0, 6000)

    early = feedback.join_outcomes(config=cfg, as_of=T0 + 100 * HOUR)  # windows (168 h) still open
    assert (early["joined"], early["open"]) == (0, 6000)
    joined = feedback.join_outcomes(config=cfg, as_of=T0 + 200 * HOUR)
    assert (joined["joined"], joined["events_attributed"]) == (6000, 6000)
    assert feedback.join_outcomes(config=cfg, as_of=T0 + 300 * HOUR)["joined"] == 0

    runs = _runs(sim)
    report = feedback.campaign_report(config=cfg, out=tmp_path / "report")
    assert report["campaign"] == "sim" and report["decisions"] == 6000 and report["data"]["window_hours"] == 168
    assert report["multiple_comparisons"]["arms"] >= 15 and report["srm"]["ok"]
    # per arm, the estimand is the exact mean profit gain of the arm over the units weighted by its probability
    ctx = open_log(None, cfg)
    units = load_units(ctx.log, sim.world.catalog)
    ep = expected_profit(units.features, sim.world.catalog)
    truth = (units.probs * (ep - ep[:, [0]])).sum(axis=0) / units.probs.sum(axis=0)
    arms = [a for a in report["per_arm"] if a["estimated"]]
    for a in arms:
        lift = a["lift_vs_holdout"]
        assert lift["ci_low"] <= truth[sim.world.arm_ids.index(a["arm"])] <= lift["ci_high"], a["arm"]
    treated = (units.frame["grp"] != "holdout").to_numpy()
    arm_idx = pd.Index(sim.world.arm_ids).get_indexer(units.arms)
    gain = ep[np.arange(len(arm_idx)), arm_idx] - ep[:, 0]
    profit = report["totals"]["profit"]
    assert profit["ci_low"] <= gain[treated].sum() <= profit["ci_high"]
    assert "ab_report.html" in report["paths"]["html"] and report["mlflow_run_id"]
    repeat = feedback.campaign_report(config=cfg, out=tmp_path / "report")
    assert repeat["mlflow_run_id"] == report["mlflow_run_id"] and _runs(sim) == runs + 1

    trained = lifecycle.retrain(config=cfg, learner="s", params=FAST, folds=0)
    assert trained["new"] and trained["log_units"] < 6000  # the judging customers are left out
    assert alias_version(sim.registry, CHALLENGER) == trained["version"]
    retrained = lifecycle.retrain(config=cfg, learner="s", params=FAST, folds=0)
    assert (retrained["new"], retrained["version"]) == (False, trained["version"])

    ev = lifecycle.evaluate_policy(trained["version"], config=cfg, n_boot=300)
    judged = units.split("judge")
    new = lifecycle.policy_probs(lifecycle.load_version(sim.registry, trained["version"])[1], judged).argmax(axis=1)
    ep_j = expected_profit(judged.features, sim.world.catalog)
    exact = float((ep_j[np.arange(len(new)), new] - ep_j[:, 0]).mean())  # against the champion: no offer
    assert ev["decisions"] == len(judged) and exact > 0.5
    for est in ("ips", "snips", "dr"):
        d = ev["estimates"][est]["difference"]
        assert d["ci_low"] <= exact <= d["ci_high"], (est, d, exact)
    floors = {p["policy"] for p in ev["estimates"]["dr"]["policies"] if p["is_baseline"]}
    assert "always:none" in floors and len(floors) == 2
    assert lifecycle.evaluate_policy(trained["version"], config=cfg, n_boot=300)["mlflow_run_id"] == ev["mlflow_run_id"]

    verdict = promotion.promote_challenger(config=cfg)
    assert verdict["promoted"] and alias_version(sim.registry, CHAMPION) == trained["version"]
    assert verdict["verdict"]["ci_low"] > 0 and verdict["mlflow_run_id"]
    assert promotion.promote_challenger(config=cfg)["changed"] is False

    manual = promotion.promote_version(v1, reason="test: back to the random policy", config=cfg)
    assert manual["changed"] and alias_version(sim.registry, CHAMPION) == v1
    assert manual["evidence"]["difference"] < 0  # v1 is worse than the champion it replaces
    assert promotion.promote_version(v1, config=cfg)["changed"] is False
    back = promotion.rollback(config=cfg)
    assert (
        back["champion_version"] == trained["version"] and alias_version(sim.registry, CHAMPION) == trained["version"]
    )
    assert promotion.champion_history(sim.registry)[-2:] == [v1, trained["version"]]


def test_rollback_without_an_earlier_champion_says_so(tmp_path):
    sim = SimLog(tmp_path, customers=300)
    spec = random_policy_spec(sim.world.catalog, FeatureSpec.from_frame(sim.features(0.0)))
    set_alias(sim.registry, CHAMPION, sim.register(spec))
    with pytest.raises(ModelError, match="no earlier champion"):
        promotion.rollback(config=sim.config)
