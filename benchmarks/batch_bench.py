"""Batch decisions and large-data training: throughput, memory and time, next to the bare predict floor.

Run: ``.venv/bin/python benchmarks/batch_bench.py [--customers 1000000] [--memory 1000000,4000000]``; writes
benchmarks/results/batch.md (its "Training on large data" section is kept: `benchmarks/train_scale.py` writes it).

Every measurement runs in its own subprocess (peak memory = that process's ru_maxrss), with OMP_NUM_THREADS=2:
- floor: every booster of the model's `Booster.predict` on the already-encoded matrix of all customers (the bare
  model cost of scoring every customer under every arm), and the same with compiled trees (lleaves);
- batch: `offerlift.serving.batch.run_batch` on the customer file (read, encode, predict, rules, holdout, exploration,
  propensities, write), plain and compiled, at several sizes (memory must not grow with the customers), and with
  a budget (two passes);
- training on large data: `benchmarks/train_scale.py` (it uses `training_file` below).
Customer and training files are simulated in blocks; past `--distinct` blocks they repeat with new ids.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import re
import resource
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results" / "batch.md"
log = logging.getLogger("batch_bench")


def peak_mb() -> float:
    """Peak resident memory of this process, MB: VmHWM of /proc/self/status.

    Not ru_maxrss: for a process started by fork + exec, Linux's ru_maxrss also counts the parent's pages at the
    fork, so a child of a big parent reports the parent's size.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_model() -> str:
    """CPU model name."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# --- set-up (parent) --------------------------------------------------------------------------------------------


def model_spec(work: Path, units: int, trees: int) -> Path:
    """A T-learner trained on a simulated experiment, default parameters but `trees` trees (cached in `work`)."""
    path = work / f"model_t_{units}_{trees}.json"
    if not path.exists():
        from offerlift.simworld.experiment import make_experiment
        from offerlift.training.train import TrainConfig, train_model

        t0 = time.perf_counter()
        result = train_model(make_experiment(units, seed=0), TrainConfig("t", {"num_iterations": trees}, n_folds=0))
        path.write_text(json.dumps(result.spec))
        log.info("trained the benchmark model in %.0fs", time.perf_counter() - t0)
    return path


def customer_file(work: Path, n: int, distinct: int) -> Path:
    """A simulated customer base of n customers (cached)."""
    from offerlift.simworld.customers import write_customer_file

    path = work / f"customers_{n}.parquet"
    if not path.exists():
        t0 = time.perf_counter()
        write_customer_file(path.with_suffix(".tmp"), n, seed=0, block=100_000, distinct=distinct)
        path.with_suffix(".tmp").rename(path)
        log.info("wrote %s in %.0fs", path.name, time.perf_counter() - t0)
    return path


def training_file(work: Path, n: int, distinct: int, block: int = 200_000) -> Path:
    """n simulated experiment units (features, arm, outcomes) in Parquet (cached)."""
    from offerlift.simworld.experiment import make_experiment

    path = work / f"train_{n}.parquet"
    if path.exists():
        return path
    t0 = time.perf_counter()
    cache: dict[int, pa.Table] = {}
    writer = None
    for b, lo in enumerate(range(0, n, block)):
        key = b % distinct
        if key not in cache:
            exp = make_experiment(block, seed=100 + key)
            units = exp.units()
            frame = pd.concat([exp.features.loc[units.index], units[["arm", "spend", "redeem", "buy"]]], axis=1)
            cache[key] = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        table = cache[key].slice(0, min(block, n - lo))
        if writer is None:
            writer = pq.ParquetWriter(path.with_suffix(".tmp"), table.schema)
        writer.write_table(table.cast(writer.schema))
    writer.close()
    path.with_suffix(".tmp").rename(path)
    log.info("wrote %s in %.0fs", path.name, time.perf_counter() - t0)
    return path


def child(*args: str, timeout: float = 3600) -> dict[str, Any]:
    """Run this script's child mode in a fresh process (OMP_NUM_THREADS=2); its JSON result."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    cmd = [sys.executable, __file__, "child", *args]
    log.info("running %s", " ".join(args))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    log.info("-> %s", {k: v for k, v in result.items() if k != "summary"})
    return result


# --- measurements (child) ---------------------------------------------------------------------------------------


def load_scorer(spec_path: str, compiled: bool, work: Path) -> Any:
    """The benchmark scorer, plain or compiled (compile time reported)."""
    from offerlift.models.scoring import ArmScorer

    scorer = ArmScorer(json.loads(Path(spec_path).read_text()))
    if not compiled:
        return scorer, 0.0
    from offerlift.models.compiled import compile_scorer

    t0 = time.perf_counter()
    fast = compile_scorer(scorer, work / "compiled", n_jobs=2)
    return fast, time.perf_counter() - t0


