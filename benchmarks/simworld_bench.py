"""Speed of the simulated world: ground truth for 1,000,000 customers x all arms, against a bare numpy floor.

Run: ``.venv/bin/python benchmarks/simworld_bench.py [--customers N]``; writes benchmarks/results/simworld.md.
Times are best of `--repeats` runs; the floor (drawing an (N, 20) standard-normal float64 array with numpy) is
measured in the same run, and the ratios to it are the figures that travel between machines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from offerlift.simworld.world import SimWorld

RESULTS = Path(__file__).resolve().parent / "results" / "simworld.md"


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Smallest wall time of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peak_mb() -> float:
    """Peak resident memory of this process so far, MB (ru_maxrss is KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def truth_pass(world: SimWorld) -> None:
    """Compute every truth array (buy, spend, redeem, profit, eligible) for everyone, in chunks."""
    for _, truth in world.iter_truth():
        truth.incr  # noqa: B018  (the incremental profit too)


def run(n: int, repeats: int, n_play: int) -> dict[str, object]:
    """All measurements, as a dict."""
    rng = np.random.default_rng(0)
    floor = best_of(lambda: rng.standard_normal((n, 20)), repeats)
    start = time.perf_counter()
    world = SimWorld.default(n, seed=0)
    build = time.perf_counter() - start
    truth_s = best_of(lambda: truth_pass(world), repeats)
    card: dict[str, object] = {}
    score_s = best_of(lambda: card.update(world.scorecard()), repeats)
    rows = rng.integers(0, n, n_play)
    decisions = pd.DataFrame(
        {
            "customer_id": world.customers["customer_id"].to_numpy()[rows],
            "time": rng.uniform(0.0, 168.0, n_play),
            "arm": np.asarray(world.arm_ids, dtype=object)[rng.integers(0, len(world.arm_ids), n_play)],
        }
    )
    play_s = best_of(lambda: world.play(decisions, seed=1, record=False), 1)
    small = SimWorld.default(100_000, seed=0)
    start = time.perf_counter()
    n_events = len(small.history_events())
    history_s = time.perf_counter() - start
    return {
        "n": n,
        "n_arms": len(world.arm_ids),
        "floor": floor,
        "build": build,
        "truth": truth_s,
        "scorecard": score_s,
        "play": play_s,
        "n_play": n_play,
        "history": history_s,
        "n_events": n_events,
        "peak_mb": peak_mb(),
        "card": card,
    }


def report(r: dict[str, object]) -> str:
    """The results as markdown."""
    card = r["card"]
    assert isinstance(card, dict)
    floor = float(r["floor"])  # type: ignore[arg-type]
    lines = [
        "# Simulated world: speed of the ground truth",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores (shared), {platform.system()} {platform.release()}",
        f"- versions: Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}",
        f"- world: default spec (simworld/default.yaml), {r['n']:,} customers x {r['n_arms']} arms (control incl.)",
        "- times: best of the repeats, wall clock; floor = `rng.standard_normal((n, 20))` (float64) in the same run",
        "",
        "| step | seconds | ratio to floor |",
        "|---|---:|---:|",
        f"| floor: numpy standard normal ({r['n']:,} x 20) | {floor:.3f} | 1.00 |",
    ]
    for key, label in (
        ("truth", f"truth: buy, spend, redeem, profit, incr, eligible for {r['n']:,} x {r['n_arms']}"),
        ("scorecard", "scorecard: truth + oracle + value of the oracle and of every single arm"),
        ("build", f"build the world ({r['n']:,} customers, ids, hidden traits, past contacts)"),
        ("play", f"play {r['n_play']:,} decisions (outcomes + events)"),
        ("history", f"pre-period events of a 100,000-customer world ({r['n_events']:,} events)"),
    ):
        sec = float(r[key])  # type: ignore[arg-type]
        lines.append(f"| {label} | {sec:.3f} | {sec / floor:.2f} |")
    lines += [
        "",
        f"Peak memory (ru_maxrss): {float(r['peak_mb']):,.0f} MB.",  # type: ignore[arg-type]
        "",
        f"Policy values on this world at time 0 (mean incremental profit per customer, exact, n = {r['n']:,}):",
        f"oracle {card['oracle']:+.4f}; best single arm ({card['best_single_arm']}, to everyone it can reach) "
        f"{card['best_single_arm_value']:+.4f}; no offer {card['none']:+.4f}; the oracle sends nothing to "
        f"{card['oracle_share_none']:.1%} of customers.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, measure, write the results file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--play", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.getLogger("offerlift.simworld.world").setLevel(logging.ERROR)  # the random decisions break consent rules
    text = report(run(args.customers, args.repeats, args.play))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
