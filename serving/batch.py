"""Batch decisions over a whole customer base: streamed in chunks, the same policy as the service.

    summary = run_batch("models:/offerlift@champion", "customers.parquet", "decisions.parquet", budget=50_000)

The customer file is Parquet with a ``customer_id`` column, the model's feature columns and the rule columns
(``consent_<channel>``/the channels' consent flags, ``reach_<channel>``, ``city``, ``tier``, ``lifecycle_stage``
or ``lifecycle``, and optionally ``contacts_<channel>``: contacts inside the cap window). It is read with pyarrow
in chunks of `chunk_rows`; each chunk is encoded, scored, masked by the rules (`offerlift.serving.rules.allowed_arms`)
and decided by `offerlift.serving.policy.decide` (holdout, exploration, logged propensities), then appended to the
output, so memory depends on the chunk size, not on the number of customers. The output has one row per input row, in
the input order: customer_id, arm, propensity, group_propensity, group, expected_incremental_profit,
expected_cost.

Randomness: exploration draws come from ``PCG64(seed)`` advanced to the row's position in the file (`draws`),
so a decision depends on the seed and the row, never on the chunking or on the machine that scored it.

With a budget the job reads the file twice: the first pass finds the price of the budget over the whole
population (`offerlift.serving.budget`, breakpoints spilled to a temporary folder), the second decides with it.

`offerlift.serving.decide_many.decide_logged` is the other batch path: the service's own decisions, logged, for many
customers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from offerlift.features.errors import ConfigError, DataNotFoundError, SchemaError
from offerlift.models.model_io import load_model
from offerlift.models.scoring import ArmScorer
from offerlift.serving.budget import Allocation, SpillStore, chunk_breakpoints, spend_curve
from offerlift.serving.decider import expected_cost
from offerlift.serving.policy import GROUPS, Decisions, PolicyConfig, decide, holdout_unit
from offerlift.serving.rules import Rules, allowed_arms

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 50_000
RULE_COLUMNS = ("city", "tier", "lifecycle_stage", "lifecycle")
RULE_PREFIXES = ("consent_", "reach_", "contacts_")
OUTPUT_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("arm", pa.string()),
        ("propensity", pa.float64()),
        ("group_propensity", pa.float64()),
        ("group", pa.string()),
        ("expected_incremental_profit", pa.float64()),
        ("expected_cost", pa.float64()),
    ]
)


@dataclass(frozen=True)
class ChunkScores:
    """Everything `decide` needs for one chunk of customers (rows ``start .. start + n - 1`` of the file)."""

    ids: np.ndarray
    incr: np.ndarray
    cost: np.ndarray
    allowed: np.ndarray
    holdout_u: np.ndarray
    u: np.ndarray
    start: int


def draws(seed: int, start: int, n: int) -> np.ndarray:
    """(n, 2) uniforms of rows ``start .. start + n - 1``: the stream of ``PCG64(seed)`` from position 2 * start."""
    bits = np.random.PCG64(seed)
    bits.advance(2 * int(start))
    return np.random.Generator(bits).random((n, 2))


def rule_inputs(frame: pd.DataFrame, rules: Rules | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The customer attributes (also the segment and abuse columns `rules` read) and the contact counts
    (``contacts_<channel>``) that `allowed_arms` reads."""
    wanted = set(RULE_COLUMNS) | (rules.attribute_columns() if rules is not None else set())
    customers = {
        c: frame[c].to_numpy(dtype=object) for c in frame.columns if c in wanted or c.startswith(("consent_", "reach_"))
    }
    if "lifecycle_stage" not in customers and "lifecycle" in customers:
        customers["lifecycle_stage"] = customers["lifecycle"]
    contacts = {
        c.removeprefix("contacts_"): frame[c].fillna(0).to_numpy(dtype=np.int64)
        for c in frame.columns
        if c.startswith("contacts_")
    }
    return customers, contacts


def score_chunk(
    scorer: ArmScorer, frame: pd.DataFrame, rules: Rules, policy: PolicyConfig, seed: int, start: int
) -> ChunkScores:
    """Encode, predict, apply the rules and draw the randomness of one chunk."""
    if "customer_id" not in frame.columns:
        raise SchemaError("customers", "customer_id", "missing from the customer file")
    ids = frame["customer_id"].astype(str).to_numpy(dtype=object)
    X = scorer.features.encode(frame)
    preds = scorer.predict(X)
    profit = scorer.profit(preds)
    customers, contacts = rule_inputs(frame, rules)
    n = len(frame)
    return ChunkScores(
        ids=ids,
        incr=profit - profit[:, [0]],
        cost=expected_cost(scorer, preds),
        allowed=allowed_arms(scorer.catalog, customers, n, rules, contacts),
        holdout_u=holdout_unit(ids, policy.experiment),
        u=draws(seed, start, n),
        start=start,
    )


