"""Bring your own experiment: any randomized test in a CSV or Parquet file.

The file has one row per unit, a treatment column (the arm), a control label, an outcome column and optionally a
value column (the money value of the outcome) and a propensity column. Every other column is a feature unless a
feature list is given. Propensities, when not in the file, are the arm shares (complete randomization).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.features.errors import DataError, SchemaError
from offerlift.features.experiment import Experiment
from offerlift.features.tables import (
    as_model_features,
    read_table,
    require_columns,
    require_no_missing,
    require_numeric,
)


def _catalog(name: str, arms: Sequence[str], control: str, cost: float) -> Catalog:
    offers = [{"id": a, "coupon_value": 0.0, "redeem_cost": 0.0} for a in arms if a != control]
    return Catalog.from_dict(
        {
            "name": name,
            "control_arm": control,
            "margin": 1.0,
            "offers": offers,
            "channels": [{"id": "default", "contact_cost": float(cost)}],
            "arms": [{"id": o["id"], "offer": o["id"], "channel": "default"} for o in offers],
        }
    )


def experiment_from_frame(
    raw: pd.DataFrame,
    treatment: str,
    control: str,
    outcome: str,
    value: str | None = None,
    features: Sequence[str] | None = None,
    cost: float = 0.0,
    propensity: str | None = None,
    name: str = "experiment",
) -> Experiment:
    """Build an Experiment from one row per unit.

    The reward of a unit is the value column when given, else the outcome; `cost` is the cost of treating one
    unit (the contact cost of every treatment arm). Errors name the column and the first bad rows.
    """
    table = name
    extra = [c for c in (value, propensity) if c]
    require_columns(raw, table, [treatment, outcome, *extra, *(features or [])])
    require_no_missing(raw, table, [treatment, outcome, *extra])
    require_numeric(raw, table, [outcome, *extra])
    if cost < 0 or not np.isfinite(cost):
        raise DataError(f"cost must be a non-negative number, got {cost!r}")
    labels = raw[treatment].astype(str)
    seen = sorted(labels.unique())
    if str(control) not in seen:
        raise SchemaError(table, treatment, f"control label {control!r} not found; labels are {seen}")
    if len(seen) < 2:
        raise SchemaError(table, treatment, f"needs at least two arms, found {seen}")
    arms = [str(control)] + [a for a in seen if a != str(control)]
    n = len(raw)
    ids = np.array([f"u{i}" for i in range(n)])
    if propensity:
        p = pd.to_numeric(raw[propensity]).to_numpy(dtype=float)
    else:
        p = labels.map(labels.value_counts(normalize=True)).to_numpy(dtype=float)
    y = pd.to_numeric(raw[outcome]).to_numpy(dtype=float)
    binary = bool(np.isin(y, (0.0, 1.0)).all())
    spend = pd.to_numeric(raw[value]).to_numpy(dtype=float) if value else y
    if value is None and not binary and (y < 0).any():
        spend = np.clip(y, 0, None)
    assignments = pd.DataFrame(
        {
            "unit_id": ids,
            "customer_id": ids,
            "time": 0.0,
            "arm": labels.to_numpy(),
            "propensity": p,
            "group": "experiment",
        }
    )
    outcomes = pd.DataFrame(
        {
            "unit_id": ids,
            "customer_id": ids,
            "time": 1.0,
            "visit": (y > 0).astype(float),
            "buy": (y > 0).astype(float) if not binary else y,
            "spend": np.clip(spend, 0, None),
            "redeem": 0.0,
            "outcome": y,
            "reward": spend,
        }
    )
    feat_cols = list(features) if features else [c for c in raw.columns if c not in {treatment, outcome, *extra}]
    exp = Experiment(
        name=name,
        catalog=_catalog(name, arms, str(control), cost),
        customers=pd.DataFrame({"customer_id": ids}),
        assignments=assignments,
        outcomes=outcomes,
        features=as_model_features(raw[feat_cols].set_axis(pd.Index(ids, name="unit_id"))),
        main_outcome="outcome",
        meta={
            "treatment": treatment,
            "outcome": outcome,
            "value": value,
            "binary_outcome": binary,
            "cost": cost,
        },
    )
    return exp.validate()


def load_experiment_file(path: str | Path, **kwargs) -> Experiment:
    """Read a CSV or Parquet experiment file; keyword arguments as in `experiment_from_frame`."""
    raw = read_table(path)
    kwargs.setdefault("name", Path(path).stem)
    exp = experiment_from_frame(raw, **kwargs)
    exp.meta["source"] = str(path)
    return exp
