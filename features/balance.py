"""Covariate balance of a randomized experiment: standardized mean differences of every feature, arm vs control.

Definition (pooled SD, as in Austin 2009 for continuous covariates)::

    SMD(x, arm) = (mean_arm(x) - mean_control(x)) / sqrt((var_arm(x) + var_control(x)) / 2)

with sample variances (ddof=1) over the non-missing values of each group. The same formula is used for 0/1
indicators. Numeric and boolean columns are used as they are; categorical and text columns are one-hot encoded
(one row ``"<column>=<level>"`` per level). Missingness gets its own 0/1 row ``"<column>=<missing>"`` for every
column that has missing values, so an imbalance in who is missing is visible too. When both groups are constant
the SMD is 0 if their means agree and +-inf if they differ; an arm with fewer than two units gives NaN.
Rule of thumb: |SMD| < 0.1 is negligible imbalance.

When units are randomized only among the arms they can get (an arm on a channel the customer has not consented
to is never drawn), an arm must be compared with the control units that could have got it: `support` (one
boolean column per arm) restricts each arm's control group so. Without it, an arm on a channel that needs
consent looks imbalanced on the consent flag by construction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from offerlift.features.errors import DataError

MISSING = "<missing>"


def _design(features: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns as float, categoricals and text one-hot, plus missing indicators; NaN kept in numbers."""
    cols: dict[str, pd.Series] = {}
    for col in features.columns:
        s = features[col]
        missing = s.isna()
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            cols[str(col)] = s.astype(float)
        else:
            levels = s.cat.categories if isinstance(s.dtype, pd.CategoricalDtype) else sorted(s.dropna().unique())
            for level in levels:
                cols[f"{col}={level}"] = (s == level).astype(float)
        if missing.any():
            cols[f"{col}={MISSING}"] = missing.astype(float)
    return pd.DataFrame(cols, index=features.index)


def _smd(mean_a: pd.Series, var_a: pd.Series, mean_c: pd.Series, var_c: pd.Series) -> pd.Series:
    diff = mean_a - mean_c
    pooled = np.sqrt((var_a + var_c) / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = diff / pooled
    constant = (pooled == 0) & (diff == 0)
    return out.mask(constant, 0.0)


def balance_table(
    features: pd.DataFrame, arms: pd.Series, control: str, support: pd.DataFrame | None = None
) -> pd.DataFrame:
    """SMD of each feature (numeric, one-hot level or missing indicator) for every arm against `control`.

    Args:
        features: one row per unit (numeric, boolean, categorical or text columns).
        arms: the arm of each unit, with the same index as `features` (or the same length, then by position).
        control: the reference arm.
        support: optional, same rows as `features`, a boolean column per arm: the units that could have got that
            arm; each arm is then compared with the control units in its support (arms without a column: all).

    Returns:
        One row per feature row (see the module doc for names), one column per non-control arm (sorted), and
        ``max_abs_smd``, the largest |SMD| over the arms.
    """
    if not isinstance(features, pd.DataFrame):
        raise DataError(f"features must be a pandas DataFrame, got {type(features).__name__}")
    arms = pd.Series(arms)
    if not arms.index.equals(features.index):
        if len(arms) != len(features):
            raise DataError(f"arms has {len(arms)} rows but features has {len(features)}")
        arms = pd.Series(arms.to_numpy(), index=features.index)
    if arms.isna().any():
        raise DataError(f"arms has {int(arms.isna().sum())} missing values")
    names = sorted(pd.unique(arms.astype(str)))
    if control not in names:
        raise DataError(f"control arm {control!r} has no units; the arms are {names}")
    x = _design(features)
    key = arms.astype(str).to_numpy()
    means, variances = x.groupby(key).mean(), x.groupby(key).var(ddof=1)
    is_control = key == control
    columns = {}
    for arm in names:
        if arm == control:
            continue
        mean_c, var_c = means.loc[control], variances.loc[control]
        if support is not None and arm in support.columns:
            in_support = is_control & np.asarray(support[arm], dtype=bool)
            if in_support.sum() >= 2:
                mean_c, var_c = x[in_support].mean(), x[in_support].var(ddof=1)
        columns[arm] = _smd(means.loc[arm], variances.loc[arm], mean_c, var_c)
    out = pd.DataFrame(columns, index=x.columns)
    out.index.name = "feature"
    out["max_abs_smd"] = out.abs().max(axis=1)
    return out
