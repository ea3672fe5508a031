"""Training the S-learner on many rows on one machine, from Parquet, without pandas frames or copies of the data.

`fit_large_spec` fits the same model as `offerlift.training.train.fit_spec` with ``TrainConfig(learner="s")`` (one
LightGBM booster per outcome on the features followed by the arm's features: one-hot of the treatment arms and the
coupon value, or the coupon value alone with ``monotone``) and returns the same scorer spec. LightGBM bins the rows
once; every outcome trains on that one binned Dataset with its own label. Two ways to feed LightGBM the rows:

- ``construct="sequence"`` (default): `ParquetRows`, a `lightgbm.Sequence`, decodes one record batch at a time
  while LightGBM samples and bins the rows (the file is read twice); no matrix at all: peak memory is about the
  bins plus LightGBM's training buffers (10M rows x 52 columns: 1.8 GB, 5.0 min on 2 cores).
- ``construct="matrix"``: Parquet record batches are encoded straight into one preallocated matrix, float32 by
  default (half the memory of float64), freed once binned. Peak memory adds the matrix (rows x columns x 4
  bytes): 3.0 GB at 10M rows, in the same time (benchmarks/results/batch.md).

With float64 values (``construct="sequence"``, or ``dtype=np.float64``) the boosters are identical to
`fit_spec`'s on the same rows (tested, also when LightGBM samples the rows it bins from). With float32 the values
are rounded first, so values float32 cannot tell apart share a bin and the trees can differ: a different model of
the same kind (on 4,000 simulated units, spend predictions up to 29 apart at correlation 0.997).

For data beyond one machine, `offerlift.training.train_dask.fit_dask_spec` trains with lightgbm.dask on a cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError, DataError
from offerlift.models.scoring import FORMAT, ArmScorer, FeatureSpec
from offerlift.training.learners_base import lgb_params

log = logging.getLogger(__name__)

#: Rows per Parquet record batch while encoding.
BATCH_ROWS = 65_536


def _batches(path: Path, batch_rows: int, columns: Sequence[str]) -> Any:
    """The record batches of one Parquet file, read one at a time.

    Without pre-buffering and reader threads: with pyarrow's defaults, reading 2M rows in batches of 262,144 raised
    the peak memory by 504 MB, against 177 MB this way in batches of 65,536, in the same time (0.46s).
    """
    return pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_rows, columns=list(columns), use_threads=False)


def _files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """The Parquet files of `source` (a file, a directory of ``*.parquet`` files, or a list of files)."""
    items = [source] if isinstance(source, str | Path) else list(source)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            files.extend(sorted(item.glob("*.parquet")))
        elif item.exists():
            files.append(item)
        else:
            raise DataError(f"training data not found: {item}")
    if not files:
        raise DataError(f"no Parquet files in {source}")
    return files


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def scan_feature_spec(files: Sequence[Path], columns: Sequence[str]) -> FeatureSpec:
    """The FeatureSpec of Parquet columns: text (or dictionary of text) columns are categorical with their sorted
    distinct values (one pass over those columns only), numeric and boolean columns stay numbers."""
    schema = pq.read_schema(files[0])
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DataError(f"columns missing from the training data: {missing}")
    text = [c for c in columns if _is_text(schema.field(c).type)]
    other = [c for c in columns if c not in text]
    for c in other:
        kind = schema.field(c).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise DataError(f"feature column {c!r} has type {kind}, which is neither numeric nor text")
    values: dict[str, set[str]] = {c: set() for c in text}
    for path in files:
        for batch in _batches(path, BATCH_ROWS, text):
            for c in text:
                col = batch.column(c)
                uniq = col.dictionary if pa.types.is_dictionary(col.type) else pc.unique(col)
                values[c].update(v for v in uniq.to_pylist() if v is not None)
    return FeatureSpec(tuple(columns), {c: tuple(sorted(values[c])) for c in text})


def _codes(col: pa.Array, levels: Sequence[str]) -> np.ndarray:
    """Float codes of a text column in `levels` (unknown values and nulls -> NaN)."""
    if pa.types.is_dictionary(col.type):
        lookup = pd.Index(levels).get_indexer(col.dictionary.to_pylist()).astype(np.float64)
        lookup[lookup < 0] = np.nan
        if not len(lookup):
            return np.full(len(col), np.nan)
        out = lookup[col.indices.fill_null(0).to_numpy(zero_copy_only=False)]
        if col.null_count:
            out[col.is_null().to_numpy(zero_copy_only=False)] = np.nan
        return out
    found = pc.index_in(col, value_set=pa.array(list(levels), type=col.type))
    return found.to_numpy(zero_copy_only=False).astype(np.float64)


def encode_batch(batch: pa.RecordBatch, spec: FeatureSpec, out: np.ndarray) -> None:
    """Write the features of `batch` into `out` (rows of the batch, columns in spec order), as
    `FeatureSpec.encode` would encode the same rows as a pandas frame."""
    for j, name in enumerate(spec.columns):
        col = batch.column(name)
        if name in spec.categories:
            out[:, j] = _codes(col, spec.categories[name])
        else:
            out[:, j] = _numbers(col, f"feature column {name!r}")


def _arm_codes(col: pa.Array, arm_ids: Sequence[str]) -> np.ndarray:
    """Each row's arm position in `arm_ids`; DataError names an unknown or missing arm."""
    if col.null_count:
        raise DataError("arm is missing on some rows of the training data")
    codes = _codes(col, arm_ids)
    bad = np.isnan(codes)
    if bad.any():
        raise DataError(f"unknown arm {col[int(np.flatnonzero(bad)[0])].as_py()!r} (known arms: {list(arm_ids)})")
    return codes.astype(np.int16)