def floor(spec_path: str, customers: str, work: Path) -> dict[str, Any]:
    """Bare Booster.predict (and compiled) of every booster on the encoded matrix of all customers."""
    scorer, _ = load_scorer(spec_path, False, work)
    frame = pq.read_table(customers, columns=list(scorer.features.columns)).to_pandas()
    X = scorer.features.encode(frame)
    del frame
    boosters = [b for o in scorer.outcomes.values() for b in o.boosters]
    t0 = time.perf_counter()
    for b in boosters:
        b.predict(X)
    plain = time.perf_counter() - t0
    out = {"rows": X.shape[0], "boosters": len(boosters), "predict_s": plain}
    from offerlift.models.compiled import available

    if available():
        fast, compile_s = load_scorer(spec_path, True, work)
        t0 = time.perf_counter()
        for o in fast.outcomes.values():
            for b in o.boosters:
                b.predict(X)
        out.update(compiled_predict_s=time.perf_counter() - t0, compile_s=compile_s)
        Xs = X[:200_000]
        from offerlift.models.compiled import max_difference, same_decisions

        out.update(compiled_max_diff=max_difference(scorer, fast, Xs), compiled_same=same_decisions(scorer, fast, Xs))
    out["peak_mb"] = peak_mb()
    return out


def batch(spec_path: str, customers: str, work: Path, compiled: bool, budget_share: float | None) -> dict[str, Any]:
    """run_batch on the file; budget = share of the unconstrained expected cost (known from a previous run)."""
    from offerlift.serving.batch import run_batch

    scorer, compile_s = load_scorer(spec_path, compiled, work)
    budget = None
    if budget_share is not None:
        free = json.loads((work / f"free_cost_{Path(customers).stem}.json").read_text())
        budget = budget_share * free["expected_cost"]
    out_path = work / f"out_{Path(customers).stem}_{int(compiled)}_{budget_share}.parquet"
    before = peak_mb()
    summary = run_batch(scorer, customers, out_path, budget=budget, progress=False)
    if budget is None:
        (work / f"free_cost_{Path(customers).stem}.json").write_text(json.dumps(summary))
    out_path.unlink()
    return {
        "rows": summary["rows"],
        "seconds": summary["seconds"],
        "customer_arms_per_s": summary["customer_arms_per_s"],
        "compile_s": compile_s,
        "peak_mb": peak_mb(),
        "peak_before_mb": before,
        "summary": {k: v for k, v in summary.items() if k != "spend_curve"},
    }


def child_main(argv: list[str]) -> None:
    """Dispatch a child measurement and print its JSON on the last line."""
    kind, rest = argv[0], argv[1:]
    work = Path(os.environ.get("BENCH_WORK", "/tmp/offerlift-batch-bench"))
    if kind == "floor":
        result = floor(rest[0], rest[1], work)
    else:
        share = None if rest[3] == "none" else float(rest[3])
        result = batch(rest[0], rest[1], work, rest[2] == "compiled", share)
    print(json.dumps(result))


# --- report -----------------------------------------------------------------------------------------------------


def versions() -> str:
    """Versions of the packages that matter here."""
    names = ("lightgbm", "numpy", "pandas", "pyarrow", "dask", "distributed", "lleaves", "llvmlite")
    return ", ".join(f"{p} {version(p)}" for p in names) + f", Python {platform.python_version()}"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(r: dict[str, Any], args: argparse.Namespace, started: str, load: tuple[float, float]) -> str:
    """The results page."""
    n = r["floor"]["rows"]
    k = r["arms"]
    fl = r["floor"]
    floor_rate = n * k / fl["predict_s"]
    lines = [
        "# Batch decisions and large-data training",
        "",
        f"- date: {started} UTC",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores (shared with other sessions; load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end), Linux {platform.release()}",
        f"- versions: {versions()}",
        f"- model: T-learner, default LightGBM parameters (31 leaves) with {args.trees} trees, trained on "
        f"{args.model_units:,} simulated units; {fl['boosters']} boosters (3 outcomes x {k} arms)",
        f"- customers: simulated (`offerlift.simworld.customers.write_customer_file`), {k} arms incl. no offer; "
        "OMP_NUM_THREADS=2, OMP_WAIT_POLICY=PASSIVE",
        "- every row below is its own process; memory is that process's peak RSS (VmHWM)",
        "",
        f"## Throughput: {n:,} customers x {k} arms",
        "",
        "| run | seconds | customer-arms/s | vs bare predict | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
        f"| floor: bare `Booster.predict` of every booster on the encoded matrix | {fl['predict_s']:.1f} | "
        f"{floor_rate:,.0f} | 1.00 | {_mb(fl.get('peak_mb'))} |",
    ]
    if "compiled_predict_s" in fl:
        lines.append(
            f"| floor, compiled trees (lleaves) | {fl['compiled_predict_s']:.1f} | "
            f"{n * k / fl['compiled_predict_s']:,.0f} | {fl['predict_s'] / fl['compiled_predict_s']:.2f} | - |"
        )
    for name, label in (
        ("plain", "run_batch (read, encode, predict, rules, policy, write)"),
        ("compiled", "run_batch, compiled trees"),
        ("budget", "run_batch with a budget (two passes), compiled trees"),
        ("budget_plain", "run_batch with a budget (two passes)"),
    ):
        if name in r:
            b = r[name]
            lines.append(
                f"| {label} | {b['seconds']:.1f} | {b['customer_arms_per_s']:,.0f} | "
                f"{b['customer_arms_per_s'] / floor_rate:.2f} | {_mb(b.get('peak_mb'))} |"
            )
    if "budget" in r or "budget_plain" in r:
        s = (r.get("budget") or r["budget_plain"])["summary"]
        lines += [
            "",
            f"Budget run: budget {s['budget']:,.0f} (half of the unconstrained expected cost), price "
            f"{s['price']:.4g}, expected spend {s['expected_cost']:,.2f}, expected incremental profit "
            f"{s['expected_incremental_profit']:,.2f} (Lagrangian alone {s['lagrangian_value']:,.2f}), "
            f"{s['own_price_rows']} customers with their own price from the greedy fill.",
        ]
    if "compiled_predict_s" in fl:
        lines += [
            "",
            f"Compiled trees: compiling all {fl['boosters']} boosters took {fl['compile_s']:.0f}s (cached: later loads "
            f"take well under a second); largest prediction difference {fl['compiled_max_diff']:.1e}, same decisions "
            f"on 200,000 customers: {fl['compiled_same']}.",
        ]
    lines += ["", "## Memory against the number of customers", "", "| run | customers | seconds | peak RSS MB |"]
    lines.append("|---|---:|---:|---:|")
    for m in r["memory"]:
        lines.append(f"| {m['label']} | {m['rows']:,} | {m['seconds']:.1f} | {_mb(m.get('peak_mb'))} |")
    lines += ["", training_section(Path(args.out)).rstrip(), "", "## Notes", ""] + [f"- {x}" for x in r["notes"]]
    return "\n".join(lines) + "\n"


