"""Tests of the multi-arm uplift meta-learners on synthetic data with known heterogeneous effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone

import offerlift.training.learners as learners
from offerlift.features.errors import ConfigError, DataError, NotFittedError
from offerlift.training.learners import (
    DRLearner,
    SLearner,
    TLearner,
    XLearner,
    aipw_pseudo_outcome,
    make_learner,
    stratified_folds,
    structured_arm_features,
)
from offerlift.training.learners_base import FeatureEncoder, lgb_params

ARM_VALUES = {"none": 0.0, "c5": 5.0, "c10": 10.0}
PARAMS = {"n_estimators": 40, "learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 20, "n_jobs": 1}
CITIES = ["bj", "sh", "gz", "sz"]
NAMES = ["s", "t", "x", "dr"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def effect(X: pd.DataFrame, value: float) -> np.ndarray:
    """True effect of a coupon of ``value`` on the outcome's scale (linear predictor for binary)."""
    return value / 10.0 * (X["f0"].to_numpy() + 1.5 * (X["city"].astype(str) == "bj").to_numpy() - 0.3)


def base(X: pd.DataFrame) -> np.ndarray:
    return 0.5 * X["f1"].to_numpy() + X["f2"].to_numpy()


def make_data(
    n: int, seed: int, binary: bool = False, arm_values: dict[str, float] = ARM_VALUES
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Features, arm, outcome and per-row propensity of a randomized experiment."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["f0", "f1", "f2", "f3"])
    X["city"] = pd.Categorical(rng.choice(CITIES, n), categories=CITIES)
    arm = rng.choice(list(arm_values), n)
    value = np.array([arm_values[a] for a in arm])
    tau = effect(X, 1.0) * value
    if binary:
        y = (rng.random(n) < sigmoid(-1.0 + 0.5 * base(X) + tau)).astype(float)
    else:
        y = base(X) + tau + rng.normal(0.0, 1.0, n)
    return X, arm, y, np.full(n, 1.0 / len(arm_values))


def true_uplift(X: pd.DataFrame, arms: list[str], binary: bool = False) -> np.ndarray:
    """True uplift of each treatment arm (``arms[1:]``) over control, shape (n, n_arms - 1)."""
    cols = []
    for a in arms[1:]:
        tau = effect(X, ARM_VALUES[a])
        if binary:
            z = -1.0 + 0.5 * base(X)
            tau = sigmoid(z + tau) - sigmoid(z)
        cols.append(tau)
    return np.column_stack(cols)


def learner(name: str, **kw: object) -> learners.UpliftLearnerBase:
    extra = {"arm_values": ARM_VALUES} if name == "s" else {}
    return make_learner(name, params=PARAMS, **extra, **kw)


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    X, arm, y, p = make_data(3000, seed=1)
    X_test = make_data(1000, seed=2)[0]
    return {"X": X, "arm": arm, "y": y, "p": p, "X_test": X_test}


@pytest.fixture(scope="module")
def fitted(data: dict) -> dict[str, learners.UpliftLearnerBase]:
    return {n: learner(n).fit(data["X"], data["arm"], data["y"], data["p"]) for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_continuous_uplift_ordering_is_recovered_on_held_out_data(name: str, fitted: dict, data: dict) -> None:
    model = fitted[name]
    pred = model.predict_uplift(data["X_test"])
    truth = true_uplift(data["X_test"], model.arms_)
    minimum = {"c10": 0.85, "c5": 0.7}  # the smaller coupon has the smaller, noisier effect
    for j, arm in enumerate(model.arms_[1:]):
        corr = np.corrcoef(pred[:, j], truth[:, j])[0, 1]
        assert corr > minimum[arm], f"{name}: arm {arm} correlation {corr:.3f}"


@pytest.mark.parametrize("name", NAMES)
def test_binary_uplift_is_recovered_and_predictions_are_probabilities(name: str) -> None:
    X, arm, y, p = make_data(4000, seed=3, binary=True)
    X_test = make_data(1000, seed=4)[0]
    model = learner(name).fit(X, arm, y, p)
    assert model.outcome_ == "binary"
    pred = model.predict(X_test)
    assert pred.min() >= 0.0 and pred.max() <= 1.0
    truth = true_uplift(X_test, model.arms_, binary=True)
    up = model.predict_uplift(X_test)
    minimum = {"c10": 0.6, "c5": 0.35}
    for j, arm in enumerate(model.arms_[1:]):
        assert np.corrcoef(up[:, j], truth[:, j])[0, 1] > minimum[arm], arm


@pytest.mark.parametrize("name", NAMES)
def test_predict_shape_and_inferred_arm_order(name: str, fitted: dict, data: dict) -> None:
    model = fitted[name]
    assert model.arms_ == ["none", "c10", "c5"]  # control first, then sorted
    assert model.predict(data["X_test"]).shape == (1000, 3)
    assert model.predict_uplift(data["X_test"]).shape == (1000, 2)
    assert model.n_features_in_ == 5


def test_explicit_arm_order_permutes_columns(data: dict) -> None:
    args = (data["X"], data["arm"], data["y"])
    inferred = TLearner(params=PARAMS).fit(*args)
    explicit = TLearner(params=PARAMS, arms=["none", "c5", "c10"]).fit(*args)
    assert explicit.arms_ == ["none", "c5", "c10"]
    np.testing.assert_allclose(explicit.predict(data["X_test"]), inferred.predict(data["X_test"])[:, [0, 2, 1]])


@pytest.mark.parametrize("name", NAMES)
def test_predict_is_deterministic_and_changes_nothing(name: str, fitted: dict, data: dict) -> None:
    model = fitted[name]
    params_before = model.get_params()
    attrs_before = sorted(vars(model))
    first = model.predict(data["X_test"])
    second = model.predict(data["X_test"])
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(model.predict_uplift(data["X_test"]), model.predict_uplift(data["X_test"]))
    assert model.get_params() == params_before
    assert sorted(vars(model)) == attrs_before


@pytest.mark.parametrize("name", NAMES)
def test_uplift_is_the_difference_of_predict_columns_where_nothing_is_clipped(name: str) -> None:
    X, arm, y, p = make_data(2000, seed=9, binary=True)
    model = learner(name).fit(X, arm, y, p)
    pred, up = model.predict(X), model.predict_uplift(X)
    inside = ((pred > 0) & (pred < 1)).all(axis=1)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(up[inside], (pred[:, 1:] - pred[:, :1])[inside], atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_fit_is_reproducible_with_the_same_random_state(name: str, fitted: dict, data: dict) -> None:
    again = learner(name).fit(data["X"], data["arm"], data["y"], data["p"])
    np.testing.assert_array_equal(again.predict(data["X_test"]), fitted[name].predict(data["X_test"]))


@pytest.mark.parametrize("name", NAMES)
def test_unfitted_predict_raises_not_fitted_error(name: str, data: dict) -> None:
    model = learner(name)
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict(data["X_test"])
    with pytest.raises(NotFittedError):
        model.predict_uplift(data["X_test"])


@pytest.mark.parametrize("name", NAMES)
def test_clone_gives_an_unfitted_copy_with_the_same_params(name: str, fitted: dict) -> None:
    copy = clone(fitted[name])
    assert copy.get_params() == fitted[name].get_params()
    assert not hasattr(copy, "arms_")


def _bad(data: dict, **change: object) -> dict:
    args = {"X": data["X"], "arm": data["arm"], "y": data["y"], "propensity": data["p"], **change}
    return args


@pytest.mark.parametrize(
    ("change", "kw", "error", "needle"),
    [
        ({"arm": "unknown"}, {"arms": ["none", "c5", "c10"]}, DataError, "'c7'"),
        ({"arm": "few"}, {}, DataError, "'rare'"),
        ({"y": "nan"}, {}, DataError, "nan"),
        ({"y": "short"}, {}, DataError, "2999"),
        ({"propensity": "big"}, {}, DataError, "1.5"),
        ({"propensity": "zero"}, {}, DataError, "propensity 0.0"),
        ({}, {"arms": ["c5", "none", "c10"]}, ConfigError, "'none'"),
        ({}, {"outcome": "count"}, ConfigError, "'count'"),
        ({}, {"outcome": "binary"}, DataError, "binary"),
        ({"X": "datetime"}, {}, DataError, "'when'"),
    ],
)
def test_bad_inputs_raise_errors_naming_the_value(data: dict, change: dict, kw: dict, error: type, needle: str) -> None:
    args = _bad(data)
    arm, y, p = data["arm"].copy(), data["y"].copy(), data["p"].copy()
    arm[7] = "c7" if change.get("arm") == "unknown" else arm[7]
    if change.get("arm") == "few":
        arm[:3] = "rare"
    if change.get("y") == "nan":
        y[11] = np.nan
    p[5] = {"big": 1.5, "zero": 0.0}.get(change.get("propensity"), p[5])
    args.update(arm=arm, y=y[:-1] if change.get("y") == "short" else y, propensity=p)
    if change.get("X") == "datetime":
        args["X"] = data["X"].assign(when=pd.Timestamp("2026-01-01"))
    for name in NAMES:
        with pytest.raises(error, match=needle):
            learner(name, **kw).fit(**args)


def test_bad_learner_settings_raise_config_errors(data: dict) -> None:
    args = (data["X"], data["arm"], data["y"])
    with pytest.raises(ConfigError, match="'q'"):
        make_learner("q")
    with pytest.raises(ConfigError, match="arm_values"):
        SLearner(monotone=True).fit(*args)
    with pytest.raises(ConfigError, match="'c10'"):
        SLearner(arm_values={"none": 0, "c5": 5}).fit(*args)
    with pytest.raises(ConfigError, match="n_folds"):
        DRLearner(n_folds=1).fit(*args)
    with pytest.raises(ConfigError, match="'some'"):
        DRLearner(effect_rows="some").fit(*args)


def test_predict_names_a_missing_feature_column(fitted: dict, data: dict) -> None:
    with pytest.raises(DataError, match="'f2'"):
        fitted["t"].predict(data["X_test"].drop(columns="f2"))


@pytest.fixture(scope="module")
def monotone_data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Data whose true effect decreases with the coupon value for f0 < 0.3 (mostly for non-"bj" rows)."""
    X, arm, y, _ = make_data(3000, seed=5)
    return X, arm, y


@pytest.fixture(scope="module")
def monotone_model(monotone_data: tuple) -> SLearner:
    return SLearner(arm_values=ARM_VALUES, monotone=True, params=PARAMS).fit(*monotone_data)


def _by_value(model: SLearner, pred: np.ndarray) -> np.ndarray:
    order = np.argsort([ARM_VALUES[a] for a in model.arms_], kind="stable")
    return pred[:, order]


rows = st.lists(
    st.tuples(
        *[st.floats(-4.0, 4.0, allow_nan=False) for _ in range(4)],
        st.sampled_from([*CITIES, "unseen"]),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows)
def test_monotone_s_learner_is_non_decreasing_in_coupon_value(monotone_model: SLearner, rows: list) -> None:
    X = pd.DataFrame(rows, columns=["f0", "f1", "f2", "f3", "city"])
    pred = _by_value(monotone_model, monotone_model.predict(X))
    assert (np.diff(pred, axis=1) >= -1e-12).all()


def test_unconstrained_s_learner_is_not_monotone_on_the_same_data(monotone_data: tuple) -> None:
    """The monotone property above is not vacuous: without the constraint the data breaks it."""
    model = SLearner(arm_values=ARM_VALUES, params=PARAMS).fit(*monotone_data)
    pred = _by_value(model, model.predict(make_data(500, seed=6)[0]))
    assert (np.diff(pred, axis=1) < -0.1).any()


def test_s_learner_stacked_predict_matches_a_per_arm_reference(fitted: dict, data: dict) -> None:
    model = fitted["s"]
    X = data["X_test"]
    features = X.copy()
    features["city"] = X["city"].cat.codes.replace(-1, np.nan).astype(float)
    expected = []
    for a in model.arms_:
        onehot = {f"is_{b}": float(a == b) for b in model.arms_[1:]}
        Z = features.assign(**onehot, value=ARM_VALUES[a])
        expected.append(model.model_.predict(Z.to_numpy(dtype=float)))
    np.testing.assert_allclose(model.predict(X), np.column_stack(expected))


def test_s_learner_predict_in_chunks_matches_one_call(
    fitted: dict, data: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = fitted["s"].predict(data["X_test"])
    monkeypatch.setattr(learners, "MAX_STACK_CELLS", 7 * 3 * 100)  # 7 rows per call
    np.testing.assert_array_equal(fitted["s"].predict(data["X_test"]), whole)


def test_categorical_codes_follow_fit_categories_whatever_the_input_dtype(fitted: dict, data: dict) -> None:
    X = data["X_test"]
    reordered = X.assign(city=pd.Categorical(X["city"].astype(str), categories=CITIES[::-1]))
    as_object = X.assign(city=X["city"].astype(str))
    base_pred = fitted["x"].predict(X)
    np.testing.assert_array_equal(fitted["x"].predict(reordered), base_pred)
    np.testing.assert_array_equal(fitted["x"].predict(as_object), base_pred)
    unseen = fitted["x"].predict(X.assign(city="unseen"))
    assert np.isfinite(unseen).all()


def test_categorical_effect_is_recovered_per_city(fitted: dict, data: dict) -> None:
    """The effect jumps for city "bj" only: every learner ranks bj first for the c10 arm."""
    X = data["X_test"]
    for model in fitted.values():
        up = pd.Series(model.predict_uplift(X)[:, 0]).groupby(X["city"].to_numpy()).mean()
        assert up.idxmax() == "bj", type(model).__name__


def test_feature_encoder_matches_a_reference() -> None:
    X = pd.DataFrame(
        {
            "n": pd.array([1, None, 3], dtype="Int64"),
            "c": pd.Categorical(["b", None, "a"], categories=["b", "a"]),
            "s": ["y", "x", None],
        }
    )
    enc = FeatureEncoder().fit(X)
    assert enc.categorical == [1, 2]
    expected = np.array([[1.0, 0.0, 1.0], [np.nan, np.nan, 0.0], [3.0, 1.0, np.nan]])
    np.testing.assert_array_equal(enc.transform(X), expected)


def test_aipw_pseudo_outcome_matches_a_row_loop() -> None:
    rng = np.random.default_rng(0)
    n, m = 50, 3
    codes = rng.integers(0, m, n)
    y, mu, e = rng.normal(size=n), rng.normal(size=(n, m)), rng.uniform(0.1, 1.0, n)
    for a in range(1, m):
        expected = np.empty(n)
        for i in range(n):
            phi = mu[i, a] - mu[i, 0]
            if codes[i] == a:
                phi += (y[i] - mu[i, a]) / e[i]
            elif codes[i] == 0:
                phi -= (y[i] - mu[i, 0]) / e[i]
            expected[i] = phi
        np.testing.assert_allclose(aipw_pseudo_outcome(y, codes, mu, e, a), expected)


def test_stratified_folds_balance_every_arm() -> None:
    codes = np.repeat([0, 1, 2], [30, 31, 32])
    folds = stratified_folds(codes, 3, seed=0)
    for a in range(3):
        counts = np.bincount(folds[codes == a], minlength=3)
        assert counts.max() - counts.min() <= 1


def test_params_aliases_override_the_defaults(data: dict) -> None:
    merged = lgb_params({"n_estimators": 7, "subsample": 0.5}, "binary", random_state=3)
    assert merged["num_iterations"] == 7 and merged["bagging_fraction"] == 0.5 and merged["seed"] == 3
    assert merged["objective"] == "binary" and "is_unbalance" not in merged
    model = TLearner(params={"n_estimators": 7, "n_jobs": 1}).fit(data["X"], data["arm"], data["y"])
    assert [m.num_trees() for m in model.models_] == [7, 7, 7]


def test_outcome_is_detected_and_can_be_forced(data: dict) -> None:
    y01 = (data["y"] > 0).astype(float)
    assert TLearner(params=PARAMS).fit(data["X"], data["arm"], y01).outcome_ == "binary"
    forced = TLearner(params=PARAMS, outcome="continuous").fit(data["X"], data["arm"], y01)
    assert forced.outcome_ == "continuous"
    assert forced.models_[0].params["objective"] == "regression"


def test_x_learner_weights_use_the_known_propensities(data: dict) -> None:
    p = np.where(data["arm"] == "none", 0.5, 0.25)
    model = XLearner(params=PARAMS).fit(data["X"], data["arm"], data["y"], p)
    np.testing.assert_allclose(model.arm_propensity_, [0.5, 0.25, 0.25])
    np.testing.assert_allclose(model.weights_, [1 / 3, 1 / 3])


def test_x_learner_with_pooled_effects_recovers_uplift_with_one_model_per_arm(data: dict) -> None:
    model = XLearner(params=PARAMS, pooled_effects=True).fit(data["X"], data["arm"], data["y"], data["p"])
    assert [len(parts) for parts in model.effect_models_] == [1, 1]
    up = model.predict_uplift(data["X_test"])
    truth = true_uplift(data["X_test"], model.arms_)
    assert min(np.corrcoef(up[:, j], truth[:, j])[0, 1] for j in range(2)) > 0.8


def test_pooled_x_learner_weights_follow_the_propensities(data: dict) -> None:
    """Unequal known propensities reweight the pooled stage-2 rows, so the fit changes."""
    args = (data["X"], data["arm"], data["y"])
    unequal = np.where(data["arm"] == "none", 0.5, 0.25)
    weighted = XLearner(params=PARAMS, pooled_effects=True).fit(*args, unequal)
    plain = XLearner(params=PARAMS, pooled_effects=True).fit(*args, data["p"])
    assert np.abs(weighted.predict_uplift(data["X_test"]) - plain.predict_uplift(data["X_test"])).max() > 0.01


def test_dr_learner_on_all_rows_recovers_uplift_with_three_folds(data: dict) -> None:
    model = DRLearner(params=PARAMS, n_folds=3, effect_rows="all").fit(data["X"], data["arm"], data["y"], data["p"])
    up = model.predict_uplift(data["X_test"])
    truth = true_uplift(data["X_test"], model.arms_)
    assert min(np.corrcoef(up[:, j], truth[:, j])[0, 1] for j in range(2)) > 0.8


@pytest.mark.parametrize("cls", [SLearner, TLearner, XLearner, DRLearner])
def test_five_arms_work(cls: type) -> None:
    values = {"none": 0.0, "c2": 2.0, "c5": 5.0, "c8": 8.0, "c10": 10.0}
    X, arm, y, p = make_data(2500, seed=7, arm_values=values)
    kw = {"arm_values": values} if cls is SLearner else {}
    model = cls(params=PARAMS, **kw).fit(X, arm, y, p)
    X_test = make_data(500, seed=8)[0]
    up = model.predict_uplift(X_test)
    assert up.shape == (500, 4)
    truth = np.column_stack([effect(X_test, values[a]) for a in model.arms_[1:]])
    minimum = {"c10": 0.6, "c8": 0.5, "c5": 0.35, "c2": 0.1}
    for j, arm in enumerate(model.arms_[1:]):
        assert np.corrcoef(up[:, j], truth[:, j])[0, 1] > minimum[arm], arm


# --- structured arm features ------------------------------------------------------------------------------

FEATURES = {"none": [0.0, 0.0], "c5": [5.0, 1.0], "c10": [10.0, 1.0]}


def test_s_learner_arm_features_are_its_arm_table_and_predict_matches_a_per_arm_reference(data: dict) -> None:
    model = SLearner(arm_features=FEATURES, params=PARAMS).fit(data["X"], data["arm"], data["y"], data["p"])
    np.testing.assert_array_equal(model.arm_table_, np.array([FEATURES[a] for a in model.arms_]))
    X = data["X_test"]
    codes = X["city"].cat.codes.replace(-1, np.nan).astype(float)
    base_x = X.assign(city=codes).to_numpy(dtype=float)
    expected = [model.model_.predict(np.hstack([base_x, np.tile(FEATURES[a], (len(X), 1))])) for a in model.arms_]
    np.testing.assert_allclose(model.predict(X), np.column_stack(expected))
    truth = true_uplift(X, model.arms_)
    up = model.predict_uplift(X)
    assert np.corrcoef(up[:, 1], truth[:, 1])[0, 1] > 0.85


def test_arms_with_equal_arm_features_get_equal_predictions(data: dict) -> None:
    same = {"none": [0.0], "c5": [7.0], "c10": [7.0]}
    model = SLearner(arm_features=same, params=PARAMS).fit(data["X"], data["arm"], data["y"])
    pred = model.predict(data["X_test"])
    np.testing.assert_array_equal(pred[:, 1], pred[:, 2])


@pytest.fixture(scope="module")
def arm_monotone_model(monotone_data: tuple) -> SLearner:
    return SLearner(arm_features=FEATURES, arm_monotone=[1, 0], params=PARAMS).fit(*monotone_data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows)
def test_arm_monotone_makes_predictions_non_decreasing_in_that_arm_feature(
    arm_monotone_model: SLearner, rows: list
) -> None:
    X = pd.DataFrame(rows, columns=["f0", "f1", "f2", "f3", "city"])
    pred = arm_monotone_model.predict(X)
    c5, c10 = arm_monotone_model.arms_.index("c5"), arm_monotone_model.arms_.index("c10")
    assert (pred[:, c10] - pred[:, c5] >= -1e-12).all()


def test_without_arm_monotone_the_same_data_breaks_the_order(monotone_data: tuple) -> None:
    model = SLearner(arm_features=FEATURES, params=PARAMS).fit(*monotone_data)
    pred = model.predict(make_data(500, seed=6)[0])
    assert (pred[:, model.arms_.index("c10")] - pred[:, model.arms_.index("c5")] < -0.1).any()


def test_uplift_features_limit_what_the_uplift_depends_on(data: dict) -> None:
    """With uplift_features=["f3"] the uplift depends on f3 only: shuffling f0 and f1 leaves it unchanged."""
    args = (data["X"], data["arm"], data["y"], data["p"])
    X = data["X_test"]
    shuffled = X.assign(f0=X["f0"].to_numpy()[::-1], f1=X["f1"].to_numpy()[::-1], city=X["city"].to_numpy()[::-1])
    limited = SLearner(arm_features=FEATURES, uplift_features=["f3"], params=PARAMS).fit(*args)
    np.testing.assert_allclose(limited.predict_uplift(shuffled), limited.predict_uplift(X), atol=1e-9)
    assert not np.allclose(limited.predict(shuffled), limited.predict(X))
    free = SLearner(arm_features=FEATURES, params=PARAMS).fit(*args)
    assert np.abs(free.predict_uplift(shuffled) - free.predict_uplift(X)).max() > 0.1


def test_structured_arms_let_a_rare_arm_borrow_strength() -> None:
    """Arm c10@b has 60 rows; sharing value and channel features beats one-hot arms on its uplift."""
    values = {"none": 0.0, "c5@a": 5.0, "c10@a": 10.0, "c5@b": 5.0, "c10@b": 10.0}
    reach = {"none": 0.0, "c5@a": 1.0, "c10@a": 1.0, "c5@b": 0.5, "c10@b": 0.5}
    feats = {a: [values[a], float(a.endswith("@a")), float(a.endswith("@b"))] for a in values}
    rng = np.random.default_rng(11)
    n = 4000
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["f0", "f1", "f2"])
    arm = rng.choice(["none", "c5@a", "c10@a", "c5@b"], n)
    arm[rng.choice(n, 60, replace=False)] = "c10@b"
    tau = np.array([reach[a] * values[a] for a in arm]) / 10.0 * (X["f0"].to_numpy() + 0.5)
    y = X["f1"].to_numpy() + tau + rng.normal(0.0, 1.0, n)
    X_test = pd.DataFrame(rng.normal(size=(1000, 3)), columns=["f0", "f1", "f2"])
    truth = 0.5 * (X_test["f0"].to_numpy() + 0.5)
    corr = {}
    for name, kw in (("structured", {"arm_features": feats}), ("onehot", {})):
        model = SLearner(arms=list(values), params=PARAMS, **kw).fit(X, arm, y)
        corr[name] = np.corrcoef(model.predict_uplift(X_test)[:, -1], truth)[0, 1]
    assert corr["structured"] > 0.9 and corr["structured"] > corr["onehot"] + 0.05, corr


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"arm_features": {"none": [0.0], "c5": [5.0]}}, "'c10'"),
        ({"arm_features": {"none": [0.0], "c5": [5.0], "c10": [10.0, 1.0]}}, "'c10'"),
        ({"arm_features": {"none": [0.0], "c5": [np.nan], "c10": [10.0]}}, "'c5'"),
        ({"arm_features": FEATURES, "arm_monotone": [1]}, "arm_monotone"),
        ({"arm_features": FEATURES, "arm_monotone": [2, 0]}, r"\[2, 0\]"),
        ({"arm_monotone": [1]}, "arm_features"),
        ({"arm_features": FEATURES, "arm_values": ARM_VALUES}, "arm_values"),
        ({"arm_features": FEATURES, "uplift_features": ["f9"]}, "'f9'"),
    ],
)
def test_bad_arm_feature_settings_raise_config_errors(data: dict, kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        SLearner(params=PARAMS, **kw).fit(data["X"], data["arm"], data["y"])


def test_structured_arm_features_of_the_simulated_catalog() -> None:
    from offerlift.simworld.world import SimWorld

    cat = SimWorld.default(10, seed=0).catalog
    table, names = structured_arm_features(cat)
    assert list(table) == cat.arm_ids and names[0] == "arm_coupon_value"
    assert all(len(v) == len(names) for v in table.values())
    assert table["none"] == [0.0] * len(names)
    channels = [j for j, n in enumerate(names) if n.startswith("arm_channel_")]
    for arm in cat.arms[1:]:
        row = table[arm.id]
        assert sum(row[j] for j in channels) == 1.0
        assert row[0] == arm.coupon_value and row[1] == arm.offer.min_spend and row[-1] == arm.contact_cost
