"""Training on large data: time and peak memory of the S-learner at 1M and 10M rows, next to plain lightgbm.train.

Run (heavy: under the shared lock):
  ``flock /tmp/heavy.lock .venv/bin/python benchmarks/train_scale.py profile [--rows 1000000]``
      where the time goes at one size: reading and encoding (pandas against Arrow batches), binning float64
      against float32, col- against row-wise histograms, max_bin, 1 against 2 threads, OpenMP wait policy,
      lightgbm.dask against in-process, simulating the rows; one outcome, ``--trees`` trees; JSON to stdout and
      the work folder.
  ``flock /tmp/heavy.lock .venv/bin/python benchmarks/train_scale.py run [--rows 1000000,10000000]
  [--construct matrix,sequence] [--merge]``
      for every size and construct mode: `offerlift.training.train_large.fit_large_spec` (3 outcomes, default
      parameters: 200 trees x 31 leaves); at the first size also the floor (plain `lightgbm.train` of the 3 boosters
      on the encoded float64 matrix in memory, one Dataset each, as `fit_spec` does) and `fit_dask_spec` on a
      LocalCluster; writes the "Training on large data" section of benchmarks/results/batch.md (hand-written
      notes in that section are replaced: pass them with --note or add them again).

Every measurement is its own subprocess (OMP_NUM_THREADS=2, OMP_WAIT_POLICY=PASSIVE unless the profile varies
them); its peak memory is VmHWM of that process (no measurement starts children, except dask's threads, which
live in the same process). Training files are simulated units in blocks of 200,000 (`batch_bench.training_file`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_bench import RESULTS, cpu_model, peak_mb, training_file, versions

log = logging.getLogger("train_scale")
OUTCOMES = ["spend", "redeem", "buy"]
LABELS = {
    "matrix": "`fit_large_spec` matrix (float32, one preallocated matrix, binned once)",
    "sequence": "`fit_large_spec` sequence (`ParquetRows`: one batch at a time, binned once)",
}
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/offerlift-batch-bench"))


# --- measurements (child processes) -----------------------------------------------------------------------------


def _setup(path: str) -> tuple[Any, list[str]]:
    import pyarrow.parquet as pq

    from offerlift.simworld.config import load_world_spec

    names = pq.read_schema(path).names
    return load_world_spec()[0], [c for c in names if c not in ("arm", *OUTCOMES)]


def _pandas_matrix(path: str, catalog: Any, features: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray], Any]:
    """The in-memory way: the whole file as a pandas frame, FeatureSpec.encode, arm features appended (float64)."""
    import pyarrow.parquet as pq

    from offerlift.models.scoring import FeatureSpec
    from offerlift.training.train_large import s_arm_table

    frame = pq.read_table(path).to_pandas()
    spec = FeatureSpec.from_frame(frame[features])
    X = spec.encode(frame)
    table = s_arm_table(catalog)
    codes = {a: i for i, a in enumerate(catalog.arm_ids)}
    Z = np.hstack([X, table[frame["arm"].map(codes).to_numpy()]])
    labels = {o: frame[o].to_numpy(dtype=np.float64) for o in OUTCOMES}
    return Z, labels, spec


def floor(path: str) -> dict[str, Any]:
    """Plain lightgbm.train of the 3 boosters on the float64 matrix in memory (one Dataset per outcome)."""
    import lightgbm as lgb

    from offerlift.training.learners_base import lgb_params

    catalog, features = _setup(path)
    t0 = time.perf_counter()
    Z, labels, spec = _pandas_matrix(path, catalog, features)
    prepare = time.perf_counter() - t0
    t0 = time.perf_counter()
    for o in OUTCOMES:
        kind = "binary" if np.isin(labels[o], (0, 1)).all() else "continuous"
        params = lgb_params(None, kind, 0)
        lgb.train(params, lgb.Dataset(Z, label=labels[o], params=params, categorical_feature=spec.categorical_indices))
    return {"rows": len(Z), "prepare_s": prepare, "seconds": time.perf_counter() - t0, "peak_mb": peak_mb()}


def large(path: str, dtype: str, construct: str = "matrix") -> dict[str, Any]:
    """fit_large_spec, 3 outcomes, default parameters."""
    from offerlift.training.train_large import fit_large_spec

    catalog, features = _setup(path)
    t0 = time.perf_counter()
    spec = fit_large_spec(path, catalog, OUTCOMES, "spend", features, dtype=np.dtype(dtype), construct=construct)
    seconds = time.perf_counter() - t0
    return {"rows": _rows(path), "seconds": seconds, "timings": spec["metadata"]["timings"], "peak_mb": peak_mb()}


def _rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def dask_fit(path: str, outcomes: list[str], trees: int) -> dict[str, Any]:
    """fit_dask_spec on a LocalCluster in this process (1 worker, 2 threads)."""
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from offerlift.training.train_dask import fit_dask_spec

    catalog, features = _setup(path)
    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0")
    with cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        fit_dask_spec(
            dd.read_parquet(path),
            catalog,
            outcomes,
            outcomes[0],
            features,
            "s",
            {"num_iterations": trees},
            client=client,
        )
        seconds = time.perf_counter() - t0
    return {"rows": _rows(path), "seconds": seconds, "peak_mb": peak_mb()}


def variants(path: str, trees: int) -> dict[str, Any]:
    """Stage times of one outcome (spend) at `trees` trees under several settings, in one process."""
    import lightgbm as lgb
    import pyarrow.parquet as pq

    from offerlift.training.learners_base import lgb_params
    from offerlift.training.train_large import build_matrix, s_arm_table, scan_feature_spec

    catalog, features = _setup(path)
    out: dict[str, Any] = {"rows": _rows(path), "trees": trees}
    t0 = time.perf_counter()
    frame = pq.read_table(path).to_pandas()
    out["pandas_read_s"] = time.perf_counter() - t0
    del frame
    t0 = time.perf_counter()
    Z64, _, spec = _pandas_matrix(path, catalog, features)
    out["pandas_read_encode_f64_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    files = [Path(path)]
    spec_a = scan_feature_spec(files, features)
    Z32, labels, _ = build_matrix(files, spec_a, s_arm_table(catalog), catalog.arm_ids, ["spend"], np.float32)
    out["arrow_read_encode_f32_s"] = time.perf_counter() - t0
    y = labels["spend"]
    base = {**lgb_params(None, "continuous", 0), "num_iterations": trees}
    cats = spec.categorical_indices
    settings = {
        "f64_auto": (Z64, {}),
        "f32_auto": (Z32, {}),
        "f32_col_wise": (Z32, {"force_col_wise": True}),
        "f32_row_wise": (Z32, {"force_row_wise": True}),
        "f32_max_bin_63": (Z32, {"max_bin": 63}),
        "f32_1_thread": (Z32, {"num_threads": 1}),
    }
    for name, (Z, extra) in settings.items():
        params = {**base, **extra}
        t0 = time.perf_counter()
        ds = lgb.Dataset(Z, label=y, params=params, categorical_feature=cats, free_raw_data=False).construct()
        construct = time.perf_counter() - t0
        t0 = time.perf_counter()
        lgb.train(params, ds)
        out[name] = {"construct_s": construct, "train_s": time.perf_counter() - t0}
        log.info("%s: %s", name, out[name])
        del ds
    out["peak_mb"] = peak_mb()
    return out


def wait_policy(path: str, trees: int) -> dict[str, Any]:
    """Train time of one outcome at `trees` trees from the float32 matrix (under the caller's OMP settings)."""
    import lightgbm as lgb

    from offerlift.training.learners_base import lgb_params
    from offerlift.training.train_large import build_matrix, s_arm_table, scan_feature_spec

    catalog, features = _setup(path)
    files = [Path(path)]
    spec = scan_feature_spec(files, features)
    Z, labels, _ = build_matrix(files, spec, s_arm_table(catalog), catalog.arm_ids, ["spend"])
    params = {**lgb_params(None, "continuous", 0), "num_iterations": trees}
    ds = lgb.Dataset(Z, label=labels["spend"], params=params, categorical_feature=spec.categorical_indices)
    t0 = time.perf_counter()
    lgb.train(params, ds.construct())
    return {"train_s": time.perf_counter() - t0, "omp": os.environ.get("OMP_WAIT_POLICY", "")}


def simulate(block: int) -> dict[str, Any]:
    """Seconds to simulate one block of training units."""
    from offerlift.simworld.experiment import make_experiment

    t0 = time.perf_counter()
    exp = make_experiment(block, seed=100)
    exp.units()
    return {"rows": block, "seconds": time.perf_counter() - t0}


def child_main(argv: list[str]) -> None:
    """Dispatch one measurement; its JSON on the last line of stdout."""
    kind, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if kind == "floor":
        result = floor(rest[0])
    elif kind == "large":
        result = large(*rest)
    elif kind == "dask":
        result = dask_fit(rest[0], rest[1].split(","), int(rest[2]))
    elif kind == "variants":
        result = variants(rest[0], int(rest[1]))
    elif kind == "wait":
        result = wait_policy(rest[0], int(rest[1]))
    else:
        result = simulate(int(rest[0]))
    print(json.dumps(result))


def child(*args: str, env: dict[str, str] | None = None, timeout: float = 3 * 3600) -> dict[str, Any]:
    """Run one measurement in a fresh process; its JSON result (RuntimeError with its stderr if it failed)."""
    full = {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        **(env or {}),
    }
    log.info("running %s %s", " ".join(args), env or "")
    load = os.getloadavg()[0]
    out = subprocess.run(
        [sys.executable, __file__, "child", *args], env=full, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load"] = [load, os.getloadavg()[0]]
    log.info("-> %s", result)
    return result


# --- report -----------------------------------------------------------------------------------------------------


def section(r: dict[str, Any]) -> str:
    """The "Training on large data" section of batch.md."""
    lines = [
        "## Training on large data (S-learner, 3 outcomes, default parameters: 200 trees x 31 leaves)",
        "",
        f"- date: {r['started']} UTC to {r['ended']} UTC, `benchmarks/train_scale.py run` under the shared lock",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores (shared; load average {r['load'][0]:.1f} at the start, "
        f"{r['load'][1]:.1f} at the end; 1-minute figures)",
        f"- versions: {versions()}",
        "- data: simulated units (31 features: 28 numeric, 3 categorical; 21 arms; spend, redeem, buy) in a Parquet "
        "file, blocks of 200,000 (10 distinct, then repeated); 52 model columns with the arm features",
        "- OMP_NUM_THREADS=2, OMP_WAIT_POLICY=PASSIVE; each row is its own process, peak RSS = its VmHWM",
        "",
        "| run | rows | seconds | minutes | peak RSS MB | load average (start, end) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in r["rows"]:
        load = row.get("load")
        lines.append(
            f"| {row['label']} | {row['rows']:,} | {row['seconds']:.0f} | {row['seconds'] / 60:.1f} | "
            f"{row['peak_mb']:,.0f} | {'-' if load is None else f'{load[0]:.1f}, {load[1]:.1f}'} |"
        )
    lines += ["", *[f"- {x}" for x in r["notes"]], ""]
    return "\n".join(lines)


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replace the "## Training on large data" section of the results page (up to the next "## ")."""
    page = path.read_text()
    pattern = re.compile(r"## Training on large data.*?(?=^## )", re.S | re.M)
    found = pattern.search(page)
    page = pattern.sub(lambda _: text + "\n", page, count=1) if found else page.rstrip() + "\n\n" + text
    path.write_text(page)


def run(args: argparse.Namespace) -> None:
    """Measure every size and write the section."""
    sizes = [int(x) for x in args.rows.split(",")]
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    load0 = os.getloadavg()[0]
    r: dict[str, Any] = {"rows": [], "notes": list(args.note or [])}
    saved = WORK / "train_scale.json"
    if args.merge and saved.exists():  # add to the rows of an earlier run (same section)
        prev = json.loads(saved.read_text())
        r = {"rows": prev["rows"], "notes": prev["notes"] + r["notes"]}
        started, load0 = prev.get("started", started), prev.get("load", [load0])[0]
    first = str(training_file(WORK, sizes[0], 10))
    if not args.skip_floor:
        fl = child("floor", first)
        r["rows"].append({"label": "floor: `lightgbm.train` x 3 on the float64 matrix in memory", **fl})
        r["notes"].append(
            f"floor: building its float64 matrix (whole file to pandas, `FeatureSpec.encode`) took "
            f"{fl['prepare_s']:.0f}s more, not counted; its peak RSS includes the pandas frame"
        )
    for n in sizes:
        path = str(training_file(WORK, n, 10))
        for construct in args.construct.split(","):
            res = child("large", path, "float32", construct)
            t = res["timings"]
            r["rows"].append({"label": LABELS[construct], **res})
            r["notes"].append(
                f"{n:,} rows, {LABELS[construct]} stages: read and encode {t['read_encode']:.0f}s, bin "
                f"{t['bin']:.0f}s, train " + ", ".join(f"{o} {t[f'train_{o}']:.0f}s" for o in OUTCOMES)
            )
        if n == sizes[0] and not args.skip_dask:
            r["rows"].append(
                {
                    "label": "`fit_dask_spec` (lightgbm.dask, LocalCluster 1 worker x 2 threads)",
                    **child("dask", path, ",".join(OUTCOMES), "200"),
                }
            )
        (WORK / "train_scale.json").write_text(json.dumps(r, indent=2))
    r.update(started=started, ended=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"))
    r["load"] = [load0, os.getloadavg()[0]]
    (WORK / "train_scale.json").write_text(json.dumps(r, indent=2))
    write_section(section(r), Path(args.out))
    print(section(r))


def profile(args: argparse.Namespace) -> None:
    """Stage and setting comparisons at one size; JSON to stdout and the work folder."""
    n = int(args.rows.split(",")[0])
    path = str(training_file(WORK, n, 10))
    r: dict[str, Any] = {"load_start": os.getloadavg()[0]}
    r["simulate"] = child("simulate", "200000")
    r["variants"] = child("variants", path, str(args.trees))
    r["active"] = child("wait", path, str(args.trees), env={"OMP_WAIT_POLICY": "ACTIVE"})
    r["passive"] = child("wait", path, str(args.trees))
    r["dask_1"] = child("dask", path, "spend", str(args.trees))
    r["load_end"] = os.getloadavg()[0]
    (WORK / f"profile_{n}.json").write_text(json.dumps(r, indent=2))
    print(json.dumps(r, indent=2))


def main() -> None:
    """Parse the mode and run it."""
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("run", "profile"))
    parser.add_argument("--rows", default="1000000,10000000", help="training sizes (profile: the first)")
    parser.add_argument("--trees", type=int, default=50, help="profile: trees of the one-outcome fits")
    parser.add_argument("--construct", default="matrix,sequence", help="run: fit_large_spec's construct modes")
    parser.add_argument("--merge", action="store_true", help="run: add to the rows of the last run")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--note", action="append", help="a note for the section (repeatable)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    WORK.mkdir(parents=True, exist_ok=True)
    run(args) if args.mode == "run" else profile(args)


if __name__ == "__main__":
    main()
