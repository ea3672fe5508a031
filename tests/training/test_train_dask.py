"""lightgbm.dask training exports a scorer spec that loads and predicts like the single-machine model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerlift.features.errors import ConfigError, DataError
from offerlift.models.scoring import ArmScorer
from offerlift.simworld.experiment import make_experiment
from offerlift.training.train import TrainConfig, fit_spec, outcome_plan
from offerlift.training.train_dask import fit_dask_spec

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

PARAMS = {
    "num_iterations": 20,
    "num_leaves": 7,
    "min_data_in_leaf": 20,
    "bagging_fraction": 1.0,
    "feature_fraction": 1.0,
}


@pytest.fixture(scope="module")
def experiment():
    exp = make_experiment(4000, seed=0)
    units = exp.units()
    X = exp.features.loc[units.index]
    frame = pd.concat([X, units[["arm", "spend", "redeem", "buy"]]], axis=1)
    return exp, units, X, frame


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
    )
    with cluster, distributed.Client(cluster) as c:
        yield c


def single_machine(exp, units, X, learner: str, outcomes: list[str]) -> dict:
    spec = fit_spec(
        exp,
        TrainConfig(learner=learner, params=PARAMS, n_folds=0),
        X,
        units["arm"].to_numpy(),
        units,
        units["propensity"].to_numpy(float),
    )
    spec["outcomes"] = {k: v for k, v in spec["outcomes"].items() if k in outcomes}
    return spec


def test_s_learner_on_dask_predicts_what_the_single_machine_model_predicts(experiment, client):
    exp, units, X, frame = experiment
    names, value = outcome_plan(exp)
    spec = fit_dask_spec(
        dd.from_pandas(frame, npartitions=2), exp.catalog, names, value, list(X.columns), "s", PARAMS, client=client
    )
    dask_scorer, ref = ArmScorer(spec), ArmScorer(single_machine(exp, units, X, "s", names))
    assert dask_scorer.features == ref.features
    Xm = ref.features.encode(X.iloc[:1000])
    for name, pred in ref.predict(Xm).items():
        np.testing.assert_allclose(dask_scorer.predict(Xm)[name], pred, atol=1e-6)
    assert spec["outcomes"]["buy"]["clip"] == [0.0, 1.0] and spec["outcomes"]["spend"]["clip"] is None


def test_t_learner_on_dask_is_close_to_the_single_machine_model(experiment, client):
    exp, units, X, frame = experiment
    spec = fit_dask_spec(
        dd.from_pandas(frame, npartitions=2),
        exp.catalog,
        ["spend"],
        "spend",
        list(X.columns),
        "t",
        PARAMS,
        client=client,
    )
    dask_scorer, ref = ArmScorer(spec), ArmScorer(single_machine(exp, units, X, "t", ["spend"]))
    assert len(spec["outcomes"]["spend"]["boosters"]) == len(exp.catalog.arms)
    Xm = ref.features.encode(X.iloc[:1000])
    a, b = ref.predict(Xm)["spend"], dask_scorer.predict(Xm)["spend"]
    # per-arm bins come from each arm's rows on dask (from all rows on one machine): close, not identical
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    assert abs(a.mean() - b.mean()) < 0.05 * abs(a.mean())


def test_bad_learner_and_missing_columns_are_named(experiment, client):
    exp, _, X, frame = experiment
    data = dd.from_pandas(frame, npartitions=1)
    with pytest.raises(ConfigError, match="'x'"):
        fit_dask_spec(data, exp.catalog, ["spend"], "spend", list(X.columns), "x", client=client)
    with pytest.raises(DataError, match="nope"):
        fit_dask_spec(data, exp.catalog, ["spend", "nope"], "spend", list(X.columns), "s", client=client)
