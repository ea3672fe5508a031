"""Optuna tuning: held-out objective, best trial, resumable SQLite study, pruning, MLflow trials and registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError, ModelError
from offerlift.models.registry import CHALLENGER, REPO_ROOT, alias_version, resolve_tracking_uri
from offerlift.simworld.world import make_experiment
from offerlift.training.train import TrainConfig, evaluate_config, fit_spec
from offerlift.training.tune import (
    SPACE,
    HeldOutEvaluator,
    config_from_params,
    default_storage,
    iter_folds,
    monotone_possible,
    open_study,
    suggest_config,
    tune,
    tune_cli_payload,
)

#: Few small trees: every trial fits in well under a second.
SMALL = {
    "num_iterations": (5, 15, False, True),
    "num_leaves": (4, 12, False, True),
    "min_data_in_leaf": (10, 60, False, True),
}
FAST = {"num_iterations": 10, "num_leaves": 7, "min_data_in_leaf": 20}


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    """The default world with two arms besides no offer (c5 and c20 by SMS), 3000 customers."""
    spec = yaml.safe_load((REPO_ROOT / "simworld" / "default.yaml").read_text())
    spec["catalog"]["arms"] = [
        {"id": "c5@sms", "offer": "c5", "channel": "sms"},
        {"id": "c20@sms", "offer": "c20", "channel": "sms"},
    ]
    path = tmp_path_factory.mktemp("world") / "world.yaml"
    path.write_text(yaml.safe_dump(spec))
    return make_experiment(3000, seed=5, spec=path)


def _tune(exp, tmp_path, n_trials=3, **kw):
    kw.setdefault("storage", f"sqlite:///{tmp_path / 'optuna.db'}")
    kw.setdefault("learners", ("s", "t"))
    return tune(exp, n_trials, n_folds=2, seed=0, space=SMALL, n_boot=20, **kw)


def test_best_value_is_the_max_over_completed_trials(exp, tmp_path):
    result = _tune(exp, tmp_path, n_trials=4, study_name="best")
    done = [t for t in result.trials if t["state"] == "COMPLETE"]
    assert len(done) == result.n_complete >= 2
    best = max(done, key=lambda t: t["value"])
    assert result.best_value == best["value"]
    assert result.best_params == best["params"]
    assert result.best_config == config_from_params(best["params"], 2, 0, 20)
    first = result.trials[0]["params"]  # the learners' defaults, clipped into the space
    assert (first["learning_rate"], first["lambda_l2"], first["num_iterations"], first["num_leaves"]) == (
        0.05,
        1,
        15,
        12,
    )
    assert [t["params"]["learner"] for t in result.trials[:2]] == ["t", "s"]  # the defaults, then each learner
    assert len({t["value"] for t in done}) > 1  # the trials do differ


def test_study_resumes_and_trial_counts_add_up(exp, tmp_path):
    first = _tune(exp, tmp_path, n_trials=2, study_name="resume")
    second = _tune(exp, tmp_path, n_trials=2, study_name="resume")
    assert (first.n_new, second.n_new) == (2, 2)
    assert len(second.trials) == 4 == second.n_complete + second.n_pruned + second.n_failed
    assert [t["number"] for t in second.trials] == [0, 1, 2, 3]
    assert second.trials[:2] == first.trials
    assert second.best_value >= first.best_value
    params = [tuple(sorted(t["params"].items())) for t in second.trials]
    assert len(set(params)) == 4  # the resumed sampler does not replay the first call's draws
    stored = optuna.load_study(study_name="resume", storage=first.storage)
    assert len(stored.trials) == 4 and stored.user_attrs["objective"] == "policy_value"


def test_resuming_with_another_objective_is_refused(exp, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    open_study(storage, "s1", {"objective": "policy_value", "n_folds": 2}, seed=0)
    with pytest.raises(ConfigError, match="objective='policy_value', not 'qini'"):
        open_study(storage, "s1", {"objective": "qini", "n_folds": 2}, seed=0)


def test_default_storage_sits_next_to_the_mlflow_store(tmp_path):
    registry = resolve_tracking_uri(root=tmp_path / "store")
    assert default_storage(registry) == f"sqlite:///{(tmp_path / 'store').resolve()}/optuna.db"
    assert default_storage(None) == f"sqlite:///{Path.cwd().resolve() / 'mlruns'}/optuna.db"


class _PruneOddTrials(optuna.pruners.BasePruner):
    """Prunes every odd-numbered trial at its first report."""

    def prune(self, study, trial):
        return trial.number % 2 == 1


def test_pruned_trials_stop_after_one_fold_and_are_never_chosen(exp, tmp_path):
    result = _tune(exp, tmp_path, n_trials=4, study_name="prune", pruner=_PruneOddTrials())
    assert (result.n_complete, result.n_pruned) == (2, 2)
    study = optuna.load_study(study_name="prune", storage=result.storage)
    for t in study.trials:
        pruned = t.state == optuna.trial.TrialState.PRUNED
        assert pruned == (t.number % 2 == 1)
        assert sorted(t.intermediate_values) == ([0] if pruned else [0, 1])
    assert study.best_trial.number % 2 == 0
    assert result.best_params == study.best_trial.params


def test_all_trials_pruned_is_an_error(exp, tmp_path):
    with pytest.raises(ModelError, match="no completed trial"):
        _tune(exp, tmp_path, n_trials=2, study_name="all", pruner=optuna.pruners.ThresholdPruner(lower=1e9))


@pytest.mark.parametrize(("objective", "metric"), [("policy_value", "ips_vs_control"), ("qini", "qini_auc_mean")])
def test_objective_equals_the_held_out_metric_of_evaluate_config(exp, tmp_path, objective, metric):
    result = _tune(exp, tmp_path, n_trials=1, objective=objective, study_name=objective)
    assert (result.n_new, len(result.trials)) == (1, 1)  # the enqueued S trial still waits for the next call
    _, _, _, metrics = evaluate_config(exp, result.best_config)
    assert result.best_value == pytest.approx(metrics[metric], abs=1e-12)


def test_folds_are_disjoint_by_customer_and_cover_every_unit(exp):
    customers = exp.units()["customer_id"].to_numpy()
    folds = list(iter_folds(exp, TrainConfig(learner="t", params=FAST), n_folds=3, seed=1))
    for fold in folds:
        assert not set(fold.train_rows) & set(fold.held_rows)
        assert not set(customers[fold.train_rows]) & set(customers[fold.held_rows])
        assert len(fold.train_rows) + len(fold.held_rows) == len(customers)
    held = np.sort(np.concatenate([f.held_rows for f in folds]))
    assert np.array_equal(held, np.arange(len(customers)))


def test_a_leak_of_training_rows_would_change_the_value(exp):
    """The in-sample value of an overfitting model is far above its held-out value: the objective must not leak."""
    config = TrainConfig(learner="t", params={"num_iterations": 60, "num_leaves": 31, "min_data_in_leaf": 5})
    evaluator = HeldOutEvaluator.build(exp, "policy_value")
    fold = next(iter_folds(exp, config, n_folds=2, seed=0))
    held_out = evaluator.value(fold.held_rows, fold.preds, fold.profit)
    units = exp.units()
    rows = fold.train_rows
    spec = fit_spec(
        exp, config, exp.features.loc[units.index].iloc[rows], units["arm"].to_numpy()[rows], units.iloc[rows],
        units["propensity"].to_numpy(float)[rows],
    )  # fmt: skip
    from offerlift.models.scoring import ArmScorer

    scorer = ArmScorer(spec)
    preds = scorer.predict(scorer.features.encode(exp.features.loc[units.index].iloc[rows]))
    in_sample = evaluator.value(rows, preds, scorer.profit(preds))
    assert in_sample > held_out + 0.5


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"objective": "logloss"}, "'logloss'"),
        ({"learners": ("t", "rf")}, "'rf'"),
        ({"learners": "t"}, "'t'"),
        ({"estimator": "ipw"}, "'ipw'"),
        ({"n_trials": 0}, "n_trials"),
        ({"n_trials": None}, "never stop"),
    ],
)
def test_bad_arguments_raise_config_error_naming_the_value(exp, tmp_path, kwargs, named):
    kw = {"n_trials": 1, "storage": f"sqlite:///{tmp_path / 'x.db'}", **kwargs}
    with pytest.raises(ConfigError, match=named):
        tune(exp, **kw)


def _catalog(values):
    offers = [{"id": f"o{i}", "coupon_value": v} for i, v in enumerate(values)]
    return Catalog.from_dict({"name": "c", "offers": offers})


@pytest.mark.parametrize(("values", "ok"), [((5, 20), True), ((0, 0), False), ((0, 5), False), ((5, 5), False)])
def test_monotone_is_offered_only_when_arms_are_ordered_by_value(values, ok):
    class Exp:
        catalog = _catalog(values)

    assert monotone_possible(Exp) is ok


@settings(max_examples=30, deadline=None)
@given(data=st.data(), learner=st.sampled_from(["s", "t", "x", "dr"]), monotone=st.booleans())
def test_a_trial_and_its_stored_params_give_the_same_config(data, learner, monotone):
    params = {"learner": learner}
    for name, (low, high, _, integer) in SPACE.items():
        draw = st.integers(int(low), int(high)) if integer else st.floats(low, high, allow_nan=False)
        params[name] = data.draw(draw, label=name)
    if learner == "s":
        params["monotone"] = monotone
    trial = optuna.trial.FixedTrial(params)
    config = suggest_config(trial, ["s", "t", "x", "dr"], SPACE, True, n_folds=3, seed=7)
    assert config == config_from_params(trial.params, n_folds=3, seed=7)
    assert config.monotone == (learner == "s" and monotone)


def test_registry_gets_nested_trial_runs_and_the_best_model(exp, tmp_path):
    import mlflow

    registry = resolve_tracking_uri(root=tmp_path / "mlruns")
    result = _tune(exp, tmp_path, n_trials=2, registry=registry, storage=None, study_name="reg")
    assert result.storage == default_storage(registry)
    client = mlflow.MlflowClient(tracking_uri=registry.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(registry.experiment).experiment_id])
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert len(trials) == 2
    assert {float(r.data.metrics["objective"]) for r in trials} == {t["value"] for t in result.trials}
    assert all("learner" in r.data.params and "num_leaves" in r.data.params for r in trials)
    assert alias_version(registry, CHALLENGER) == result.train.version
    assert result.train.spec["metadata"]["config"]["learner"] == result.best_params["learner"]
    payload = tune_cli_payload(result)
    assert payload["model_uri"] == result.train.model_uri is not None
    assert payload["best_value"] == result.best_value and payload["best_params"] == result.best_params
    assert payload["n_trials"] == {"complete": 2, "pruned": 0, "failed": 0, "this_call": 2}
