"""Training on data larger than one machine's memory: S- or T-learner outcome boosters with lightgbm.dask.

`fit_dask_spec` takes a dask DataFrame of units (feature columns, the assigned arm, outcome columns), fits one
distributed LightGBM model per outcome (S-learner: features plus the arm's features, all arms in one model) or
per outcome and arm (T-learner), with the same LightGBM parameters as `offerlift.training.learners`, and exports them to
the scorer spec that `offerlift.models.scoring.ArmScorer` runs (the format of `offerlift.training.export.scorer_spec`).

On one machine, `offerlift.training.train_large.fit_large_spec` is faster and leaner (benchmarks/results/batch.md: 1M
rows in 28s at 0.9 GB against 41s at 2.2 GB here, on a LocalCluster of 1 worker x 2 threads).

Without a client, the current dask client is used (``distributed.default_client()``); start one with
``distributed.Client(LocalCluster(...))`` or a scheduler address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError, DataError
from offerlift.models.scoring import FORMAT, ArmScorer, FeatureSpec
from offerlift.training.learners_base import lgb_params

log = logging.getLogger(__name__)


def dask_feature_spec(data: Any, columns: Sequence[str]) -> FeatureSpec:
    """The FeatureSpec of dask columns: known categoricals keep their categories, text columns get their sorted
    distinct values (one pass over the data), numbers stay numbers (as `FeatureSpec.from_frame`)."""
    meta = data._meta
    cats: dict[str, tuple[str, ...]] = {}
    for col in columns:
        dtype = meta[col].dtype
        if isinstance(dtype, pd.CategoricalDtype) and data[col].cat.known:
            cats[col] = tuple(str(c) for c in dtype.categories)
        elif not pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            values = data[col].dropna().astype(str).unique().compute()
            cats[col] = tuple(sorted(str(v) for v in values))
    return FeatureSpec(tuple(columns), cats)


def arm_table(catalog: Catalog) -> np.ndarray:
    """The S-learner's arm features: one-hot of the treatment arms and the coupon value (as `SLearner`)."""
    m = len(catalog.arms)
    values = np.array([a.coupon_value for a in catalog.arms], dtype=float)[:, None]
    return np.hstack([np.eye(m)[:, 1:], values])


def _encode(data: Any, spec: FeatureSpec, table: np.ndarray | None, arm_ids: list[str]) -> Any:
    """A dask DataFrame of float64 features (plus the arm features for the S-learner), one block per partition.

    Not float32: LightGBM bins float32 values differently (values float32 cannot tell apart merge), so the model
    is not `fit_spec`'s: on 4,000 simulated units, spend predictions up to 29 apart (correlation 0.997), with
    plain `lgb.train` as with lightgbm.dask.
    """
    p = len(spec.columns)
    names = [f"f{j}" for j in range(p)]
    extra = [] if table is None else [f"a{j}" for j in range(table.shape[1])]
    codes = {a: i for i, a in enumerate(arm_ids)}

    def encode(frame: pd.DataFrame) -> pd.DataFrame:
        out = np.empty((len(frame), p + len(extra)), dtype=np.float64)
        out[:, :p] = spec.encode(frame)
        if table is not None:
            out[:, p:] = table[frame["arm"].map(codes).to_numpy(dtype=np.int64)]
        return pd.DataFrame(out, columns=names + extra, index=frame.index)

    meta = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in names + extra})
    return data.map_partitions(encode, meta=meta)


def _binary(data: Any, outcomes: Sequence[str]) -> dict[str, bool]:
    import dask

    flags = dask.compute(*[(data[o].isin([0, 1]) | data[o].isna()).all() for o in outcomes])
    return {o: bool(f) for o, f in zip(outcomes, flags, strict=True)}


def _fit(X: Any, y: Any, params: Mapping[str, Any], categorical: list[int], client: Any) -> str:
    import lightgbm.dask as ldask

    sk_names = {"num_iterations": "n_estimators", "seed": "random_state"}
    kw = {sk_names.get(k, k): v for k, v in params.items() if k not in ("num_threads", "objective")}
    model = ldask.DaskLGBMRegressor(client=client, objective=params["objective"], **kw)
    model.fit(X, y, categorical_feature=categorical or "auto")
    return model.booster_.model_to_string()


def fit_dask_spec(
    data: Any,
    catalog: Catalog,
    outcomes: Sequence[str],
    value_outcome: str,
    feature_columns: Sequence[str],
    learner: str = "t",
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    client: Any = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit the outcome boosters on a dask DataFrame and return the scorer spec.

    Args:
        data: dask DataFrame, one row per unit: `feature_columns`, ``arm`` (arm ids of `catalog`), `outcomes`.
        catalog: the arms (control first).
        outcomes: outcome columns to model; 0/1 columns get a binary objective and predictions clipped to [0, 1].
        value_outcome: the outcome that carries money value (one of `outcomes`).
        feature_columns: model features, in order.
        learner: "s" (one model per outcome) or "t" (one model per outcome and arm).
        params: LightGBM parameters over `offerlift.training.learners_base.DEFAULT_LGB_PARAMS`.
        seed: LightGBM seed.
        client: a dask distributed Client (default: the current one).
        metadata: stored in the spec.
    """
    if learner not in ("s", "t"):
        raise ConfigError(f"fit_dask_spec fits the S- or T-learner; got learner={learner!r}")
    if value_outcome not in outcomes:
        raise ConfigError(f"value_outcome {value_outcome!r} is not among the outcomes {list(outcomes)}")
    missing = [c for c in [*feature_columns, "arm", *outcomes] if c not in data.columns]
    if missing:
        raise DataError(f"columns missing from the training data: {missing}")
    if client is None:
        from distributed import default_client

        client = default_client()
    t0 = time.perf_counter()
    spec_f = dask_feature_spec(data, feature_columns)
    arm_ids = catalog.arm_ids
    table = arm_table(catalog) if learner == "s" else None
    X = _encode(data, spec_f, table, arm_ids)
    categorical = spec_f.categorical_indices
    binary = _binary(data, outcomes)
    specs: dict[str, dict[str, Any]] = {}
    for name in outcomes:
        params_o = lgb_params(params, "binary" if binary[name] else "continuous", seed)
        clip = [0.0, 1.0] if binary[name] else None
        y = data[name].astype(float)
        if learner == "s":
            specs[name] = {"kind": "s", "boosters": [_fit(X, y, params_o, categorical, client)], "clip": clip}
            specs[name]["arm_table"] = table.tolist()
        else:
            boosters = []
            for arm in arm_ids:
                rows = data["arm"] == arm
                boosters.append(_fit(X[rows], y[rows], params_o, categorical, client))
            specs[name] = {"kind": "t", "boosters": boosters, "clip": clip}
        log.info("fitted %s (%s-learner) in %.1fs", name, learner, time.perf_counter() - t0)
    spec = {
        "format": FORMAT,
        "arms": arm_ids,
        "catalog": catalog.to_dict(),
        "feature_spec": spec_f.to_dict(),
        "outcomes": specs,
        "value_outcome": value_outcome,
        "metadata": {
            **dict(metadata or {}),
            "trainer": "lightgbm.dask",
            "learner": learner,
        },
    }
    ArmScorer(spec)  # the spec must load
    return spec
