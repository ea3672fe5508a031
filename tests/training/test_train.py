"""The training job: held-out metrics, an export that predicts exactly like the learners, a registered model."""

from __future__ import annotations

import numpy as np
import pytest

from offerlift.features.errors import ConfigError, NotFittedError
from offerlift.models.model_io import load_model
from offerlift.models.registry import CHALLENGER, CHAMPION, alias_version, resolve_tracking_uri
from offerlift.models.scoring import ArmScorer
from offerlift.simworld.world import make_experiment
from offerlift.training.export import check_export, outcome_spec, scorer_spec
from offerlift.training.learners import make_learner
from offerlift.training.train import TrainConfig, fit_spec, outcome_plan, train_model

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
    from offerlift.training.evaluate import customer_folds

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
    from offerlift.training.report import evaluation_figures

    result = train_model(exp, TrainConfig(learner="t", params=FAST, n_folds=2, n_boot=20))
    figs = evaluation_figures(exp, result.held_out, max_arms=2, n_boot=10)
    assert len(figs) == 6
    assert {k.split("_")[0] for k in figs} == {"qini", "uplift", "calibration"}
    assert all(f.axes for f in figs.values())


def _fit(exp, config):
    units = exp.units()
    X = exp.features.loc[units.index]
    spec = fit_spec(exp, config, X, units["arm"].to_numpy(), units, units["propensity"].to_numpy(float), check_rows=500)
    return spec, units, X


def test_hurdle_spec_composes_spend_from_buy_and_a_basket_fitted_on_buyers(exp):
    spec, units, X = _fit(exp, TrainConfig(learner="s", params=FAST, structured_arms=True, monotone=True, hurdle=True))
    assert spec["value_from"] == ["buy", "basket"] and spec["value_outcome"] == "spend"
    assert set(spec["outcomes"]) == {"buy", "basket", "redeem"}
    scorer = ArmScorer(spec)
    preds = scorer.predict(scorer.features.encode(X))
    np.testing.assert_array_equal(preds["spend"], preds["buy"] * preds["basket"])
    assert np.ptp(preds["basket"], axis=1).max() == 0.0  # arm-free basket by default
    buyers = units["buy"].to_numpy() > 0
    assert preds["basket"][:, 0].mean() == pytest.approx(units.loc[buyers, "spend"].mean(), rel=0.1)
    assert units["spend"].mean() < 0.5 * preds["basket"][:, 0].mean()


def test_structured_arms_export_the_catalog_features_with_monotone_value(exp):
    from offerlift.training.learners import structured_arm_features

    spec, _, X = _fit(exp, TrainConfig(learner="s", params=FAST, structured_arms=True, monotone=True))
    table, _ = structured_arm_features(exp.catalog)
    for name in ("spend", "redeem", "buy"):
        assert spec["outcomes"][name]["arm_table"] == [table[a] for a in exp.catalog.arm_ids]
    n_x, n_arm = len(X.columns), len(table["none"])
    for name, value_and_min_spend in (("spend", "1 0"), ("redeem", "1 -1"), ("buy", "1 -1")):
        zeros = " ".join(["0"] * (n_arm - 2))
        constraint = f"monotone_constraints={' '.join(['0'] * n_x)} {value_and_min_spend} {zeros}"
        assert constraint in spec["outcomes"][name]["boosters"][0], name


def test_basket_by_arm_and_other_learners_work_with_the_hurdle(exp):
    spec, _, _ = _fit(exp, TrainConfig(learner="s", params=FAST, structured_arms=True, hurdle=True, basket_by_arm=True))
    assert np.ptp(np.asarray(spec["outcomes"]["basket"]["arm_table"]), axis=0).max() > 0
    spec_t, _, _ = _fit(exp, TrainConfig(learner="t", params=FAST, hurdle=True))
    assert spec_t["outcomes"]["buy"]["kind"] == "t" and spec_t["outcomes"]["basket"]["kind"] == "s"


def test_for_simulated_is_a_valid_structured_hurdle_configuration():
    config = TrainConfig.for_simulated(seed=4)
    assert config.learner == "s" and config.structured_arms and config.hurdle and config.seed == 4
    assert TrainConfig.for_simulated(n_folds=0).n_folds == 0


def test_bad_structured_settings_are_named():
    with pytest.raises(ConfigError, match="learner 's'"):
        TrainConfig(learner="t", structured_arms=True)
    with pytest.raises(ConfigError, match="hurdle"):
        TrainConfig(learner="s", basket_by_arm=True)