def _numbers(col: pa.Array, what: str) -> np.ndarray:
    """A numeric column as float64 (nulls -> NaN); DataError naming `what` if it is not numeric."""
    try:
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{what} must be numeric, got {col.type} ({exc})") from None


def _label(col: pa.Array, name: str) -> np.ndarray:
    """An outcome column as float64; DataError on a missing or non-finite value."""
    arr = _numbers(col, f"outcome {name!r}")
    if not np.isfinite(arr).all():
        raise DataError(f"outcome {name!r} has a missing or non-finite value")
    return arr


def build_matrix(
    files: Sequence[Path],
    spec: FeatureSpec,
    table: np.ndarray,
    arm_ids: Sequence[str],
    outcomes: Sequence[str],
    dtype: Any = np.float32,
    batch_rows: int = BATCH_ROWS,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The S-learner's training matrix ``[features, table[arm]]`` in `dtype`, the outcome labels (float32) and
    each row's arm code, filled batch by batch into preallocated arrays."""
    n = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    p, k = len(spec.columns), table.shape[1]
    Z = np.empty((n, p + k), dtype=dtype)
    labels = {o: np.empty(n, dtype=np.float32) for o in outcomes}
    arms = np.empty(n, dtype=np.int16)
    buf = np.empty((batch_rows, p), dtype=np.float64)
    columns = [*spec.columns, "arm", *outcomes]
    lo = 0
    for path in files:
        for batch in _batches(path, batch_rows, columns):
            m = batch.num_rows
            encode_batch(batch, spec, buf[:m])
            Z[lo : lo + m, :p] = buf[:m]
            arms[lo : lo + m] = _arm_codes(batch.column("arm"), arm_ids)
            Z[lo : lo + m, p:] = table[arms[lo : lo + m]]
            for o in outcomes:
                labels[o][lo : lo + m] = _label(batch.column(o), o)
            lo += m
    return Z, labels, arms


def read_labels(
    files: Sequence[Path], arm_ids: Sequence[str], outcomes: Sequence[str], batch_rows: int = BATCH_ROWS
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The outcome labels (float32) and each row's arm code, read batch by batch (those columns only)."""
    n = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    labels = {o: np.empty(n, dtype=np.float32) for o in outcomes}
    arms = np.empty(n, dtype=np.int16)
    lo = 0
    for path in files:
        for batch in _batches(path, batch_rows, ["arm", *outcomes]):
            m = batch.num_rows
            arms[lo : lo + m] = _arm_codes(batch.column("arm"), arm_ids)
            for o in outcomes:
                labels[o][lo : lo + m] = _label(batch.column(o), o)
            lo += m
    return labels, arms


class ParquetRows(lgb.Sequence):
    """The S-learner's model rows ``[features, table[arm]]`` of Parquet files as a LightGBM `Sequence` (float64).

    LightGBM reads it twice, in row order: single rows for its binning sample, then slices of `batch_size` rows
    to bin; each record batch is decoded when first needed and only the current one is kept, so memory stays at
    one batch whatever the number of rows.
    """

    def __init__(
        self, files: Sequence[Path], spec: FeatureSpec, table: np.ndarray, arm_ids: Sequence[str], batch_size: int
    ) -> None:
        self.files, self.spec, self.table, self.arm_ids = list(files), spec, table, list(arm_ids)
        self.batch_size = batch_size
        self.rows = sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)
        self._restart()

    def __len__(self) -> int:
        return self.rows

    def _restart(self) -> None:
        self._blocks = self._decode()
        self._start, self._block = 0, np.empty((0, len(self.spec.columns) + self.table.shape[1]))

    def _decode(self) -> Any:
        """(first row, matrix) of every record batch, in order."""
        lo, p = 0, len(self.spec.columns)
        for path in self.files:
            for batch in _batches(path, self.batch_size, [*self.spec.columns, "arm"]):
                out = np.empty((batch.num_rows, p + self.table.shape[1]))
                encode_batch(batch, self.spec, out[:, :p])
                out[:, p:] = self.table[_arm_codes(batch.column("arm"), self.arm_ids)]
                yield lo, out
                lo += batch.num_rows

    def _seek(self, row: int) -> None:
        """Make the cached block the one holding `row`."""
        if row < self._start:
            self._restart()
        while row >= self._start + len(self._block):
            self._start, self._block = next(self._blocks)

    def __getitem__(self, idx: int | slice | list[int]) -> np.ndarray:
        """Row `idx` (1-D), or the rows of a slice or list (2-D)."""
        if isinstance(idx, slice):
            start, stop, step = idx.indices(self.rows)
            if step != 1:
                return self[list(range(start, stop, step))]
            parts = []
            while start < stop:
                self._seek(start)
                end = min(stop, self._start + len(self._block))
                parts.append(self._block[start - self._start : end - self._start])
                start = end
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        if isinstance(idx, list | np.ndarray):
            return np.stack([self[int(i)] for i in idx])
        row = int(idx) + (self.rows if idx < 0 else 0)
        if not 0 <= row < self.rows:
            raise IndexError(f"row {idx} out of range for {self.rows} rows")
        self._seek(row)
        return self._block[row - self._start]


def s_arm_table(catalog: Catalog, monotone: bool = False) -> np.ndarray:
    """The S-learner's arm features, as `offerlift.training.learners.SLearner` with ``arm_values`` = coupon values:
    one-hot of the treatment arms and the coupon value, or (``monotone``) the coupon value alone."""
    values = np.array([a.coupon_value for a in catalog.arms], dtype=np.float64)[:, None]
    if monotone:
        return values
    return np.hstack([np.eye(len(catalog.arms))[:, 1:], values])


def _check_arm_rows(arms: np.ndarray, arm_ids: Sequence[str], min_rows: int) -> None:
    counts = np.bincount(arms, minlength=len(arm_ids))
    for a, c in zip(arm_ids, counts, strict=True):
        if c < min_rows:
            raise DataError(f"arm {a!r} has {c} rows, fewer than min_arm_rows={min_rows}")


def _params(params: Mapping[str, Any] | None, outcome: str, seed: int) -> dict[str, Any]:
    """`lgb_params`, col-wise histograms unless `params` ask for row-wise: LightGBM's own choice tries both on
    every `lgb.train` call, and row-wise keeps a second, row-major copy of the bins (2M rows, 3 trees: peak 803
    against 665 MB, 1.1 against 0.5 s; 1M rows, 50 trees: 2.79 s col-wise, 2.65 s row-wise)."""
    merged = lgb_params(params, outcome, seed)
    if not merged.get("force_row_wise"):
        merged["force_col_wise"] = True
    if "data_random_seed" not in merged:
        # The Python package samples a Sequence's rows for binning with the Dataset's own parameters, which leave
        # ``seed`` out: name the sampling seed that LightGBM derives from ``seed`` (as for a matrix).
        merged["data_random_seed"] = data_random_seed(int(merged.get("seed", 0)))
    return merged


def data_random_seed(seed: int) -> int:
    """The ``data_random_seed`` LightGBM derives from ``seed`` (its config: the first ``Random(seed).NextShort(0,
    32767)``, a linear congruential step), which picks the rows it samples to find the bins."""
    x = (214013 * (seed & 0xFFFFFFFF) + 2531011) & 0xFFFFFFFF
    return ((x >> 16) & 0x7FFF) % 32767


def fit_large_spec(
    source: str | Path | Sequence[str | Path],
    catalog: Catalog,
    outcomes: Sequence[str],
    value_outcome: str,
    feature_columns: Sequence[str],
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    monotone: bool = False,
    dtype: Any = np.float32,
    feature_spec: FeatureSpec | None = None,
    metadata: Mapping[str, Any] | None = None,
    batch_rows: int = BATCH_ROWS,
    construct: str = "sequence",
) -> dict[str, Any]:
    """Fit the S-learner's outcome boosters on Parquet data and return the scorer spec.

    Args:
        source: a Parquet file, a directory of them, or a list of files; one row per unit with `feature_columns`,
            ``arm`` (arm ids of `catalog`) and `outcomes`.
        catalog: the arms (control first).
        outcomes: outcome columns to model; 0/1 columns get a binary objective and predictions clipped to [0, 1].
        value_outcome: the outcome that carries money value (one of `outcomes`).
        feature_columns: model features, in order.
        params: LightGBM parameters over `offerlift.training.learners_base.DEFAULT_LGB_PARAMS`.
        seed: LightGBM seed.
        monotone: the arm enters as its coupon value only, predictions non-decreasing in it.
        dtype: of the ``construct="matrix"`` matrix: np.float32 (half the memory) or np.float64 (boosters identical
            to `fit_spec`'s).
        feature_spec: column order and categorical levels (default: scanned from the data, sorted levels).
        metadata: stored in the spec; the spec's ``metadata.timings`` gets the seconds of each stage.
        batch_rows: rows per record batch while reading.
        construct: "sequence" (LightGBM bins the rows from a `ParquetRows` sequence, decoding one batch at a time:
            no matrix, the file is read twice; float64 values, `dtype` is not used) or "matrix" (every row encoded
            into one preallocated `dtype` matrix, which LightGBM bins).
    """
    if value_outcome not in outcomes:
        raise ConfigError(f"value_outcome {value_outcome!r} is not among the outcomes {list(outcomes)}")
    if construct not in ("matrix", "sequence"):
        raise ConfigError(f"construct must be 'matrix' or 'sequence', got {construct!r}")
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    files = _files(source)
    names = pq.read_schema(files[0]).names
    missing = [c for c in [*feature_columns, "arm", *outcomes] if c not in names]
    if missing:
        raise DataError(f"columns missing from the training data: {missing}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    spec_f = feature_spec or scan_feature_spec(files, feature_columns)
    table = s_arm_table(catalog, monotone)
    if construct == "sequence":
        labels, arms = read_labels(files, catalog.arm_ids, outcomes, batch_rows)
        Z: Any = ParquetRows(files, spec_f, table, catalog.arm_ids, batch_rows)
    else:
        Z, labels, arms = build_matrix(files, spec_f, table, catalog.arm_ids, outcomes, dtype, batch_rows)
    _check_arm_rows(arms, catalog.arm_ids, 20)
    del arms
    timings["read_encode"] = time.perf_counter() - t0
    kinds = {o: "binary" if np.isin(labels[o], (0.0, 1.0)).all() else "continuous" for o in outcomes}
    p = len(spec_f.columns)
    first = _params(params, kinds[outcomes[0]], seed)
    t0 = time.perf_counter()
    ds = lgb.Dataset(
        Z, label=labels[outcomes[0]], params=first, categorical_feature=spec_f.categorical_indices or "auto"
    )
    del Z  # the Dataset holds the only reference; LightGBM drops it once binned (free_raw_data)
    ds.construct()
    timings["bin"] = time.perf_counter() - t0
    specs: dict[str, dict[str, Any]] = {}
    for name in outcomes:
        t0 = time.perf_counter()
        params_o = _params(params, kinds[name], seed)
        if monotone:
            params_o["monotone_constraints"] = [0] * p + [1]
        ds.set_label(labels.pop(name))
        booster = lgb.train(params_o, ds)
        specs[name] = {
            "kind": "s",
            "boosters": [booster.model_to_string()],
            "arm_table": table.tolist(),
            "clip": [0.0, 1.0] if kinds[name] == "binary" else None,
        }
        timings[f"train_{name}"] = time.perf_counter() - t0
        log.info("fitted %s on %d rows in %.1fs", name, ds.num_data(), timings[f"train_{name}"])
    spec = {
        "format": FORMAT,
        "arms": catalog.arm_ids,
        "catalog": catalog.to_dict(),
        "feature_spec": spec_f.to_dict(),
        "outcomes": specs,
        "value_outcome": value_outcome,
        "metadata": {
            **dict(metadata or {}),
            "trainer": "train_large",
            "learner": "s",
            "construct": construct,
            "dtype": np.dtype(np.float64 if construct == "sequence" else dtype).name,
            "timings": timings,
        },
    }
    ArmScorer(spec)  # the spec must load
    return spec
