"""The training job: held-out metrics, an export that predicts exactly like the learners, a registered model."""

from __future__ import annotations

import numpy as np
import pytest

from features.errors import ConfigError, NotFittedError
from features.model_io import load_model
from features.registry import CHALLENGER, CHAMPION, alias_version, resolve_tracking_uri
from features.scoring import ArmScorer
from features.simworld import make_experiment
from training.export import check_export, outcome_spec, scorer_spec
from training.learners import make_learner
from training.train import TrainConfig, fit_spec, outcome_plan, train_model

FAST = {"num_iterations": 15, "num_leaves": 7, "min_data_in_leaf": 20}


@pytest.fixture(scope="module")
def exp():
    return make_experiment(4000, seed=3)


@pytest.mark.parametrize("learner", ["s", "t", "x", "dr"])
def test_export_predicts_exactly_like_the_learners(exp, learner):
    units = exp.units()
    X = exp.features.loc[units.index]
    spec = fit_spec(
        exp,
        TrainConfig(learner=learner, params=FAST),
        X,
        units["arm"].to_numpy(),
        units,
        units["propensity"].to_numpy(float),
    )
    learners = {}
    names, _ = outcome_plan(exp)
    for name in names:
        kw = {"arms": exp.catalog.arm_ids, "params": FAST, "random_state": 0}
        if learner == "s":
            kw["arm_values"] = {a.id: a.coupon_value for a in exp.catalog.arms}
        learners[name] = make_learner(learner, **kw).fit(X, units["arm"], units[name], units["propensity"])
    assert check_export(spec, learners, X.iloc[:500]) <= 1e-9


def test_outcome_plan_models_value_redeem_and_buy(exp):
    names, value = outcome_plan(exp)
    assert value == "spend" and set(names) == {"spend", "redeem", "buy"}


def test_unfitted_learner_cannot_be_exported(exp):
    with pytest.raises(NotFittedError, match="unfitted"):
        outcome_spec(make_learner("t"))
    with pytest.raises(NotFittedError):
        scorer_spec({"spend": make_learner("t")}, exp.catalog, "spend")


def test_train_registers_challenger_and_first_champion(exp, tmp_path):
    registry = resolve_tracking_uri(root=tmp_path / "mlruns")
    config = TrainConfig(learner="t", params=FAST, n_folds=2, n_boot=50)
    first = train_model(exp, config, registry)
    assert alias_version(registry, CHAMPION) == first.version == alias_version(registry, CHALLENGER)
    second = train_model(exp, config, registry)
    assert alias_version(registry, CHALLENGER) == second.version != first.version
    assert alias_version(registry, CHAMPION) == first.version
    scorer = load_model(second.model_uri)
    assert isinstance(scorer, ArmScorer) and scorer.arms == exp.catalog.arm_ids
    for key in ("ips_vs_control", "ips_vs_best_arm_ci_low", "dr_value", "fit_seconds"):
        assert np.isfinite(first.metrics[key]), key
    assert scorer.spec["metadata"]["data_fingerprint"] == first.spec["metadata"]["data_fingerprint"]


def test_held_out_predictions_come_from_other_folds(exp):
    from training.evaluate import customer_folds

    folds = customer_folds(exp.assignments["customer_id"].to_numpy(), 3, 0)
    assert set(np.unique(folds)) == {0, 1, 2}
    again = customer_folds(np.repeat(["a", "b", "c", "d"], 3), 2, 0)
    assert all(len(set(again[i * 3 : i * 3 + 3])) == 1 for i in range(4))


def test_bad_config_is_named():
    with pytest.raises(ConfigError, match="'q'"):
        TrainConfig(learner="q")
    with pytest.raises(ConfigError, match="n_folds"):
        TrainConfig(n_folds=1)


def test_evaluation_figures_cover_the_most_frequent_arms(exp):
    from training.report import evaluation_figures

    result = train_model(exp, TrainConfig(learner="t", params=FAST, n_folds=2, n_boot=20))
    figs = evaluation_figures(exp, result.held_out, max_arms=2, n_boot=10)
    assert len(figs) == 6
    assert {k.split("_")[0] for k in figs} == {"qini", "uplift", "calibration"}
    assert all(f.axes for f in figs.values())
