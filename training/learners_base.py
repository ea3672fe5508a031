"""Shared machinery of the uplift meta-learners: input checks, feature encoding and LightGBM glue.

The learners in :mod:`offerlift.training.learners` convert the feature frame to one float64 numpy matrix at the
start of ``fit`` and ``predict`` (categorical columns become their integer codes, with the categories
learned in ``fit``) and from then on work on numpy only, calling LightGBM's native API.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from offerlift.features.catalog import CONTROL_ARM
from offerlift.features.errors import ConfigError, DataError, NotFittedError

log = logging.getLogger(__name__)

OUTCOMES = ("binary", "continuous")

#: Defaults for every LightGBM model, in LightGBM's own parameter names. They suit rare outcomes
#: (~1% conversion): large leaves and L2 shrinkage keep leaf values stable, and there is no
#: ``is_unbalance``, which would distort the probabilities the uplift is computed from.
DEFAULT_LGB_PARAMS: dict[str, Any] = {
    "num_iterations": 200,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "min_sum_hessian_in_leaf": 1e-3,
    "lambda_l2": 1.0,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "feature_fraction": 0.8,
    "min_data_per_group": 50,
    "cat_smooth": 10.0,
    "max_cat_threshold": 32,
    "verbosity": -1,
    "num_threads": 0,
}

#: scikit-learn style and other common aliases -> LightGBM's main parameter name.
_ALIASES: dict[str, str] = {
    "n_estimators": "num_iterations",
    "num_boost_round": "num_iterations",
    "num_iteration": "num_iterations",
    "num_round": "num_iterations",
    "num_rounds": "num_iterations",
    "num_trees": "num_iterations",
    "n_iter": "num_iterations",
    "eta": "learning_rate",
    "shrinkage_rate": "learning_rate",
    "min_child_samples": "min_data_in_leaf",
    "min_data": "min_data_in_leaf",
    "min_data_per_leaf": "min_data_in_leaf",
    "min_child_weight": "min_sum_hessian_in_leaf",
    "min_sum_hessian": "min_sum_hessian_in_leaf",
    "reg_lambda": "lambda_l2",
    "lambda": "lambda_l2",
    "reg_alpha": "lambda_l1",
    "subsample": "bagging_fraction",
    "bagging": "bagging_fraction",
    "subsample_freq": "bagging_freq",
    "colsample_bytree": "feature_fraction",
    "colsample": "feature_fraction",
    "sub_feature": "feature_fraction",
    "n_jobs": "num_threads",
    "nthread": "num_threads",
    "num_thread": "num_threads",
    "random_state": "seed",
    "random_seed": "seed",
    "verbose": "verbosity",
    "application": "objective",
    "loss": "objective",
}


def lgb_params(params: Mapping[str, Any] | None, outcome: str, random_state: int | None) -> dict[str, Any]:
    """The LightGBM parameters of the outcome models: ``params`` (any common alias) over the defaults."""
    merged = dict(DEFAULT_LGB_PARAMS)
    merged["objective"] = "binary" if outcome == "binary" else "regression"
    if random_state is not None:
        merged["seed"] = int(random_state)
    for key, value in (params or {}).items():
        merged[_ALIASES.get(key, key)] = value
    if merged.get("is_unbalance") or "scale_pos_weight" in merged:
        log.warning("is_unbalance/scale_pos_weight distort the probabilities the uplift is computed from")
    return merged


def effect_params(outcome_params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of an effect (CATE) model: the outcome parameters with a squared-error objective."""
    return {**outcome_params, "objective": "regression"}


def make_dataset(X: np.ndarray, y: np.ndarray, params: Mapping[str, Any], categorical: list[int]) -> lgb.Dataset:
    """A constructed LightGBM dataset (binned once; take row subsets of it with :func:`subset`)."""
    ds = lgb.Dataset(X, label=y, params=dict(params), categorical_feature=categorical or "auto")
    return ds.construct()


def subset(
    ds: lgb.Dataset, rows: np.ndarray, label: np.ndarray | None = None, weight: np.ndarray | None = None
) -> lgb.Dataset:
    """Rows ``rows`` (ascending positions) of a constructed dataset, sharing its bins.

    ``label`` and ``weight``, when given, are aligned with ``rows`` and replace the parent's.
    """
    sub = ds.subset(rows).construct()
    if label is not None:
        sub.set_label(label)
    if weight is not None:
        sub.set_weight(weight)
    return sub


def train(ds: lgb.Dataset, params: Mapping[str, Any]) -> lgb.Booster:
    """Train one booster on a constructed dataset."""
    return lgb.train(dict(params), ds)


