"""Extra columns in the online store: segments, tags and the abuse risk, for the service's segment and abuse rules.

`merge_columns` merges columns into each customer's stored features (SQLite's ``json_patch``: the other features
stay as they are, a NaN removes the column) and adds customers the store does not know yet. ``offerlift segments
--to-store`` and ``offerlift abuse --to-store`` call it. A full refresh of the store
(`offerlift.features.store.refresh_store`) keeps the columns it does not build itself (``keep_extra``), so they
survive a refresh.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.errors import DataError
from offerlift.features.store import OnlineStore

log = logging.getLogger(__name__)


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list | np.ndarray):
        return [_plain(x) for x in v]
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, np.bool_ | bool):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return None if math.isnan(v) else float(v)
    return v if isinstance(v, int | str) else str(v)


def merge_columns(store_path: str | Path, frame: pd.DataFrame, as_of: float) -> dict[str, int]:
    """Merge the columns of `frame` (index customer_id) into the online store; returns updated and inserted rows.

    New customers get a row valid as of `as_of`; known ones keep their ``as_of``.
    """
    if frame.index.has_duplicates:
        raise DataError(f"online store columns: duplicate customer ids {frame.index[frame.index.duplicated()][:5]}")
    OnlineStore(store_path).close()  # creates the table when the store is new
    cols = [str(c) for c in frame.columns]
    patches = [
        (str(cid), json.dumps({c: _plain(v) for c, v in zip(cols, row, strict=True)}))
        for cid, row in zip(frame.index, frame.astype(object).to_numpy(), strict=True)
    ]
    conn = sqlite3.connect(str(store_path), timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        before = conn.total_changes
        conn.executemany(
            "UPDATE features SET payload = json_patch(payload, ?) WHERE customer_id = ?", [(p, c) for c, p in patches]
        )
        updated = conn.total_changes - before
        conn.executemany(
            "INSERT OR IGNORE INTO features (customer_id, as_of, payload) VALUES (?, ?, json_patch('{}', ?))",
            [(c, float(as_of), p) for c, p in patches],
        )
        inserted = conn.total_changes - before - updated
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
    log.info("online store %s: %d customers updated, %d added (%s)", store_path, updated, inserted, ", ".join(cols))
    return {"updated": updated, "inserted": inserted}
