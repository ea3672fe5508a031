"""Summary of the three data sources, with covariate balance: writes benchmarks/results/data.md.

Run: .venv/bin/python benchmarks/data_report.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _env import environment_md

from offerlift.datasets import DATASETS, load_dataset

OUT = Path(__file__).resolve().parent / "results" / "data.md"


def section(name: str) -> str:
    """The markdown section of one data set."""
    t0 = time.perf_counter()
    options = {"n_customers": 100_000, "seed": 0} if name == "simulated" else {}
    exp = load_dataset(name, **options)
    seconds = time.perf_counter() - t0
    s = exp.summary()
    bal = exp.balance().sort_values("max_abs_smd", ascending=False)
    lines = [
        f"## {name}",
        "",
        f"{s['rows']:,} units, {len(s['arms'])} arms, control `{s['control_arm']}` ({s['control_share']:.1%} of units),"
        f" {len(s['features'])} features, loaded in {seconds:.1f} s."
        f" Rows excluded while loading: {s['excluded'] or 0}.",
        "",
        f"| arm | units | mean {s['main_outcome']} |",
        "|---|---:|---:|",
    ]
    lines += [f"| {a} | {v['units']:,} | {v['outcome_mean']:.4f} |" for a, v in s["per_arm"].items()]
    lines += [
        "",
        f"Covariate balance: the largest |SMD| (pooled SD) over all features and arms is {s['max_abs_smd']:.4f}"
        " (|SMD| < 0.1 is negligible; each arm against the control units that could have got it, i.e. with the"
        " channel's consent and reach). Five least balanced features:",
        "",
        "| feature | max abs SMD |",
        "|---|---:|",
    ]
    lines += [f"| {f} | {v:.4f} |" for f, v in bal["max_abs_smd"].head(5).items()]
    return "\n".join(lines)


def main() -> None:
    """Write the report."""
    parts = ["# Data sources", "", environment_md(), ""]
    parts += [section(name) + "\n" for name in DATASETS]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(parts))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
