"""The canonical tables and their validation.

Every loader returns the same four tables, and every table passes :func:`validate` before it leaves a loader.
Times are hours (float) since the data set's own epoch.

- customers:   customer_id (unique) and descriptive columns (features come from `offerlift.features.build`).
- assignments: unit_id (unique), customer_id, time, arm, propensity in (0, 1], group.
- outcomes:    unit_id, customer_id, time, visit, buy, spend, redeem (one row per unit; extra columns allowed).

Validation errors are :class:`offerlift.features.errors.SchemaError` and name the table, the column and the first bad
rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from offerlift.features.errors import SchemaError

GROUPS = ("experiment", "holdout", "explore", "exploit")


@dataclass(frozen=True)
class Column:
    """One required column: its name and kind ('str', 'float', 'int', 'binary')."""

    name: str
    kind: str
    unique: bool = False


TABLES: dict[str, tuple[Column, ...]] = {
    "customers": (Column("customer_id", "str", unique=True),),
    "assignments": (
        Column("unit_id", "str", unique=True),
        Column("customer_id", "str"),
        Column("time", "float"),
        Column("arm", "str"),
        Column("propensity", "float"),
        Column("group", "str"),
    ),
    "outcomes": (
        Column("unit_id", "str", unique=True),
        Column("customer_id", "str"),
        Column("time", "float"),
        Column("visit", "binary"),
        Column("buy", "binary"),
        Column("spend", "float"),
        Column("redeem", "binary"),
    ),
}


def _bad_rows(df: pd.DataFrame, mask: np.ndarray | pd.Series) -> list[object]:
    return list(df.index[np.asarray(mask, dtype=bool)][:5])


def _check_kind(df: pd.DataFrame, table: str, col: Column) -> None:
    s = df[col.name]
    missing = s.isna().to_numpy()
    if missing.any():
        raise SchemaError(table, col.name, "missing values", _bad_rows(df, missing))
    if col.kind == "str":
        if not (pd.api.types.is_string_dtype(s) or pd.api.types.is_object_dtype(s)):
            raise SchemaError(table, col.name, f"expected text, got dtype {s.dtype}")
        not_str = ~s.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if not_str.any():
            raise SchemaError(table, col.name, "expected text values", _bad_rows(df, not_str))
        return
    if not pd.api.types.is_numeric_dtype(s) or (pd.api.types.is_bool_dtype(s) and col.kind != "binary"):
        raise SchemaError(table, col.name, f"expected numbers, got dtype {s.dtype}")
    values = s.to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise SchemaError(table, col.name, "non-finite values", _bad_rows(df, ~np.isfinite(values)))
    if col.kind == "binary":
        bad = ~np.isin(values, (0.0, 1.0))
        if bad.any():
            raise SchemaError(table, col.name, "expected 0/1 values", _bad_rows(df, bad))


def timed_table(df: pd.DataFrame, table: str, columns: Iterable[str], time_column: str = "time") -> np.ndarray:
    """Check that `df` is a frame with `columns` and finite times; returns the times as float.

    SchemaError names the table, the missing column, or the rows whose time is missing or not finite.
    """
    if not isinstance(df, pd.DataFrame):
        raise SchemaError(table, None, f"expected a pandas DataFrame, got {type(df).__name__}")
    for col in columns:
        if col not in df.columns:
            raise SchemaError(table, col, f"missing column; the table has {list(df.columns)}")
    time = pd.to_numeric(df[time_column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(time)
    if bad.any():
        raise SchemaError(table, time_column, "missing or non-finite time", list(df.index[bad]))
    return time


def validate_table(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Check one table against its required columns; returns it unchanged or raises SchemaError."""
    if table not in TABLES:
        raise SchemaError(table, None, f"unknown table; known tables are {sorted(TABLES)}")
    if not isinstance(df, pd.DataFrame):
        raise SchemaError(table, None, f"expected a pandas DataFrame, got {type(df).__name__}")
    for col in TABLES[table]:
        if col.name not in df.columns:
            raise SchemaError(table, col.name, f"missing column; the table has {list(df.columns)}")
        _check_kind(df, table, col)
        if col.unique:
            dup = df[col.name].duplicated(keep="first").to_numpy()
            if dup.any():
                raise SchemaError(table, col.name, "duplicate ids", _bad_rows(df, dup))
    if table == "assignments":
        p = df["propensity"].to_numpy(dtype=float)
        bad = (p <= 0.0) | (p > 1.0)
        if bad.any():
            raise SchemaError(table, "propensity", "propensity outside (0, 1]", _bad_rows(df, bad))
        bad = ~df["group"].isin(GROUPS).to_numpy()
        if bad.any():
            raise SchemaError(table, "group", f"unknown group; expected one of {list(GROUPS)}", _bad_rows(df, bad))
    if table == "outcomes":
        bad = df["spend"].to_numpy(dtype=float) < 0
        if bad.any():
            raise SchemaError(table, "spend", "negative spend", _bad_rows(df, bad))
    return df


def validate_arms(assignments: pd.DataFrame, arms: Iterable[str]) -> None:
    """Every assigned arm must be in the catalog."""
    known = set(arms)
    bad = ~assignments["arm"].isin(known).to_numpy()
    if bad.any():
        raise SchemaError(
            "assignments", "arm", f"unknown arm; the catalog has {sorted(known)}", _bad_rows(assignments, bad)
        )


def validate_outcomes_follow(assignments: pd.DataFrame, outcomes: pd.DataFrame) -> None:
    """Every outcome belongs to a known unit and does not come before its assignment."""
    start = assignments.set_index("unit_id")["time"]
    at = outcomes["unit_id"].map(start)
    orphan = at.isna().to_numpy()
    if orphan.any():
        raise SchemaError("outcomes", "unit_id", "outcome for a unit with no assignment", _bad_rows(outcomes, orphan))
    early = outcomes["time"].to_numpy(dtype=float) < at.to_numpy(dtype=float)
    if early.any():
        raise SchemaError("outcomes", "time", "outcome before its assignment", _bad_rows(outcomes, early))


def validate_experiment(
    customers: pd.DataFrame, assignments: pd.DataFrame, outcomes: pd.DataFrame, arms: Iterable[str]
) -> None:
    """Validate the three tables of an experiment and the links between them."""
    validate_table(customers, "customers")
    validate_table(assignments, "assignments")
    validate_table(outcomes, "outcomes")
    validate_arms(assignments, arms)
    unknown = ~assignments["customer_id"].isin(customers["customer_id"]).to_numpy()
    if unknown.any():
        raise SchemaError("assignments", "customer_id", "unknown customer", _bad_rows(assignments, unknown))
    validate_outcomes_follow(assignments, outcomes)
