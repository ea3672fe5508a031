"""Outcome events from a file (CSV or Parquet) in the canonical schema, validated.

One row per outcome event: ``event_id`` (unique per event; the same id delivered twice is one event),
``customer_id``, ``ts`` (unix seconds, or an ISO 8601 time with a zone; naive times are UTC), ``visit``, ``buy``,
``redeem`` (0 or 1), ``spend`` (>= 0) and optionally ``decision_id`` (the decision the event answers; empty when
unknown: the attribution join finds it by customer and time). Other columns are refused, so a misspelt column
is not silently dropped. Errors name the file, the column and the first bad rows, counted from 1 over the data
rows (row 1 is the first line after a CSV header).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from offerlift.features.errors import SchemaError
from offerlift.features.tables import read_table

REQUIRED = ("event_id", "customer_id", "ts", "visit", "buy", "spend", "redeem")
OPTIONAL = ("decision_id",)
BINARY = ("visit", "buy", "redeem")


def _rows(mask: np.ndarray) -> list[int]:
    return (np.flatnonzero(mask)[:5] + 1).tolist()


def _text(df: pd.DataFrame, where: str, col: str, required: bool) -> pd.Series:
    s = df[col]
    missing = s.isna().to_numpy() | (s.astype(str).str.strip() == "").to_numpy()
    if required and missing.any():
        raise SchemaError(where, col, "missing values", _rows(missing))
    out = s.astype("string").str.strip()
    too_long = (out.str.len() > (36 if col == "decision_id" else 128)).fillna(False).to_numpy()
    if too_long.any():
        raise SchemaError(where, col, "values longer than the decision log allows", _rows(too_long))
    values = out.astype(object).to_numpy().copy()
    values[missing] = None
    return pd.Series(values, index=df.index, dtype=object)


def _times(s: pd.Series, where: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(s):
        ts = s.to_numpy(dtype=float)
    elif pd.api.types.is_datetime64_any_dtype(s):
        ts = _epoch(s)
    else:
        ts = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float).copy()
        text = np.isnan(ts)
        if text.any():
            ts[text] = _epoch(pd.to_datetime(s[text], errors="coerce", utc=True, format="ISO8601"))
    bad = ~np.isfinite(ts)
    if bad.any():
        raise SchemaError(where, "ts", "expected unix seconds or an ISO 8601 time", _rows(bad))
    return ts


def _epoch(s: pd.Series) -> np.ndarray:
    s = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
    out = (s - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return out.to_numpy(dtype=float, na_value=np.nan)


def read_outcome_file(path: str | Path) -> pd.DataFrame:
    """The file's events as a frame with the canonical columns (``decision_id`` None where not given)."""
    path = Path(path)
    where = str(path)
    raw = read_table(path)
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise SchemaError(where, missing[0], f"missing column; the file has {list(raw.columns)}")
    unknown = [c for c in raw.columns if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise SchemaError(where, str(unknown[0]), f"unknown column; the columns are {list(REQUIRED + OPTIONAL)}")
    out = pd.DataFrame(
        {
            "event_id": _text(raw, where, "event_id", True),
            "customer_id": _text(raw, where, "customer_id", True),
            "ts": _times(raw["ts"], where),
        }
    )
    for col in ("visit", "buy", "spend", "redeem"):
        values = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values < 0)
        if col in BINARY:
            bad |= ~np.isin(values, (0.0, 1.0))
        if bad.any():
            want = "0 or 1" if col in BINARY else "a number >= 0"
            raise SchemaError(where, col, f"expected {want}, found {raw[col][bad].iloc[0]!r}", _rows(bad))
        out[col] = values
    out["decision_id"] = _text(raw, where, "decision_id", False) if "decision_id" in raw else None
    return out
