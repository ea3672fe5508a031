"""Reading user-supplied tables (CSV or Parquet) with errors that name the file, the column and the row."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from offerlift.features.errors import DataError, SchemaError


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file; the index is the 0-based data row (CSV line = row + 2)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such file: {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".gz"):
            df = pd.read_csv(path)
        else:
            raise DataError(f"{str(path)!r}: unknown file type {suffix!r}; use .csv or .parquet")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"cannot read {str(path)!r}: it is not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at "
            f"offset {exc.start}); save it as UTF-8 CSV or Parquet"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{str(path)!r} is empty: no header and no rows") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from exc
    if len(df) == 0:
        raise DataError(f"{str(path)!r} has a header ({', '.join(map(str, df.columns))}) but no rows")
    return df.reset_index(drop=True)


def require_columns(df: pd.DataFrame, table: str, columns: Iterable[str]) -> None:
    """SchemaError naming the first missing column."""
    for col in columns:
        if col not in df.columns:
            raise SchemaError(table, col, f"missing column; the file has {list(df.columns)}")


def require_no_missing(df: pd.DataFrame, table: str, columns: Iterable[str]) -> None:
    """SchemaError naming the column and first rows with missing values."""
    for col in columns:
        bad = df[col].isna().to_numpy()
        if bad.any():
            raise SchemaError(table, col, "missing values", list(df.index[bad][:5]))


def require_numeric(df: pd.DataFrame, table: str, columns: Iterable[str]) -> None:
    """SchemaError naming the column and the first rows that are not numbers."""
    for col in columns:
        s = df[col]
        if pd.api.types.is_bool_dtype(s):
            continue
        if pd.api.types.is_numeric_dtype(s):
            values = s.to_numpy(dtype=float)
            bad = ~np.isfinite(values) & s.notna().to_numpy()
        else:
            bad = pd.to_numeric(s, errors="coerce").isna().to_numpy() & s.notna().to_numpy()
            if not bad.any():
                continue
        if bad.any():
            rows = list(df.index[bad][:5])
            raise SchemaError(table, col, f"expected numbers, found {s[bad].iloc[0]!r}", rows)


def as_model_features(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns become pandas Categoricals; booleans become 0/1; numbers stay."""
    out = {}
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_bool_dtype(s):
            out[col] = s.astype("int8")
        elif pd.api.types.is_numeric_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
            out[col] = s
        else:
            out[col] = s.astype("string").astype("category")
    return pd.DataFrame(out, index=df.index)