def decide_chunk(scores: ChunkScores, policy: PolicyConfig, allocation: Allocation | None = None) -> Decisions:
    """The policy's decisions for a chunk (at the allocation's prices when there is a budget)."""
    n = scores.ids.size
    price: Any = 0.0 if allocation is None else allocation.prices(scores.start, n)[:, None]
    return decide(scores.incr, scores.cost, scores.allowed, scores.holdout_u, scores.u, policy, price)


def decisions_table(ids: np.ndarray, d: Decisions, arm_ids: list[str]) -> pa.Table:
    """The output rows of one chunk."""
    return pa.table(
        {
            "customer_id": pa.array(ids, pa.string()),
            "arm": pa.array(np.asarray(arm_ids, dtype=object)[d.arm], pa.string()),
            "propensity": d.propensity,
            "group_propensity": d.group_propensity,
            "group": pa.array(d.group, pa.string()),
            "expected_incremental_profit": d.incr,
            "expected_cost": d.cost,
        },
        schema=OUTPUT_SCHEMA,
    )


def input_columns(schema: pa.Schema, scorer: ArmScorer, rules: Rules | None = None) -> list[str]:
    """The columns of the customer file that the job reads (features, rule columns, and the segment and abuse
    columns `rules` read); SchemaError names missing feature columns."""
    names = set(schema.names)
    if "customer_id" not in names:
        raise SchemaError("customers", "customer_id", "missing from the customer file")
    missing = [c for c in scorer.features.columns if c not in names]
    if missing:
        raise SchemaError("customers", missing[0], f"model feature missing from the customer file ({missing})")
    keep = {"customer_id", *scorer.features.columns}
    keep |= {c for c in schema.names if c in RULE_COLUMNS or c.startswith(RULE_PREFIXES)}
    keep |= (rules.attribute_columns() if rules is not None else set()) & names
    return [c for c in schema.names if c in keep]


def iter_frames(
    path: str | Path,
    chunk_rows: int,
    columns: list[str] | None = None,
    row_groups: list[int] | None = None,
    start: int = 0,
) -> Iterator[tuple[int, pd.DataFrame]]:
    """(start row, frame) chunks of exactly `chunk_rows` rows (the last one shorter) of a Parquet file, in order.

    With `row_groups`, only those row groups are read and `start` is the file row of their first row.
    """
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows!r}")
    buffer, have = [], 0
    # pre_buffer=False: with pyarrow's default read-ahead cache, memory grows with the file (about 65 MB per
    # million customers of the simulated file)
    reader = pq.ParquetFile(path, pre_buffer=False)
    batches = reader.iter_batches(batch_size=chunk_rows, row_groups=row_groups, columns=columns)
    for batch in batches:
        buffer.append(batch)
        have += batch.num_rows
        while have >= chunk_rows:
            table = pa.Table.from_batches(buffer)
            yield start, table.slice(0, chunk_rows).to_pandas()
            start += chunk_rows
            rest = table.slice(chunk_rows)
            buffer, have = rest.to_batches(), rest.num_rows
    if have:
        yield start, pa.Table.from_batches(buffer).to_pandas()


def _open(path: str | Path) -> pq.ParquetFile:
    if not Path(path).exists():
        raise DataNotFoundError("customer file", [str(path)])
    return pq.ParquetFile(path)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=" customers", unit_scale=True, disable=not enabled, mininterval=1.0)


class Tally:
    """Running totals of the decisions (arms, groups, profit, cost)."""

    def __init__(self, n_arms: int):
        self.arms = np.zeros(n_arms, dtype=np.int64)
        self.groups = dict.fromkeys(GROUPS, 0)
        self.value = 0.0
        self.spend = 0.0
        self.rows = 0
        self.chunks = 0

    def add(self, d: Decisions) -> None:
        """Count one chunk's decisions."""
        self.arms += np.bincount(d.arm, minlength=self.arms.size)
        for g in GROUPS:
            self.groups[g] += int(np.count_nonzero(d.group == g))
        self.value += float(d.incr.sum())
        self.spend += float(d.cost.sum())
        self.rows += d.arm.size

    def merge(self, other: Tally) -> None:
        """Add another tally's totals (e.g. of a partition)."""
        self.arms += other.arms
        for g in GROUPS:
            self.groups[g] += other.groups[g]
        self.value += other.value
        self.spend += other.spend
        self.rows += other.rows
        self.chunks += other.chunks


