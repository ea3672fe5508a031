"""The online feature store: each customer's latest features, for serving.

SQLite is the embedded default (one file, WAL mode, safe for several reader processes). Values are written by the
same feature builder that makes training tables (`offerlift.features.build`), so training and serving cannot drift; the
store only keeps them. Each row holds a customer id, the time the features are valid for, and the features as
JSON (NaN stored as null).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.errors import DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    customer_id TEXT PRIMARY KEY,
    as_of REAL NOT NULL,
    payload TEXT NOT NULL
)
"""


def _plain(v: Any) -> Any:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


class OnlineStore:
    """Latest features per customer in SQLite.

    >>> store = OnlineStore(":memory:")
    >>> store.put_frame(pd.DataFrame({"recency": [3.0]}, index=pd.Index(["c1"], name="customer_id")), as_of=10.0)
    1
    >>> store.get("c1")["recency"]
    3.0
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._local = threading.local()
        self._conn().execute(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def put_frame(self, frame: pd.DataFrame, as_of: float | pd.Series) -> int:
        """Upsert one row per customer (index = customer_id); returns the number of rows written."""
        if frame.index.has_duplicates:
            dup = frame.index[frame.index.duplicated()][:5].tolist()
            raise DataError(f"online store: duplicate customer ids {dup}")
        times = as_of if isinstance(as_of, pd.Series) else pd.Series(float(as_of), index=frame.index)
        cols = list(frame.columns)
        values = frame.astype(object).to_numpy()
        rows = [
            (str(cid), float(times.loc[cid]), json.dumps({c: _plain(v) for c, v in zip(cols, row, strict=True)}))
            for cid, row in zip(frame.index, values, strict=True)
        ]
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO features(customer_id, as_of, payload) VALUES (?, ?, ?) "
                "ON CONFLICT(customer_id) DO UPDATE SET as_of=excluded.as_of, payload=excluded.payload "
                "WHERE excluded.as_of >= features.as_of",
                rows,
            )
        return len(rows)

    def get(self, customer_id: str) -> dict[str, Any] | None:
        """The latest features of one customer, or None when unknown."""
        row = self._conn().execute("SELECT payload FROM features WHERE customer_id = ?", (customer_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def get_many(self, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Features of several customers (unknown ones are left out)."""
        ids = list(customer_ids)
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            q = f"SELECT customer_id, payload FROM features WHERE customer_id IN ({marks})"
            out.update({cid: json.loads(p) for cid, p in self._conn().execute(q, chunk)})
        return out

    def to_frame(self, columns: Iterable[str] | None = None) -> pd.DataFrame:
        """Everything in the store as a frame indexed by customer_id (for checks and batch jobs)."""
        rows = self._conn().execute("SELECT customer_id, payload FROM features ORDER BY customer_id").fetchall()
        frame = pd.DataFrame.from_records([json.loads(p) for _, p in rows], index=[c for c, _ in rows])
        frame.index.name = "customer_id"
        return frame if columns is None else frame.reindex(columns=list(columns))

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM features").fetchone()[0])

    def close(self) -> None:
        """Close this thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def refresh_store(
    store: OnlineStore,
    events: pd.DataFrame,
    customers: pd.DataFrame,
    at: float | None = None,
    keep_extra: bool = True,
) -> int:
    """Write every customer's features as of `at` (default: after the last event) with the shared builder.

    With `keep_extra`, columns the builder does not make (segments, tags, the abuse risk merged in by
    ``offerlift segments|abuse --to-store``) are carried over from each customer's stored row, so a refresh does not
    drop them; builder columns are always replaced.
    """
    from offerlift.features.build import latest_features

    frame = latest_features(events, customers, at=at)
    frame.index.name = "customer_id"
    if keep_extra and len(store):
        stored = store.to_frame()
        extra = [c for c in stored.columns if c not in frame.columns]
        if extra:
            frame = frame.join(stored[extra], how="left")
    when = float(at) if at is not None else float(pd.to_numeric(events["time"]).max()) if len(events) else 0.0
    return store.put_frame(frame, as_of=when)


def records_equal(a: Mapping[str, Any], b: Mapping[str, Any], tol: float = 1e-9) -> bool:
    """Feature dicts equal up to float tolerance (None equals NaN)."""
    if set(a) != set(b):
        return False
    for k in a:
        x, y = _plain(a[k]), _plain(b[k])
        if isinstance(x, float) and isinstance(y, float):
            if abs(x - y) > tol * max(1.0, abs(x)):
                return False
        elif x != y:
            return False
    return True