def training_section(page: Path) -> str:
    """The "Training on large data" section of the current page (written by train_scale.py), kept as it is."""
    text = page.read_text() if page.exists() else ""
    found = re.search(r"^## Training on large data.*?(?=^## )", text, re.S | re.M)
    return found.group(0) if found else "## Training on large data\n\nSee `benchmarks/train_scale.py`.\n"


def main() -> None:
    """Set up, run every measurement in a subprocess, write the results page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--memory", default="1000000,4000000", help="customer counts of the memory runs")
    parser.add_argument("--memory-plain", action="store_true", help="memory runs without compiled trees")
    parser.add_argument("--model-units", type=int, default=50_000)
    parser.add_argument("--trees", type=int, default=200, help="trees per booster of the benchmark model")
    parser.add_argument("--distinct", type=int, default=10, help="distinct simulated blocks per file")
    parser.add_argument("--work", default="/tmp/offerlift-batch-bench")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--from-json", help="only write the page from a saved results.json (with its args)")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        args = argparse.Namespace(**{**vars(args), **saved.get("args", {})})
        Path(args.out).write_text(report(saved, args, saved["started"], tuple(saved["load"])))
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before LightGBM starts its OpenMP threads
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ["BENCH_WORK"] = str(work)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    load0 = os.getloadavg()[0]
    spec = str(model_spec(work, args.model_units, args.trees))
    arms = len(json.loads(Path(spec).read_text())["arms"])
    cust = str(customer_file(work, args.customers, args.distinct))
    r: dict[str, Any] = {"arms": arms, "notes": [], "memory": []}
    r["floor"] = child("floor", spec, cust)
    r["plain"] = child("batch", spec, cust, "plain", "none")
    r["memory"].append({"label": "run_batch", **r["plain"]})
    from offerlift.models.compiled import available

    mode = "plain" if args.memory_plain or not available() else "compiled"
    if available():
        r["compiled"] = child("batch", spec, cust, "compiled", "none")
        r["budget"] = child("batch", spec, cust, "compiled", "0.5")
        r["memory"].append({"label": "run_batch, compiled trees", **r["compiled"]})
    else:
        r["budget_plain"] = child("batch", spec, cust, "plain", "0.5")
    for n in (int(x) for x in args.memory.split(",")):
        if n == args.customers:
            continue
        path = str(customer_file(work, n, args.distinct))
        label = "run_batch" + (", compiled trees" if mode == "compiled" else "")
        r["memory"].append({"label": label, **child("batch", spec, path, mode, "none")})
    r["notes"].append(
        "OMP_WAIT_POLICY=PASSIVE: on this shared, oversubscribed machine LightGBM's spinning OpenMP threads made "
        "a 2-thread fit 8x slower than a 1-thread fit (100,000 x 54, 200 trees: 61s against 7.3s at load 8); "
        "with PASSIVE the 2-thread fit took 8.7s"
    )
    r["notes"].append(
        f"files: customer blocks of 100,000 and training blocks of 200,000 simulated units; after {args.distinct} "
        "distinct blocks the blocks repeat under new ids (same work per row, less time spent simulating)"
    )
    r.update(
        started=started, load=[load0, os.getloadavg()[0]], args={"trees": args.trees, "model_units": args.model_units}
    )
    Path(args.out).write_text(report(r, args, started, (load0, os.getloadavg()[0])))
    (work / "results.json").write_text(json.dumps(r, indent=2, default=str))
    print(Path(args.out).read_text())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child_main(sys.argv[2:])
    else:
        main()
