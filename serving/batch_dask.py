"""The batch job on a dask.distributed cluster: the same functions as `offerlift.serving.batch`, one task per partition.

    summary = run_batch_dask(scorer, "customers.parquet", "decisions/", budget=50_000)            # LocalCluster
    summary = run_batch_dask(uri, "/shared/customers.parquet", "/shared/out/", scheduler="tcp://host:8786")

A partition is a run of consecutive Parquet row groups (at least `partition_rows` rows). Each task reads its
row groups in chunks, scores and decides them with `offerlift.serving.batch.score_chunk` / `decide_chunk` (the same
rules, policy and draws, keyed by the file row, so the result equals the single-machine job's row for row) and writes
``part-<partition>.parquet`` in the output folder; read the folder in file-name order to get the input order.

With a budget, a first round of tasks computes each partition's breakpoints and keeps them in the workers'
memory; `offerlift.serving.budget.PriceSolver` finds the global price through histogram and window queries answered by
the workers (only small arrays travel to the client), then the deciding round applies that price per partition.

The customer file and the output folder must be reachable under the same path by every worker (a shared file
system) on a real cluster. On the embedded LocalCluster each worker process runs LightGBM with
``OMP_NUM_THREADS = threads_per_worker``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from offerlift.models.model_io import load_model
from offerlift.models.scoring import ArmScorer
from offerlift.serving.batch import (
    DEFAULT_CHUNK_ROWS,
    OUTPUT_SCHEMA,
    Tally,
    _allocation_summary,
    _open,
    _tally_summary,
    decide_chunk,
    decisions_table,
    input_columns,
    iter_frames,
    score_chunk,
)
from offerlift.serving.budget import Allocation, Base, Breakpoints, PriceSolver, chunk_breakpoints, spend_curve
from offerlift.serving.policy import PolicyConfig
from offerlift.serving.rules import Rules

log = logging.getLogger(__name__)

_SCORERS: dict[str, ArmScorer] = {}  # per worker process: scorers built from scattered specs


@dataclass(frozen=True)
class Partition:
    """Consecutive row groups of the customer file, starting at file row `start`."""

    index: int
    start: int
    rows: int
    row_groups: tuple[int, ...]


@dataclass(frozen=True)
class Job:
    """What every task needs besides its partition (sent once per task; the spec travels as a future)."""

    spec_key: str
    path: str
    columns: tuple[str, ...]
    policy: PolicyConfig
    rules: Rules
    seed: int
    chunk_rows: int


def partitions(path: str | Path, partition_rows: int) -> list[Partition]:
    """Row-group-aligned partitions of at least `partition_rows` rows (the last may be smaller)."""
    meta = pq.ParquetFile(path).metadata
    out: list[Partition] = []
    groups: list[int] = []
    start = rows = 0
    for g in range(meta.num_row_groups):
        groups.append(g)
        rows += meta.row_group(g).num_rows
        if rows >= partition_rows:
            out.append(Partition(len(out), start, rows, tuple(groups)))
            start, groups, rows = start + rows, [], 0
    if groups:
        out.append(Partition(len(out), start, rows, tuple(groups)))
    return out


def _scorer(job: Job, spec: dict[str, Any]) -> ArmScorer:
    scorer = _SCORERS.get(job.spec_key)
    if scorer is None:
        scorer = _SCORERS[job.spec_key] = ArmScorer(spec)
    return scorer


def _scores(job: Job, spec: dict[str, Any], part: Partition) -> Any:
    scorer = _scorer(job, spec)
    frames = iter_frames(job.path, job.chunk_rows, list(job.columns), list(part.row_groups), part.start)
    for start, frame in frames:
        yield scorer, score_chunk(scorer, frame, job.rules, job.policy, job.seed, start)


def price_partition(job: Job, spec: dict[str, Any], part: Partition) -> tuple[Breakpoints, Base]:
    """Breakpoints and price-0 totals of one partition (kept on the worker)."""
    bps, base = [], Base()
    for _, s in _scores(job, spec, part):
        bp, b = chunk_breakpoints(s.incr, s.cost, s.allowed, s.holdout_u, s.u, job.policy, s.start)
        bps.append(bp)
        base = base + b
    return Breakpoints.concat(bps), base


def _histogram(result: tuple[Breakpoints, Base], edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return result[0].histogram(edges)


def _window(result: tuple[Breakpoints, Base], lo: float, hi: float) -> Breakpoints:
    return result[0].window(lo, hi)


def _base(result: tuple[Breakpoints, Base]) -> Base:
    return result[1]


def decide_partition(
    job: Job, spec: dict[str, Any], part: Partition, allocation: Allocation | None, out_dir: str
) -> Tally:
    """Decide one partition and write ``part-<index>.parquet``; returns its totals."""
    tally = None
    path = Path(out_dir) / f"part-{part.index:05d}.parquet"
    with pq.ParquetWriter(path, OUTPUT_SCHEMA) as writer:
        for scorer, s in _scores(job, spec, part):
            tally = tally or Tally(len(scorer.arms))
            d = decide_chunk(s, job.policy, allocation)
            writer.write_table(decisions_table(s.ids, d, scorer.arms))
            tally.add(d)
            tally.chunks += 1
    return tally or Tally(len(spec["arms"]))


def _client(client: Any, scheduler: str | None, n_workers: int, threads_per_worker: int, processes: bool) -> Any:
    """(client, cluster or None, whether we own the client)."""
    from distributed import Client, LocalCluster

    if client is not None:
        return client, None, False
    if scheduler is not None:
        return Client(scheduler), None, True
    env = {"OMP_NUM_THREADS": str(threads_per_worker)}
    kwargs: dict[str, Any] = {"env": env} if processes else {}
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        dashboard_address="127.0.0.1:0",
        **kwargs,
    )
    return Client(cluster), cluster, True


def run_batch_dask(
    model_uri_or_scorer: str | ArmScorer,
    customers_path: str | Path,
    out_dir: str | Path,
    budget: float | None = None,
    policy: PolicyConfig = PolicyConfig(),
    rules: Rules = Rules(),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    seed: int = 0,
    scheduler: str | None = None,
    client: Any = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    processes: bool = True,
    partition_rows: int = 200_000,
) -> dict[str, Any]:
    """`offerlift.serving.batch.run_batch` on dask.distributed; the output is a folder of part files (see the module
    doc).

    Args:
        scheduler: address of a running scheduler (a real cluster); None starts a LocalCluster of `n_workers`
            workers with `threads_per_worker` threads (`processes=False`: threads in this process).
        client: an existing dask Client (overrides `scheduler`; not closed here).
        partition_rows: rows per task (whole row groups).
    The other arguments are those of `run_batch`. Returns the same summary plus ``partitions`` and ``workers``.
    """
    t0 = time.perf_counter()
    scorer = model_uri_or_scorer if isinstance(model_uri_or_scorer, ArmScorer) else load_model(model_uri_or_scorer)
    pf = _open(customers_path)
    parts = partitions(customers_path, partition_rows)
    spec = dict(scorer.spec)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    columns = tuple(input_columns(pf.schema_arrow, scorer, rules))
    job = Job(key, str(customers_path), columns, policy, rules, seed, chunk_rows)
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    client, cluster, own = _client(client, scheduler, n_workers, threads_per_worker, processes)
    try:
        spec_f = client.scatter(spec, broadcast=True)
        summary: dict[str, Any] = {"budget": budget}
        allocation = None
        if budget is not None:
            allocation, curve = _find_price(client, job, spec_f, parts, budget)
            summary.update(_allocation_summary(allocation, curve))
        futures = [client.submit(decide_partition, job, spec_f, p, allocation, str(out_dir), pure=False) for p in parts]
        tallies = client.gather(futures)
        summary["workers"] = len(client.scheduler_info()["workers"])
    finally:
        if own:
            client.close()
        if cluster is not None:
            cluster.close()
    total = Tally(len(scorer.arms))
    for t in tallies:
        total.merge(t)
    seconds = time.perf_counter() - t0
    summary.update(_tally_summary(total, scorer.arms, seconds, total.chunks, out_dir))
    summary["partitions"] = len(parts)
    log.info("dask batch: %d customers in %.1fs (%d partitions) -> %s", total.rows, seconds, len(parts), out_dir)
    return summary


def _find_price(client: Any, job: Job, spec_f: Any, parts: list[Partition], budget: float) -> tuple[Allocation, Any]:
    """The global allocation from breakpoints held by the workers."""
    held = [client.submit(price_partition, job, spec_f, p, pure=False) for p in parts]
    try:
        base = Base()
        for b in client.gather(client.map(_base, held)):
            base = base + b

        def histogram(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            parts_h = client.gather([client.submit(_histogram, h, edges, pure=False) for h in held])
            return tuple(np.sum([p[i] for p in parts_h], axis=0) for i in range(3))  # type: ignore[return-value]

        def window(lo: float, hi: float) -> Breakpoints:
            return Breakpoints.concat(client.gather([client.submit(_window, h, lo, hi, pure=False) for h in held]))

        allocation = PriceSolver(base, histogram, window).solve(budget)
        curve = spend_curve(base, histogram)
    finally:
        client.cancel(held)
    return allocation, curve
