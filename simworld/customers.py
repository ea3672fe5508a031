"""Simulated customer files: a whole customer base of the simulated world as Parquet, for batch decisions.

`write_customer_file` writes model features, rule columns and recent contact counts, block by block, so that
files of millions of customers are cheap to make (benchmarks, tests of `offerlift batch`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from offerlift.features.build import build_features
from offerlift.simworld.world import SimWorld


def write_customer_file(
    path: str | Path, n: int, seed: int = 0, block: int = 100_000, distinct: int | None = None
) -> Path:
    """Write a simulated customer base of `n` customers with model features, rule columns and contact counts.

    Customers come in blocks of the simulated world (`offerlift.simworld.world.SimWorld`, seed derived from `seed` and
    the block), with point-in-time features at time 0 (`offerlift.features.build.build_features`, as in
    `offerlift.simworld.experiment`) and ``contacts_<channel>`` = offers received in the last 168 hours. With
    `distinct`, only that many blocks are simulated and later blocks repeat them under new customer ids
    (fast large files for benchmarks). Each block is one Parquet row group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cache: dict[int, pa.Table] = {}
    schema = None
    with _BlockWriter(path) as slot:
        for b, lo in enumerate(range(0, n, block)):
            m = min(block, n - lo)
            key = b if distinct is None else b % distinct
            table = cache.get(key) if m == block else None
            if table is None:
                table = _customer_block(m, seed * 1_000_003 + key)
                if distinct is not None and m == block:
                    cache[key] = table
            ids = pa.array([f"c{lo + i:010d}" for i in range(m)], pa.string())
            table = table.set_column(0, "customer_id", ids)
            schema = schema or table.schema
            slot.write(table.cast(schema))
    return path


class _BlockWriter:
    """A ParquetWriter opened on the first table (its schema comes from the data)."""

    def __init__(self, path: Path):
        self.path, self.writer = path, None

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table, row_group_size=table.num_rows)

    def __enter__(self) -> _BlockWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()


def _customer_block(n: int, seed: int) -> pa.Table:
    world = SimWorld.default(n, seed=seed)
    history = world.history_events()
    ids = world.customers["customer_id"]
    as_of = pd.DataFrame({"unit_id": ids, "customer_id": ids, "time": 0.0})
    features = build_features(history, world.customers, as_of).reset_index(drop=True)
    recent = history[(history["event"] == "offer_received") & (history["time"] >= -168.0)]
    counts = recent.groupby(["customer_id", "channel"]).size().unstack(fill_value=0)
    for ch in world.catalog.channels:
        col = counts[ch.id] if ch.id in counts.columns else pd.Series(dtype=float)
        features[f"contacts_{ch.id}"] = col.reindex(ids).fillna(0).to_numpy(dtype=np.int16)
    features.insert(0, "customer_id", ids.to_numpy(dtype=object))
    return pa.Table.from_pandas(features, preserve_index=False)
