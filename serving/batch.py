"""Batch decisions over a whole customer base: streamed in chunks, the same policy as the service.

    summary = run_batch("models:/offerlift@champion", "customers.parquet", "decisions.parquet", budget=50_000)

The customer file is Parquet with a ``customer_id`` column, the model's feature columns and the rule columns
(``consent_<channel>``/the channels' consent flags, ``reach_<channel>``, ``city``, ``tier``, ``lifecycle_stage``
or ``lifecycle``, and optionally ``contacts_<channel>``: contacts inside the cap window). It is read with pyarrow
in chunks of `chunk_rows`; each chunk is encoded, scored, masked by the rules (`serving.rules.allowed_arms`)
and decided by `serving.policy.decide` (holdout, exploration, logged propensities), then appended to the output,
so memory depends on the chunk size, not on the number of customers. The output has one row per input row, in
the input order: customer_id, arm, propensity, group_propensity, group, expected_incremental_profit,
expected_cost.

Randomness: exploration draws come from ``PCG64(seed)`` advanced to the row's position in the file (`draws`),
so a decision depends on the seed and the row, never on the chunking or on the machine that scored it.

With a budget the job reads the file twice: the first pass finds the price of the budget over the whole
population (`serving.budget`, breakpoints spilled to a temporary folder), the second decides with it.

`decide_logged(decider, customer_ids, context)` is the other batch path: the decisions that
`serving.decider.Decider.decide` would make and log for these customers one after the other (online store, rules,
caps and budget read from the decision log, the pure policy, the logged row and the budget charge), made in one
write transaction with one scoring call, for jobs such as the closed loop that decide a whole population at once.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from features.errors import ConfigError, DataError, DataNotFoundError, ModelError, SchemaError
from features.model_io import load_model
from features.scoring import ArmScorer
from serving.budget import Allocation, SpillStore, chunk_breakpoints, spend_curve
from serving.decider import Champion, Decider, _attributes, _log_context, expected_cost
from serving.decision_log import DecisionLog
from serving.decision_log import budgets as budget_table
from serving.decision_log import decisions as decision_table
from serving.decision_log import outcomes as outcome_table
from serving.policy import GROUPS, Decisions, PolicyConfig, decide, holdout_unit
from serving.rules import Rules, allowed_arms

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


def rule_inputs(frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The customer attributes and the contact counts (``contacts_<channel>``) that `allowed_arms` reads."""
    customers = {
        c: frame[c].to_numpy(dtype=object)
        for c in frame.columns
        if c in RULE_COLUMNS or c.startswith(("consent_", "reach_"))
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
    customers, contacts = rule_inputs(frame)
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


def input_columns(schema: pa.Schema, scorer: ArmScorer) -> list[str]:
    """The columns of the customer file that the job reads; SchemaError names missing feature columns."""
    names = set(schema.names)
    if "customer_id" not in names:
        raise SchemaError("customers", "customer_id", "missing from the customer file")
    missing = [c for c in scorer.features.columns if c not in names]
    if missing:
        raise SchemaError("customers", missing[0], f"model feature missing from the customer file ({missing})")
    keep = {"customer_id", *scorer.features.columns}
    keep |= {c for c in schema.names if c in RULE_COLUMNS or c.startswith(RULE_PREFIXES)}
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
    columns = input_columns(pf.schema_arrow, scorer)
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
        model_uri_or_scorer: a loaded ArmScorer or a model URI for `features.model_io.load_model`.
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
    columns = input_columns(pf.schema_arrow, scorer)
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


def write_customer_file(
    path: str | Path, n: int, seed: int = 0, block: int = 100_000, distinct: int | None = None
) -> Path:
    """Write a simulated customer base of `n` customers with model features, rule columns and contact counts.

    Customers come in blocks of the simulated world (`features.simworld.SimWorld`, seed derived from `seed` and
    the block), with point-in-time features at time 0 (`features.build.build_features`, as in
    `features.simworld_experiment`) and ``contacts_<channel>`` = offers received in the last 168 hours. With
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
    from features.build import build_features
    from features.simworld import SimWorld

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


def summary_counts(summary: Mapping[str, Any]) -> str:
    """A one-line human summary of `run_batch`'s result."""
    return (
        f"{summary['rows']} customers, {summary['chunks']} chunks, {summary['seconds']:.1f}s; "
        f"expected incremental profit {summary['expected_incremental_profit']:.2f}, "
        f"expected cost {summary['expected_cost']:.2f}"
    )


# --- decisions of the service, made for many customers at once -------------------------------------------------


@dataclass(frozen=True)
class LoggedBatch:
    """What `decide_logged` made and logged, in the order of the customer ids.

    Attributes:
        rows: the logged decision rows (the decision log's columns; ``context`` as its JSON text).
        incr: (n, K) the champion's expected incremental profit of every arm.
        rule_mask: (n, K) the arms the customer rules allow (eligibility, consent, reach), before caps and budget.
        one_transaction: True when the batch was decided in one transaction; False when it fell back to
            `Decider.decide` one customer at a time (a budget with pacing, a budget that could run out, or a
            customer listed twice).
    """

    rows: pd.DataFrame
    incr: np.ndarray
    rule_mask: np.ndarray
    one_transaction: bool


def decide_logged(
    decider: Decider,
    customer_ids: Sequence[str],
    context: Mapping[str, Any] | None = None,
    u: np.ndarray | None = None,
) -> LoggedBatch:
    """Decide and log every customer as `Decider.decide(customer_id, context)` would, one after the other.

    The same online features, attributes, scores, rule masks, caps (contacts in the decision log's cap window),
    holdout hash, policy and logged row; the budget is charged the same sum, added in the same order. With `u`
    ((n, 2) uniforms, row i = customer i) the decisions are those `Decider.decide` makes when its generator yields
    these draws in this order; without it they are drawn here. Decisions that could interact (a budget that
    could run short, pacing, a customer listed twice) go through `Decider.decide` itself, one at a time, with the
    Decider's own draws. The batch holds the log's write transaction while it is written (about 2 s per 100,000
    decisions here), so a service deciding on the same log meanwhile waits that long.
    """
    champ = decider.champion
    if champ is None:
        raise ModelError("no champion model is loaded")
    ids = [str(c) for c in customer_ids]
    ctx = dict(context or {})
    stored = decider.store.get_many(ids)
    attrs = [_attributes(stored.get(c), ctx, champ.protected) for c in ids]
    incr, cost = champ.scores(champ.scorer.features.encode_records(attrs))
    k = len(champ.arm_ids)
    masks = [champ.rule_mask(decider.rules, a, ctx.get("channels")) for a in attrs]
    rule_mask = np.vstack(masks) if masks else np.ones((0, k), dtype=bool)
    if ctx.get("arms"):
        rule_mask &= champ.arm_subset(ctx["arms"])
    u = np.random.default_rng().random((len(ids), 2)) if u is None else np.asarray(u, dtype=float)
    if u.shape != (len(ids), 2):
        raise ConfigError(f"u must have shape ({len(ids)}, 2), got {u.shape}")
    cold = np.array([c not in stored for c in ids], dtype=bool)
    rows = None
    if len(set(ids)) == len(ids):
        rows = _commit_batch(decider, champ, ids, cold, incr, cost, rule_mask, u, ctx)
    one = rows is not None
    if rows is None:
        rows = _one_by_one(decider, ids, ctx)
    return LoggedBatch(rows, incr, rule_mask, one)


def decision_time(decider: Decider, context: Mapping[str, Any]) -> float:
    """The decision's time as `Decider.decide` takes it: the context's timestamp with ``use_context_time``."""
    ts = context.get("timestamp")
    if not decider.settings.use_context_time or ts is None:
        return time.time()
    return ts.timestamp() if isinstance(ts, datetime) else float(ts)


def _window_contacts(conn: sa.Connection, since: float) -> dict[str, dict[str, int]]:
    """Per customer and channel, the logged contacts after `since` (the decision log's cap-window count)."""
    t = decision_table
    q = (
        sa.select(t.c.customer_id, t.c.channel, sa.func.count())
        .where(t.c.ts > since, t.c.channel.is_not(None))
        .group_by(t.c.customer_id, t.c.channel)
    )
    out: dict[str, dict[str, int]] = {}
    for cid, ch, count in conn.execute(q):
        out.setdefault(cid, {})[ch] = int(count)
    return out


def _cap_masks(champ: Champion, rules: Rules, ids: list[str], contacts: dict[str, dict[str, int]]) -> np.ndarray:
    """(n, K) `Champion.cap_mask` of every customer without a budget (customers without contacts share one)."""
    base = champ.cap_mask(rules, {}, None)
    out = np.repeat(base, len(ids), axis=0)
    for i, cid in enumerate(ids):
        if cid in contacts:
            out[i] = champ.cap_mask(rules, contacts[cid], None)[0]
    return out


def _budget_holds(champ: Champion, committed: float, total: float, charges: np.ndarray) -> tuple[bool, float]:
    """Whether every arm stays affordable before each decision, and the committed sum after them all.

    The sum is accumulated one decision at a time, as the decision log's ``committed + cost`` updates do."""
    worst = float(champ.worst_cost_array.max()) if champ.worst_cost_array.size else 0.0
    for c in charges.tolist():
        if worst > total - committed + 1e-12:
            return False, committed
        if c > 0:
            committed = committed + c
    return True, committed


def _commit_batch(
    decider: Decider,
    champ: Champion,
    ids: list[str],
    cold: np.ndarray,
    incr: np.ndarray,
    cost: np.ndarray,
    rule_mask: np.ndarray,
    u: np.ndarray,
    ctx: Mapping[str, Any],
) -> pd.DataFrame | None:
    """Decide, insert and charge in one write transaction; None (nothing written) when decisions could interact."""
    settings, rules, dlog = decider.settings, decider.rules, decider.log
    campaign, now = settings.campaign.name, decision_time(decider, ctx)
    hu = holdout_unit(ids, champ.policy.experiment)
    with dlog.engine.begin() as conn:
        if not dlog.is_sqlite:
            conn.exec_driver_sql("LOCK TABLE budgets IN EXCLUSIVE MODE")
        b = conn.execute(sa.select(budget_table).where(budget_table.c.campaign == campaign)).first()
        if b is not None and settings.pacing.enabled:
            return None
        contacts = _window_contacts(conn, now - rules.cap_window_hours * 3600.0)
        d = decide(incr, cost, rule_mask & _cap_masks(champ, rules, ids, contacts), hu, u, champ.policy, 0.0)
        charges = np.asarray(champ.worst_cost, dtype=float)[d.arm]
        committed = None
        if b is not None:
            ok, committed = _budget_holds(champ, b.committed, b.total, charges)
            if not ok:
                return None
        rows = _rows(champ, ids, cold, d, ctx, campaign, now)
        if rows:
            conn.execute(decision_table.insert(), rows)
        if committed is not None and committed != b.committed:
            conn.execute(budget_table.update().where(budget_table.c.campaign == campaign).values(committed=committed))
    return pd.DataFrame(rows, columns=[c.name for c in decision_table.columns])


def _rows(
    champ: Champion, ids: list[str], cold: np.ndarray, d: Decisions, ctx: Mapping[str, Any], campaign: str, now: float
) -> list[dict[str, Any]]:
    """The decision log rows, as `Decider.decide` builds them."""
    contexts = {flag: json.dumps(_log_context(ctx, 0.0, flag)) for flag in (False, True)}
    rows = []
    for i, cid in enumerate(ids):
        j = int(d.arm[i])
        rows.append(
            {
                "decision_id": str(uuid.uuid4()),
                "ts": now,
                "customer_id": cid,
                "campaign": campaign,
                "arm": champ.arm_ids[j],
                "offer_id": champ.offer_ids[j],
                "channel": champ.channels[j],
                "coupon_value": champ.coupon_values[j],
                "propensity": float(d.propensity[i]),
                "group_propensity": float(d.group_propensity[i]),
                "grp": str(d.group[i]),
                "model_version": champ.version,
                "expected_incremental_profit": float(d.incr[i]),
                "expected_cost": float(d.cost[i]),
                "committed_cost": champ.worst_cost[j],
                "context": contexts[bool(cold[i])],
            }
        )
    return rows


def _one_by_one(decider: Decider, ids: list[str], ctx: Mapping[str, Any]) -> pd.DataFrame:
    """The fallback: `Decider.decide` for each customer, the rows read back from the log."""
    made = [decider.decide(cid, ctx).decision_id for cid in ids]
    logged = pd.DataFrame(decider.log.read("decisions")).set_index("decision_id")
    return logged.loc[made].reset_index()[[c.name for c in decision_table.columns]]


OUTCOME_FIELDS = ("event_id", "customer_id", "ts", "visit", "buy", "spend", "redeem")


def record_outcomes_bulk(log: DecisionLog, events: Iterable[Mapping[str, Any]], chunk: int = 500) -> int:
    """Store a batch of outcome events as `DecisionLog.add_outcomes` does, in one transaction with bulk statements.

    Idempotent on ``event_id`` (events already stored, or listed earlier in the batch, are skipped; the first
    one wins); DataError names a missing field. Returns how many events were new.
    """
    now = time.time()
    fresh: dict[str, dict[str, Any]] = {}
    for e in events:
        try:
            values = {k: e[k] for k in OUTCOME_FIELDS}
        except KeyError as exc:
            raise DataError(f"outcome event is missing field {exc.args[0]!r}") from None
        values["decision_id"] = e.get("decision_id")
        values["received_ts"] = now
        fresh.setdefault(values["event_id"], values)
    ids = list(fresh)
    column = outcome_table.c.event_id
    with log.engine.begin() as conn:
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            for (known,) in conn.execute(sa.select(column).where(column.in_(part))):
                fresh.pop(known, None)
        if fresh:
            conn.execute(outcome_table.insert(), list(fresh.values()))
    return len(fresh)
