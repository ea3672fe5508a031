"""Calibration of the simulated world against the real experiments: one piece of code on all three sources.

Run: ``.venv/bin/python benchmarks/calibration_bench.py [--world default,low-signal] [--seeds 1,2,3]``; writes
benchmarks/results/calibration.md and calibration.json (``--out PATH`` without suffix writes elsewhere, e.g. for
runs that choose a world's parameters on other seeds; ``--no-real`` skips the real data there).

For each source (Hillstrom and Starbucks through the project's loaders, each simulated world by its preset name or
spec file), with the profit of ``offerlift.training.calibration.PROFIT_RULES``:

- (a) signal per unit: the best single arm's incremental profit per unit over no offer (self-normalized IPS with
  the logged propensities) over the sd of per-unit profit, with a 95% bootstrap CI over customers
  (``signal_stats``); on the world also exactly (the true increment over the same sd);
- (b) the best single arm's increment as a share of the no-offer profit per unit; on the world also exactly, with
  the oracle's and the feature ceiling's values (``offerlift.simworld.calibration``);
- (c) the gain of a fixed learner (``calibration_learner()``: S-learner, fixed LightGBM parameters) over the best
  single arm at ``--size`` units drawn by customer, on 5 held-out folds (``learner_gain``); on the world also the
  exact gain of the same held-out policy over the exact best single arm on the same customers.

Every source is measured on the seeds ``--seeds`` (the subsample and folds on real data; the world's customers,
its experiment and the folds on the simulated one; the feature ceiling's training world is seed + 1000). The
target ranges are computed from the real-data columns by the fixed rule in :func:`targets`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._env import environment_md
from offerlift.datasets import load_dataset
from offerlift.simworld import calibration as exact
from offerlift.simworld.config import resolve_world
from offerlift.simworld.experiment import make_experiment
from offerlift.training.calibration import calibration_learner, learner_gain, profit_rule, signal_stats

RESULTS = Path(__file__).resolve().parent / "results" / "calibration"
log = logging.getLogger("calibration_bench")

#: Everything after this line in the results file is kept when the script rewrites it (targets, notes).
NOTES = "<!-- targets and notes: kept by calibration_bench.py -->"

REAL = ("hillstrom", "starbucks")


def _mean(xs: list[float]) -> dict[str, float]:
    """Mean, min and max over seeds."""
    return {"mean": float(np.mean(xs)), "min": float(np.min(xs)), "max": float(np.max(xs))}


def real_source(name: str, size: int, seeds: list[int], n_boot: int) -> dict[str, Any]:
    """(a), (b) on every unit of a real experiment, (c) at `size` units for each seed."""
    exp = load_dataset(name)
    rule = profit_rule(name)
    t0 = time.perf_counter()
    sig = signal_stats(exp, rule, n_boot=n_boot, seed=0)
    gains = []
    for s in seeds:
        g = learner_gain(exp, rule, size, calibration_learner(seed=s), seed=s, n_boot=n_boot)
        g.pop("policy")
        gains.append({"seed": s, **g})
    return {
        "source": name,
        "rule": rule.describe(),
        "signal": sig,
        "gain": gains,
        "seconds": time.perf_counter() - t0,
    }


def world_seed(world: str, seed: int, customers: int, size: int, ceiling_train: int, n_boot: int) -> dict[str, Any]:
    """Every statistic on one seed of a simulated world: estimates with the shared code and the exact values."""
    rule = profit_rule("simulated")
    t0 = time.perf_counter()
    exp = make_experiment(customers, seed=seed, spec=world)
    sig = signal_stats(exp, rule, n_boot=n_boot, seed=seed)
    ex = exact.exact_stats(exp, profit_sd=sig["profit_sd"]["value"])
    out: dict[str, Any] = {"seed": seed, "signal": sig, "exact": ex}
    if ceiling_train:
        train = make_experiment(ceiling_train, seed=seed + 1000, spec=world)
        ceil = exact.feature_ceiling(train, exp)
        ceil.pop("arms")
        share, of_oracle = ceil["value"] / ex["control_value"], ceil["value"] / ex["oracle_value"]
        out["ceiling"] = {**ceil, "share": share, "of_oracle": of_oracle}
    if size:
        g = learner_gain(exp, rule, size, calibration_learner(seed=seed), seed=seed, n_boot=n_boot)
        policy = g.pop("policy")
        ids = policy["customer_id"]
        sub_exact = exact.policy_value(exp, policy)
        best_sub = max(
            exp.catalog.treatment_arms, key=lambda a: exact.single_arm_value(exp, a, ids)
        )  # the exact best single arm on the same customers
        best_value = exact.single_arm_value(exp, best_sub, ids)
        g["exact"] = {
            "policy_value": sub_exact,
            "best_arm": best_sub,
            "best_arm_value": best_value,
            "gain": sub_exact - best_value,
            "gain_per_sd": (sub_exact - best_value) / g["profit_sd"],
        }
        out["gain"] = g
    out["seconds"] = time.perf_counter() - t0
    log.info("world %s seed %d done in %.0fs", world, seed, out["seconds"])
    return out


def world_source(world: str, seeds: list[int], customers: int, size: int, ceiling_train: int, n_boot: int) -> dict:
    """A simulated world on every seed."""
    path = resolve_world(world)
    runs = [world_seed(world, s, customers, size, ceiling_train, n_boot) for s in seeds]
    return {"source": f"world:{world}", "spec": str(path), "runs": runs}


# --- the targets: a fixed rule on the real-data columns ---------------------------------------------------------


def _typical_ci(gains: list[dict[str, Any]], key: str) -> tuple[float, float, float]:
    """Mean over seeds of the point, the lower and the upper bound of a learner statistic."""
    return tuple(float(np.mean([g[key][b] for g in gains])) for b in ("value", "low", "high"))  # type: ignore[return-value]


def _overlap_or_between(points: list[float], lows: list[float], highs: list[float]) -> tuple[float, float, str]:
    """The values both real experiments are consistent with (the intersection of their 95% CIs) when they overlap,
    else the range between their point estimates."""
    lo, hi = max(lows), min(highs)
    if lo <= hi:
        return lo, hi, "intersection of the real 95% CIs"
    return min(points), max(points), "between the real point estimates (their CIs do not overlap)"


def targets(real: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The calibration targets, from the real-data columns only (fixed before the calibrated world existed).

    - (a) signal per unit: between the two real point estimates; aim at their geometric mean (the data a
      learner or a test needs grows with 1 / signal**2, so the geometric mean sits halfway on that scale).
    - (b) best single arm's share of the no-offer profit: the values both real experiments are consistent with;
      aim at the mean of the two point estimates.
    - (c) the learner's gain over the best single arm per sd of profit, at the fixed size: the values both real
      experiments are consistent with (typical 95% CI over seeds); no aim inside the range.
    """
    sig = [real[n]["signal"]["signal"] for n in REAL]
    share = [real[n]["signal"]["best_arm_share"] for n in REAL]
    gain = [_typical_ci(real[n]["gain"], "gain_per_sd") for n in REAL]
    a_lo, a_hi = sorted(s["value"] for s in sig)
    b_lo, b_hi, b_rule = _overlap_or_between(
        [s["value"] for s in share], [s["low"] for s in share], [s["high"] for s in share]
    )
    c_lo, c_hi, c_rule = _overlap_or_between([g[0] for g in gain], [g[1] for g in gain], [g[2] for g in gain])
    return {
        "signal": {
            "low": a_lo,
            "high": a_hi,
            "aim": float(np.sqrt(a_lo * a_hi)),
            "rule": "between the real point estimates; aim at their geometric mean",
        },
        "best_arm_share": {
            "low": b_lo,
            "high": b_hi,
            "aim": float(np.mean([s["value"] for s in share])),
            "rule": b_rule + "; aim at the mean of the real points",
        },
        "gain_per_sd": {"low": c_lo, "high": c_hi, "aim": None, "rule": c_rule},
    }