def find_price(
    scorer: ArmScorer,
    path: str | Path,
    budget: float,
    policy: PolicyConfig,
    rules: Rules,
    chunk_rows: int,
    seed: int,
    progress: bool = False,
) -> tuple[Allocation, pd.DataFrame, int]:
    """First pass: the allocation of `budget` over every customer of the file, the spend curve, chunks read."""
    pf = _open(path)
    columns = input_columns(pf.schema_arrow, scorer, rules)
    chunks = 0
    with SpillStore() as store, _progress(pf.metadata.num_rows, "pricing", progress) as bar:
        for start, frame in iter_frames(path, chunk_rows, columns):
            s = score_chunk(scorer, frame, rules, policy, seed, start)
            store.add(*chunk_breakpoints(s.incr, s.cost, s.allowed, s.holdout_u, s.u, policy, start))
            chunks += 1
            bar.update(len(frame))
        allocation = store.solver().solve(budget)
        curve = spend_curve(store.base, store.histogram)
    return allocation, curve, chunks


def run_batch(
    model_uri_or_scorer: str | ArmScorer,
    customers_path: str | Path,
    out_path: str | Path,
    budget: float | None = None,
    policy: PolicyConfig = PolicyConfig(),
    rules: Rules = Rules(),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Decide for every customer of a Parquet file and write the decisions to a Parquet file.

    Args:
        model_uri_or_scorer: a loaded ArmScorer or a model URI for `offerlift.models.model_io.load_model`.
        customers_path: the customer file (see the module docstring for its columns).
        out_path: the output file (written next to it as ``.partial`` and renamed when complete).
        budget: total expected cost allowed (None: no budget, price 0).
        policy: holdout and exploration shares, experiment salt, fallback arm.
        rules: eligibility, consent and contact caps.
        chunk_rows: rows per chunk (memory grows with it, not with the file).
        seed: seed of the exploration draws.
        progress: show a progress bar (tqdm, on stderr).

    Returns:
        A JSON-ready summary: rows, chunks, seconds, customer_arms_per_s, arm and group counts, total expected
        incremental profit and cost, and with a budget the price, the planned spend and value and the spend curve.
    """
    t0 = time.perf_counter()
    scorer = model_uri_or_scorer if isinstance(model_uri_or_scorer, ArmScorer) else load_model(model_uri_or_scorer)
    pf = _open(customers_path)
    columns = input_columns(pf.schema_arrow, scorer, rules)
    summary: dict[str, Any] = {"budget": budget}
    allocation = None
    chunks = 0
    if budget is not None:
        allocation, curve, chunks = find_price(
            scorer, customers_path, budget, policy, rules, chunk_rows, seed, progress
        )
        summary.update(_allocation_summary(allocation, curve))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    tally = Tally(len(scorer.arms))
    with (
        pq.ParquetWriter(partial, OUTPUT_SCHEMA) as writer,
        _progress(pf.metadata.num_rows, "deciding", progress) as bar,
    ):
        for start, frame in iter_frames(customers_path, chunk_rows, columns):
            s = score_chunk(scorer, frame, rules, policy, seed, start)
            d = decide_chunk(s, policy, allocation)
            writer.write_table(decisions_table(s.ids, d, scorer.arms))
            tally.add(d)
            chunks += 1
            bar.update(len(frame))
    os.replace(partial, out_path)
    seconds = time.perf_counter() - t0
    summary.update(_tally_summary(tally, scorer.arms, seconds, chunks, out_path))
    if allocation is not None and tally.spend > allocation.budget * (1 + 1e-9) + 1e-9:
        log.error("batch spent %.6g over a budget of %.6g", tally.spend, allocation.budget)
    log.info("batch: %d customers in %.1fs (%d chunks) -> %s", tally.rows, seconds, chunks, out_path)
    return summary


def _tally_summary(tally: Tally, arms: list[str], seconds: float, chunks: int, out: Path) -> dict[str, Any]:
    return {
        "rows": tally.rows,
        "chunks": chunks,
        "seconds": seconds,
        "customer_arms_per_s": tally.rows * len(arms) / seconds if seconds > 0 else float("nan"),
        "arms": {a: int(c) for a, c in zip(arms, tally.arms, strict=True) if c},
        "groups": tally.groups,
        "expected_incremental_profit": tally.value,
        "expected_cost": tally.spend,
        "out": str(out),
    }


def _allocation_summary(allocation: Allocation, curve: pd.DataFrame, points: int = 200) -> dict[str, Any]:
    step = max(1, len(curve) // points)
    thin = pd.concat([curve.iloc[::step], curve.iloc[[-1]]]).drop_duplicates()
    return {
        "price": allocation.price,
        "own_price_rows": int(allocation.rows.size),
        "planned_spend": allocation.spend,
        "planned_value": allocation.value,
        "lagrangian_spend": allocation.lagrangian_spend,
        "lagrangian_value": allocation.lagrangian_value,
        "spend_curve": thin.to_dict(orient="list"),
    }


def summary_counts(summary: Mapping[str, Any]) -> str:
    """A one-line human summary of `run_batch`'s result."""
    return (
        f"{summary['rows']} customers, {summary['chunks']} chunks, {summary['seconds']:.1f}s; "
        f"expected incremental profit {summary['expected_incremental_profit']:.2f}, "
        f"expected cost {summary['expected_cost']:.2f}"
    )