class FeatureEncoder:
    """Turns a feature frame into a float64 matrix; categorical columns become codes of fit-time categories.

    Columns of pandas ``Categorical`` dtype keep their categories; object or string columns are treated
    as categorical with their sorted distinct values. Unknown or missing categories become NaN, which
    LightGBM treats as missing.
    """

    def fit(self, X: pd.DataFrame) -> FeatureEncoder:
        """Learn the column names and the categories of each categorical column."""
        if X.columns.has_duplicates:
            dup = X.columns[X.columns.duplicated()][0]
            raise DataError(f"feature column {dup!r} appears more than once")
        self.columns: list[Any] = list(X.columns)
        self.categories: dict[int, pd.Index] = {}
        for j, col in enumerate(self.columns):
            dtype = X[col].dtype
            if isinstance(dtype, pd.CategoricalDtype):
                self.categories[j] = dtype.categories
            elif pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
                self.categories[j] = pd.Index(sorted(map(str, X[col].dropna().unique())))
            elif not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
                raise DataError(f"feature column {col!r} has dtype {dtype}, which is neither numeric nor categorical")
        return self

    @property
    def categorical(self) -> list[int]:
        """Positions of the categorical columns."""
        return sorted(self.categories)

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """The float64 matrix of ``X`` (columns in fit order, selected by name)."""
        missing = [c for c in self.columns if c not in X.columns]
        if missing:
            raise DataError(f"feature column {missing[0]!r} seen in fit is missing (missing: {missing[:5]})")
        out = np.empty((len(X), len(self.columns)), dtype=np.float64)
        for j, col in enumerate(self.columns):
            out[:, j] = self._column(X[col], j)
        return out

    def _column(self, s: pd.Series, j: int) -> np.ndarray:
        cats = self.categories.get(j)
        if cats is None:
            try:
                return s.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                raise DataError(f"feature column {s.name!r} must be numeric, as in fit ({exc})") from None
        if isinstance(s.dtype, pd.CategoricalDtype) and s.dtype.categories.equals(cats):
            codes = s.cat.codes.to_numpy()
        else:
            values = s if isinstance(s.dtype, pd.CategoricalDtype) else s.astype("string").astype(object)
            codes = pd.Categorical(values, categories=cats).codes
        col = codes.astype(np.float64)
        col[codes < 0] = np.nan
        return col


def as_frame(X: Any) -> pd.DataFrame:
    """``X`` as a DataFrame (a 2-D array gets columns ``x0, x1, ...``)."""
    if isinstance(X, pd.DataFrame):
        return X
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise DataError(f"X must be a DataFrame or a 2-D array, got an array with {arr.ndim} dimensions")
    return pd.DataFrame(arr, columns=[f"x{j}" for j in range(arr.shape[1])])


def check_arms(arm: Any, n: int, arms: list[str] | None, control: str, min_rows: int) -> tuple[list[str], np.ndarray]:
    """The arm list (control first) and each row's arm position; errors name the bad arm."""
    values = pd.Series(np.asarray(arm, dtype=object).ravel())
    _check_length("arm", len(values), n)
    if values.isna().any():
        raise DataError(f"arm is missing at row {int(np.flatnonzero(values.isna())[0])}")
    values = values.astype(str)
    if arms is None:
        found = sorted(set(values.unique()) - {control})
        arms_ = [control, *found]
    else:
        arms_ = [str(a) for a in arms]
        if not arms_ or arms_[0] != control:
            raise ConfigError(f"arms must start with the control arm {control!r}, got {arms_[:3]}")
        if len(set(arms_)) != len(arms_):
            raise ConfigError(f"arms has duplicates: {arms_}")
    codes = pd.Index(arms_).get_indexer(values)
    if (codes < 0).any():
        bad = values.iloc[int(np.flatnonzero(codes < 0)[0])]
        raise DataError(f"unknown arm {bad!r} (known arms: {arms_})")
    if len(arms_) < 2:
        raise DataError(f"need the control arm {control!r} and at least one other arm, got {arms_}")
    counts = np.bincount(codes, minlength=len(arms_))
    for a, c in zip(arms_, counts, strict=True):
        if c < min_rows:
            raise DataError(f"arm {a!r} has {c} rows, fewer than min_arm_rows={min_rows}")
    return arms_, codes.astype(np.intp)


def check_outcome(y: Any, n: int, outcome: str | None) -> tuple[np.ndarray, str]:
    """``y`` as float64 and the outcome kind ("binary" when every value is 0 or 1 and ``outcome`` is None)."""
    if outcome is not None and outcome not in OUTCOMES:
        raise ConfigError(f"outcome must be one of {OUTCOMES} or None, got {outcome!r}")
    try:
        arr = np.asarray(y, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise DataError(f"y must be numeric ({exc})") from None
    _check_length("y", len(arr), n)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"y has a non-finite value {arr[i]} at row {i}")
    is01 = (arr == 0) | (arr == 1)
    kind = outcome or ("binary" if is01.all() else "continuous")
    if kind == "binary" and not is01.all():
        i = int(np.flatnonzero(~is01)[0])
        raise DataError(f"binary outcome y must be 0 or 1, got {arr[i]} at row {i}")
    return arr, kind