def in_range(x: float, t: dict[str, Any]) -> str:
    """'yes' when x lies in the target range."""
    return "yes" if t["low"] <= x <= t["high"] else "**no**"


# --- the results file -------------------------------------------------------------------------------------------


def _ci(d: dict[str, float], fmt: str = "+.4f") -> str:
    return f"{d['value']:{fmt}} [{d['low']:{fmt}}, {d['high']:{fmt}}]"


def _seeds(xs: list[float], fmt: str = "+.4f") -> str:
    m = _mean(xs)
    return f"{m['mean']:{fmt}} [{m['min']:{fmt}}, {m['max']:{fmt}}]"


def table_md(real: dict[str, dict[str, Any]], worlds: list[dict[str, Any]], tgt: dict[str, Any], size: int) -> str:
    """The side-by-side table: real sources (value [95% CI]), worlds (mean [min, max] over seeds), targets."""
    head = ["statistic", "Hillstrom", "Starbucks", *[f"`{w['source'][6:]}` world" for w in worlds], "target"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]

    def row(label: str, real_cells: list[str], world_cells: list[str], target: str = "") -> None:
        lines.append("| " + " | ".join([label, *real_cells, *world_cells, target]) + " |")

    def rs(n: str, key: str, fmt: str = "+.4f") -> str:
        return _ci(real[n]["signal"][key], fmt)

    def ws(w: dict[str, Any], f: Any, fmt: str = "+.4f") -> str:
        vals = [f(r) for r in w["runs"] if f(r) is not None]
        return _seeds(vals, fmt) if vals else "-"

    row(
        "units (customers)",
        [f"{real[n]['signal']['units']:,} ({real[n]['signal']['customers']:,})" for n in REAL],
        [f"{w['runs'][0]['signal']['units']:,} per seed" for w in worlds],
    )
    row(
        "best single arm (estimated)",
        [f"`{real[n]['signal']['best_arm']}`" for n in REAL],
        [", ".join(sorted({f"`{r['signal']['best_arm']}`" for r in w["runs"]})) for w in worlds],
    )
    row(
        "best single arm (exact)",
        ["-", "-"],
        [", ".join(sorted({f"`{r['exact']['best_arm']}`" for r in w["runs"]})) for w in worlds],
    )
    row(
        "no-offer profit per unit",
        [rs(n, "control_value", ".4f") for n in REAL],
        [ws(w, lambda r: r["signal"]["control_value"]["value"], ".4f") for w in worlds],
    )
    row("  exact", ["-", "-"], [ws(w, lambda r: r["exact"]["control_value"], ".4f") for w in worlds])
    row(
        "sd of per-unit profit",
        [rs(n, "profit_sd", ".3f") for n in REAL],
        [ws(w, lambda r: r["signal"]["profit_sd"]["value"], ".3f") for w in worlds],
    )
    row(
        "best single arm's increment per unit",
        [rs(n, "best_arm_value") for n in REAL],
        [ws(w, lambda r: r["signal"]["best_arm_value"]["value"]) for w in worlds],
    )
    row("  exact", ["-", "-"], [ws(w, lambda r: r["exact"]["best_arm_value"]) for w in worlds])
    a = tgt["signal"]
    row(
        "**(a) signal per unit** (increment / sd)",
        [rs(n, "signal") for n in REAL],
        [ws(w, lambda r: r["signal"]["signal"]["value"]) for w in worlds],
        f"[{a['low']:.4f}, {a['high']:.4f}], aim {a['aim']:.4f}",
    )
    row(
        "  exact (true increment / sd)",
        ["-", "-"],
        [ws(w, lambda r: r["exact"]["signal"]) for w in worlds],
        ", ".join(f"in range: {in_range(np.mean([r['exact']['signal'] for r in w['runs']]), a)}" for w in worlds),
    )
    b = tgt["best_arm_share"]
    row(
        "**(b) best single arm / no-offer profit**",
        [rs(n, "best_arm_share", ".3f") for n in REAL],
        [ws(w, lambda r: r["signal"]["best_arm_share"]["value"], ".3f") for w in worlds],
        f"[{b['low']:.3f}, {b['high']:.3f}], aim {b['aim']:.3f}",
    )
    row(
        "  exact",
        ["-", "-"],
        [ws(w, lambda r: r["exact"]["best_arm_share"], ".3f") for w in worlds],
        ", ".join(
            f"in range: {in_range(np.mean([r['exact']['best_arm_share'] for r in w['runs']]), b)}" for w in worlds
        ),
    )
    row(
        "  oracle / no-offer profit (exact)",
        ["-", "-"],
        [ws(w, lambda r: r["exact"]["oracle_share"], ".3f") for w in worlds],
        "reported",
    )
    row(
        "  feature ceiling / no-offer profit (exact)",
        ["-", "-"],
        [ws(w, lambda r: r.get("ceiling", {}).get("share"), ".3f") for w in worlds],
        "reported",
    )
    row(
        "  feature ceiling / oracle (exact)",
        ["-", "-"],
        [ws(w, lambda r: r.get("ceiling", {}).get("of_oracle"), ".3f") for w in worlds],
        "reported",
    )
    row(
        "  oracle sends nothing to",
        ["-", "-"],
        [ws(w, lambda r: r["exact"]["oracle_share_none"], ".1%") for w in worlds],
    )

    def rg(n: str, key: str, fmt: str = "+.4f") -> str:
        v, lo, hi = _typical_ci(real[n]["gain"], key)
        vals = [g[key]["value"] for g in real[n]["gain"]]
        return f"{v:{fmt}} [{lo:{fmt}}, {hi:{fmt}}] (seeds {min(vals):{fmt}}..{max(vals):{fmt}})"

    c = tgt["gain_per_sd"]
    row(
        f"learner's gain over the best single arm at {size:,} units",
        [rg(n, "gain") for n in REAL],
        [ws(w, lambda r: r.get("gain", {}).get("gain", {}).get("value")) for w in worlds],
    )
    row(
        "  exact (same held-out policy, exact best arm)",
        ["-", "-"],
        [ws(w, lambda r: r.get("gain", {}).get("exact", {}).get("gain")) for w in worlds],
    )
    row(
        "**(c) learner's gain / sd**",
        [rg(n, "gain_per_sd") for n in REAL],
        [ws(w, lambda r: r.get("gain", {}).get("gain_per_sd", {}).get("value")) for w in worlds],
        f"[{c['low']:+.4f}, {c['high']:+.4f}]",
    )
    row(
        "  exact",
        ["-", "-"],
        [ws(w, lambda r: r.get("gain", {}).get("exact", {}).get("gain_per_sd")) for w in worlds],
        ", ".join(
            f"in range: {in_range(np.mean([r['gain']['exact']['gain_per_sd'] for r in w['runs']]), c)}"
            for w in worlds
            if all("gain" in r for r in w["runs"])
        ),
    )
    row(
        "  learner's relative gain (gain / best arm)",
        [rg(n, "relative_gain", "+.3f") for n in REAL],
        [ws(w, lambda r: r.get("gain", {}).get("relative_gain", {}).get("value"), "+.3f") for w in worlds],
    )
    return "\n".join(lines)


def seeds_md(worlds: list[dict[str, Any]]) -> str:
    """Per seed of every world: the exact figures the table averages."""
    head = "| world | seed | signal (est. [95% CI]) | signal exact | best arm share exact | oracle share | "
    head += "ceiling share | gain / sd (est. [95% CI]) | gain / sd exact |"
    lines = [head, "|---|" + "---:|" * 8]
    for w in worlds:
        for r in w["runs"]:
            g = r.get("gain")
            lines.append(
                f"| `{w['source'][6:]}` | {r['seed']} | {_ci(r['signal']['signal'])} | {r['exact']['signal']:+.4f} | "
                f"{r['exact']['best_arm_share']:.3f} | {r['exact']['oracle_share']:.3f} | "
                + (f"{r['ceiling']['share']:.3f}" if "ceiling" in r else "-")
                + " | "
                + (f"{_ci(g['gain_per_sd'])} | {g['exact']['gain_per_sd']:+.4f}" if g else "- | -")
                + " |"
            )
    return "\n".join(lines)


def write(path: Path, payload: dict[str, Any], args: argparse.Namespace) -> None:
    """The results files (markdown and JSON); the notes below the marker survive a re-run."""
    real, worlds, tgt = payload["real"], payload["worlds"], payload["targets"]
    env = environment_md(
        {
            "command": "python benchmarks/calibration_bench.py " + " ".join(sys.argv[1:]),
            "seeds": f"{args.seeds} (world: customers, experiment and folds; real data: subsample and folds); "
            "the feature ceiling's training world is seed + 1000",
            "world experiments": f"{args.customers:,} customers, each assigned uniformly at random to one of the "
            "arms it can receive (`make_experiment`)",
            "fixed learner": "`calibration_learner()`: S-learner, one-hot arms + coupon value, "
            "`CALIBRATION_PARAMS` (200 trees, 31 leaves, learning rate 0.05, 1 thread), 5 folds by customer",
            "bootstrap": f"{args.n_boot} resamples of customers, 95% percentile intervals",
            "load average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "run time": f"{payload['seconds']:.0f} s",
        }
    )
    rules = "; ".join(f"{n}: {real[n]['rule']}" for n in REAL) + "; simulated: " + profit_rule("simulated").describe()
    text = (
        "# Calibration: the simulated world against the real experiments\n\n"
        + env
        + "\n\nOne piece of code (`offerlift.training.calibration`) on every source; the world's exact counterparts "
        "from `offerlift.simworld.calibration`. Profit per unit: "
        + rules
        + ". Real data: value [95% CI]; learner rows: mean over the seeds of the value and of the CI bounds (the "
        "seeds' range in brackets). Worlds: mean [min, max] over the seeds. Targets: computed from the real-data "
        "columns by the fixed rule of `targets()` in the script (see the section below).\n\n"
        + table_md(real, worlds, tgt, args.size)
        + "\n\nPer seed:\n\n"
        + seeds_md(worlds)
        + "\n\nTarget rules (from `targets()`): "
        + "; ".join(f"{k}: {v['rule']}" for k, v in tgt.items())
        + ".\n"
    )
    md = path.with_suffix(".md")
    old = md.read_text() if md.exists() else ""
    if NOTES in old:
        text += "\n" + old[old.index(NOTES) :]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    path.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=float))
    log.info("wrote %s and %s", md, path.with_suffix(".json"))


def main() -> None:
    """Parse arguments, measure every source, write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="default", help="comma list of world presets or spec files")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--size", type=int, default=60_000, help="units of the learner's gain (c); 0 skips it")
    ap.add_argument("--customers", type=int, default=200_000, help="customers of each world experiment")
    ap.add_argument("--ceiling-train", type=int, default=100_000, help="0 skips the feature ceiling")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--no-real", action="store_true", help="skip the real data (reuses the JSON's real columns)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results path without suffix")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("offerlift.training.evaluate").setLevel(logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    if args.no_real:
        source = RESULTS.with_suffix(".json")
        real = json.loads(source.read_text())["real"] if source.exists() else None
        if real is None:
            raise SystemExit(f"--no-real needs the real columns of {source}")
    else:
        real = {n: real_source(n, args.size, seeds, args.n_boot) for n in REAL}
    worlds = [
        world_source(w, seeds, args.customers, args.size, args.ceiling_train, args.n_boot)
        for w in args.world.split(",")
    ]
    payload = {"real": real, "worlds": worlds, "targets": targets(real), "seconds": time.perf_counter() - t0}
    payload["args"] = vars(args) | {"out": str(args.out)}
    write(args.out, payload, args)


if __name__ == "__main__":
    main()
