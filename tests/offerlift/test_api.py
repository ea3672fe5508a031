"""The notebook API: each step is one call, and its tables agree with simple reference computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import offerlift.api as ol
from offerlift.features.errors import ConfigError
from offerlift.models.scoring import ArmScorer
from offerlift.training.evaluate import greedy_arms
from offerlift.training.train import SIMULATED_PARAMS, TrainResult

FAST = {"num_iterations": 20, "num_leaves": 7, "min_data_in_leaf": 20}


@pytest.fixture(scope="module")
def sim():
    return ol.load("simulated", n_customers=3000, seed=4)


@pytest.fixture(scope="module")
def res(sim):
    return ol.train(sim, learner="s", n_folds=2, params=FAST, n_boot=50, register=False)


def test_train_returns_a_train_result_that_remembers_its_experiment(res, sim):
    assert isinstance(res, TrainResult) and isinstance(res, ol.Trained)
    assert res.experiment is sim and res.config.learner == "s"
    assert res.model_uri is None and res.held_out is not None
    assert "ips_vs_control" in res.metrics


def test_train_passes_options_to_the_config_and_names_unknown_ones(sim):
    small = ol.sample(sim, 1500)
    res = ol.train(small, learner="s", n_folds=0, params=FAST, register=False, structured_arms=True)
    assert res.config.structured_arms and res.held_out is None
    with pytest.raises(ConfigError, match="'colour'"):
        ol.train(small, learner="s", register=False, colour="red")


def test_load_sets_the_main_outcome_and_names_an_unknown_one():
    assert ol.load("simulated", n_customers=300, outcome="visit").main_outcome == "visit"
    with pytest.raises(ConfigError, match="'clicks'"):
        ol.load("simulated", n_customers=300, outcome="clicks")


def test_sample_keeps_whole_customers_and_consistent_tables(sim):
    small = ol.sample(sim, 1000, seed=1)
    assert 900 <= len(small.assignments) <= 1100
    ids = set(small.assignments["unit_id"])
    assert set(small.outcomes["unit_id"]) == ids and set(small.features.index) == ids
    chosen = set(small.assignments["customer_id"])
    full = sim.assignments[sim.assignments["customer_id"].isin(chosen)]
    assert len(full) == len(small.assignments)
    assert ol.sample(sim, None) is sim
    with pytest.raises(ConfigError):
        ol.sample(sim, 10)


def test_small_switch_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ol.SMALL_ENV, "1")
    cfg = ol.setup_notebook(outputs=tmp_path / "out")
    assert cfg.small and cfg.rows and cfg.params and cfg.n_folds == 2
    assert cfg.outputs.is_dir()
    monkeypatch.setenv(ol.SMALL_ENV, "0")
    assert not ol.small_data()
    full = ol.setup_notebook(outputs=tmp_path / "out")
    assert not full.small and full.rows is None and full.params is None


def test_policy_table_model_row_matches_the_training_report(res):
    table = ol.policy_table(res, n_boot=50)
    arms = res.experiment.catalog.arm_ids
    assert set(table["policy"]) == {"model", *(f"always:{a}" for a in arms)}
    model = table.set_index("policy").loc["model"]
    trained = res.policy[(res.policy["policy"] == "model") & (res.policy["estimator"] == "ips")].iloc[0]
    assert model["value"] == pytest.approx(trained["value"])
    assert table.set_index("policy").loc["always:none", "vs_control"] == 0.0
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()


def test_recommendations_are_the_greedy_allowed_arms(res):
    recs = ol.recommendations(res)
    held, arms = res.held_out, np.asarray(res.experiment.catalog.arm_ids, dtype=object)
    assert (recs["recommended_arm"].to_numpy() == arms[greedy_arms(held.incr, held.allowed)]).all()
    assert (recs["expected_incremental_profit"] >= 0).all()
    assert list(recs.index) == list(res.experiment.units().index)


def _reference_uplift(res, arm):
    """Weighted mean profit of the arm minus that of the control, weights 1 / propensity (by hand)."""
    from offerlift.training.evaluate import realized_profit

    units = res.experiment.units()
    profit = realized_profit(res.experiment, "spend")
    w = 1 / units["propensity"].to_numpy()

    def mean(a):
        m = (units["arm"] == a).to_numpy()
        return np.average(profit[m], weights=w[m])

    return mean(arm) - mean(res.experiment.catalog.control_arm)


def test_uplift_by_arm_matches_a_reference_computation(res):
    table = ol.uplift_by_arm(res).set_index("arm")
    for arm in table.index[:4]:
        assert table.loc[arm, "uplift"] == pytest.approx(_reference_uplift(res, arm))
    assert (table["ci_low"] < table["uplift"]).all() and (table["uplift"] < table["ci_high"]).all()


def test_best_offer_by_segment_is_the_argmax_of_the_segment_uplifts(res):
    by_seg = ol.uplift_by_arm(res, by="tier")
    best = ol.best_offer_by_segment(res, by="tier").set_index("tier")
    for seg, rows in by_seg.groupby("segment"):
        assert best.loc[seg, "best_arm_observed"] == rows.loc[rows["uplift"].idxmax(), "arm"]
    assert best["units_in_segment"].sum() == len(res.experiment.assignments)
    with pytest.raises(ConfigError, match="'nope'"):
        ol.uplift_by_arm(res, by="nope")


def test_budget_allocation_stays_within_the_budget_and_on_the_curve(res):
    curve = ol.budget_curve(res)
    assert curve["price"].iloc[0] == 0 and curve["spend"].iloc[0] == curve["spend"].max()
    budget = 0.4 * curve["spend"].max()
    alloc = ol.allocate_budget(res, budget)
    assert alloc.spend <= budget + 1e-9
    assert alloc.value <= curve["incremental_profit"].max() + 1e-9


def test_score_of_a_result_equals_the_scorer(res, sim):
    frame = sim.features.head(50)
    scored = ol.score(res, frame)
    scorer = ArmScorer(res.spec)
    incr = scorer.incremental_profit(scorer.features.encode(frame))
    assert np.allclose(scored["uplift_" + scorer.arms[1]].to_numpy(), incr[:, 1])
    assert list(scored.index) == list(frame.index)


def test_register_then_score_by_uri_gives_the_same_scores(res, sim, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    copy = ol.Trained(**{k: getattr(res, k) for k in res.__dataclass_fields__})
    ol.register(copy, tracking_uri=uri)
    assert copy.model_uri.startswith("models:/") and res.model_uri is None
    frame = sim.features.head(20)
    pd.testing.assert_frame_equal(ol.score(copy.model_uri, frame, tracking_uri=uri), ol.score(res, frame))


def test_compare_learners_gives_one_row_per_learner_and_estimator(sim):
    table = ol.compare_learners(sim, ["s", "t"], n_folds=2, params=FAST, n_boot=20)
    assert list(table["learner"]) == ["s"] * 3 + ["t"] * 3
    assert set(table["estimator"]) == {"ips", "snips", "dr"}
    assert {"vs_control_ci_low", "vs_best_arm", "qini_auc_mean", "fit_seconds"} <= set(table.columns)


def test_run_loop_passes_sizes_and_model_settings(monkeypatch, tmp_path):
    seen = {}

    def fake(cfg, tracking_uri=None, progress=None):
        seen["cfg"] = cfg
        return {"rounds": [], "seconds": 0.0, "report": "r.html"}

    monkeypatch.setattr("offerlift.loop.run_loop", fake)
    ol.run_loop(rounds=2, customers=500, params=FAST, n_boot=30, workdir=tmp_path)
    cfg = seen["cfg"]
    assert (cfg.rounds, cfg.customers, cfg.n_boot) == (2, 500, 30)
    assert dict(cfg.train.params) == {**SIMULATED_PARAMS, **FAST}
    ol.loop(rounds=1, customers=400, learner="t", workdir=tmp_path)
    assert seen["cfg"].rounds == 1 and seen["cfg"].train.learner == "t" and dict(seen["cfg"].train.params) == {}
    ol.loop(rounds=1, customers=400, world="low-signal", workdir=tmp_path)
    assert seen["cfg"].world == "low-signal"


def test_loop_table_splits_the_ci():
    result = {"rounds": [{"round": 0, "policy_value": 0.1, "oracle_value": 0.3, "ab_lift": 0.2,
                          "ab_lift_ci": [-0.1, 0.5], "true_lift": 0.15, "promoted": False}]}  # fmt: skip
    row = ol.loop_table(result).iloc[0]
    assert (row["ab_ci_low"], row["ab_ci_high"]) == (-0.1, 0.5)


def test_simulated_campaign_report_has_the_holdout_and_the_true_lift(tmp_path):
    campaign = ol.simulate_campaign(customers=1500, holdout=0.2, seed=3)
    t = campaign.table
    assert (t.loc[t["grp"] == "holdout", "arm"] == "none").all()
    assert abs((t["grp"] == "holdout").mean() - 0.2) < 0.05
    treated = t["grp"] != "holdout"
    assert campaign.true_lift == pytest.approx(t.loc[treated, "true_incremental_profit"].mean())
    report = ol.ab_report(campaign, out=tmp_path / "ab")
    assert (tmp_path / "ab" / "ab_report.html").exists() and "lift_cuped" in report
    table = ol.ab_table(report)
    assert list(table["group"][:2]) == ["holdout", "all treated"]
    assert table["customers"].iloc[0] + table["customers"].iloc[1] == 1500
    with pytest.raises(ConfigError):
        ol.ab_report(t)


def test_simulated_campaign_with_a_model_sends_its_greedy_arms(sim):
    model = ol.train(sim, learner="s", n_folds=0, params=FAST, register=False)
    campaign = ol.simulate_campaign(customers=800, holdout=0.1, model=model, seed=5)
    assert set(campaign.table["arm"]) <= set(sim.catalog.arm_ids)


def test_a_notebook_in_the_repository_keeps_its_runs_out_of_notebooks(tmp_path, monkeypatch):
    from offerlift.models.registry import REPO_ROOT, resolve_tracking_uri

    monkeypatch.setenv("OFFERLIFT_HOME", "")  # unset, and restored after the test (setup_notebook sets it)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.setenv("OFFERLIFT_OUTPUTS", str(tmp_path))
    monkeypatch.chdir(REPO_ROOT / "notebooks")
    ol.setup_notebook(small=True)
    assert resolve_tracking_uri().tracking_uri == f"sqlite:///{REPO_ROOT.resolve() / 'mlruns' / 'mlflow.db'}"