def check_propensity(propensity: Any, n: int) -> np.ndarray | None:
    """The propensity of each row's own arm as float64, checked to lie in (0, 1]."""
    if propensity is None:
        return None
    arr = np.asarray(propensity, dtype=np.float64).ravel()
    _check_length("propensity", len(arr), n)
    bad = ~((arr > 0) & (arr <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"propensity {arr[i]} at row {i} is outside (0, 1]")
    return arr


def arm_shares(codes: np.ndarray, n_arms: int, propensity: np.ndarray | None) -> np.ndarray:
    """Per-arm assignment probability: mean known propensity of the arm's rows, else its share of rows."""
    counts = np.bincount(codes, minlength=n_arms).astype(np.float64)
    if propensity is None:
        return counts / counts.sum()
    return np.bincount(codes, weights=propensity, minlength=n_arms) / counts


def _check_length(name: str, got: int, n: int) -> None:
    if got != n:
        raise DataError(f"{name} has {got} rows but X has {n}")


class UpliftLearnerBase(BaseEstimator):
    """Common ``fit``/``predict`` of the multi-arm learners; subclasses implement ``_fit``/``_predict``.

    Fitted attributes: ``arms_`` (control first), ``outcome_``, ``lgb_params_``, ``encoder_``,
    ``n_features_in_``, ``feature_names_in_``.
    """

    def __init__(
        self,
        control: str = CONTROL_ARM,
        arms: list[str] | None = None,
        outcome: str | None = None,
        params: dict[str, Any] | None = None,
        random_state: int | None = 0,
        min_arm_rows: int = 20,
    ):
        self.control = control
        self.arms = arms
        self.outcome = outcome
        self.params = params
        self.random_state = random_state
        self.min_arm_rows = min_arm_rows

    def fit(self, X: Any, arm: Any, y: Any, propensity: Any = None) -> UpliftLearnerBase:
        """Validate the inputs and learn the models.

        Args:
            X: features, one row per unit (DataFrame; categorical dtype columns are used natively).
            arm: the arm id each unit got.
            y: the outcome (0/1 for a binary outcome).
            propensity: the known probability of each unit's own arm (randomized data), or None.
        """
        frame = as_frame(X)
        n = len(frame)
        self.arms_, codes = check_arms(arm, n, self.arms, self.control, self.min_arm_rows)
        y_arr, self.outcome_ = check_outcome(y, n, self.outcome)
        prop = check_propensity(propensity, n)
        self.encoder_ = FeatureEncoder().fit(frame)
        self.n_features_in_ = len(self.encoder_.columns)
        self.feature_names_in_ = np.asarray(self.encoder_.columns, dtype=object)
        self.lgb_params_ = lgb_params(self.params, self.outcome_, self.random_state)
        self._fit(self.encoder_.transform(frame), codes, y_arr, prop)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Expected outcome under each arm, shape (n, n_arms), columns in ``arms_`` order.

        For a binary outcome these are probabilities, clipped to [0, 1].
        """
        self._check_fitted()
        return self._levels(self.encoder_.transform(as_frame(X)))

    def predict_uplift(self, X: Any) -> np.ndarray:
        """Each treatment arm minus control, shape (n, n_arms - 1), columns in ``arms_[1:]`` order."""
        self._check_fitted()
        return self._predict_uplift(self.encoder_.transform(as_frame(X)))

    def _score(self, model: lgb.Booster, X: np.ndarray) -> np.ndarray:
        """``model.predict(X)`` with the thread count of ``params`` (LightGBM's default when 0)."""
        threads = int(self.lgb_params_.get("num_threads") or 0)
        return model.predict(X, num_threads=threads) if threads > 0 else model.predict(X)

    def _levels(self, X: np.ndarray) -> np.ndarray:
        out = self._predict(X)
        if self.outcome_ == "binary":
            np.clip(out, 0.0, 1.0, out=out)
        return out

    def _predict_uplift(self, X: np.ndarray) -> np.ndarray:
        """Uplift from the feature matrix; the default is the difference of the ``predict`` columns."""
        pred = self._levels(X)
        return pred[:, 1:] - pred[:, :1]

    def _check_fitted(self) -> None:
        if not hasattr(self, "arms_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X, arm, y) before predict")

    def _fit(self, X: np.ndarray, codes: np.ndarray, y: np.ndarray, prop: np.ndarray | None) -> None:
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError
