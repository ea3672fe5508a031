"""The closed loop's learning curve on the simulated world: writes benchmarks/results/loop.md (and .json).

Run: .venv/bin/python benchmarks/loop_bench.py [--rounds 6] [--customers 100000] [--seed 0] [--no-open-gate]
Each round serves every customer once through the service's decision code path; values are exact (world truth).
A second run with the gate open (every challenger promoted: ``min_gain`` = -inf) shows what the learner would give
the served policy if the gate could prove its gain, and the round time with a learned model serving.
Next to the oracle each round records the feature ceiling: the exact value of the greedy policy of a model fitted on
the NOISE-FREE true incremental profit of a separate world (``--ceiling-size`` customers, seed 7) from the same
observable features, applied to the round's customers (what the visible features allow; 0 skips it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _env import environment_md

from offerlift.features.eligibility import reachable_arms
from offerlift.loop import LoopConfig, RoundHook, run_loop
from offerlift.simworld.world import SimWorld, make_experiment
from offerlift.training.evaluate import greedy_arms
from offerlift.training.train import TrainConfig

OUT = Path(__file__).resolve().parent / "results"
log = logging.getLogger("loop_bench")


def ceiling_hook(size: int, seed: int = 7, sample: int = 30_000) -> RoundHook:
    """A round hook that values the feature ceiling's greedy policy exactly at the round's time, on `sample` of the
    round's customers (they come in a random order), with the oracle's value on the same customers."""
    import lightgbm as lgb

    from offerlift.training.learners_base import FeatureEncoder

    t0 = time.perf_counter()
    exp = make_experiment(size, seed=seed)
    world = exp.meta["world"]
    incr = world.truth(world.rows_of(exp.assignments["customer_id"])).incr.astype(np.float64)
    enc = FeatureEncoder().fit(exp.features)
    A = enc.transform(exp.features)
    params = {"objective": "regression", "verbosity": -1, "num_leaves": 31, "learning_rate": 0.05}
    data = [lgb.Dataset(A, incr[:, a], categorical_feature=enc.categorical, free_raw_data=False) for a in range(1, 21)]
    boosters = [lgb.train(params, d, 300) for d in data]
    log.info("feature ceiling fitted on %d noise-free units in %.0fs", size, time.perf_counter() - t0)

    def hook(w: SimWorld, units: pd.DataFrame, t: float) -> dict[str, Any]:
        units = units.iloc[:sample]
        feats = units[list(exp.features.columns)]
        B = enc.transform(feats)
        pred = np.zeros((len(B), len(boosters) + 1))
        for a, b in enumerate(boosters, start=1):
            pred[:, a] = b.predict(B)
        arms = greedy_arms(pred, reachable_arms(w.catalog, feats, len(feats)))
        truth = w.truth(w.rows_of(units["customer_id"]), t)
        ceiling, oracle = truth.values(arms).mean(), truth.values(truth.oracle()).mean()
        return {"ceiling_value": float(ceiling), "ceiling_share_of_oracle": float(ceiling / oracle)}

    return hook


def run(args: Any, hook: RoundHook | None, min_gain: float) -> tuple[dict[str, Any], float]:
    """One loop run in a temporary folder; (result, seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = LoopConfig(
            rounds=args.rounds,
            customers=args.customers,
            seed=args.seed,
            workdir=Path(tmp) / "loop",
            train=TrainConfig.for_simulated(n_folds=0, seed=args.seed)
            if args.learner == "s"
            else TrainConfig(learner=args.learner, n_folds=0, seed=args.seed),
            round_hook=hook,
            min_gain=min_gain,
        )
        t0 = time.perf_counter()
        result = run_loop(cfg, tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        return result, time.perf_counter() - t0


def main() -> None:
    """Run the loop and write the results."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--learner", default="s")
    ap.add_argument("--ceiling-size", type=int, default=100_000)
    ap.add_argument("--no-open-gate", action="store_true", help="skip the run with every challenger promoted")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    load_start = os.getloadavg()
    hook = ceiling_hook(args.ceiling_size) if args.ceiling_size else None
    result, seconds = run(args, hook, min_gain=0.0)
    if not args.no_open_gate:
        result["open_gate"], result["open_gate_seconds"] = run(args, hook, min_gain=-1e9)
    result["load_average"] = {"start": load_start, "end": os.getloadavg()}
    result["command"] = " ".join(sys.argv)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "loop.md").write_text(results_md(result, args, seconds))
    (OUT / "loop.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {OUT / 'loop.md'}")


def results_md(result: dict[str, Any], args: Any, seconds: float) -> str:
    """The results file: environment, the curve with the oracle and the ceiling, the gate's evidence, notes."""
    rows = result["rounds"]
    load = result["load_average"]
    env = environment_md(
        {
            "command": result["command"],
            "rounds": str(args.rounds),
            "customers": f"{args.customers:,}",
            "seed": str(args.seed),
            "learner": args.learner,
            "seconds": f"{seconds:.0f} ({seconds / len(rows):.0f} per round)",
            "load average (1 min) at start / end": f"{load['start'][0]:.1f} / {load['end'][0]:.1f}",
        }
    )
    lines = [
        "# The closed loop on the simulated world",
        "",
        env,
        "",
        "Values are the world's exact incremental profit per customer over no offer. `policy` is the policy as served"
        " (model choices with 10% holdout and 10% exploration; round 0 and every round until a promotion serve the"
        " random policy with full exploration), `greedy` the serving model's own choices for everyone, `oracle` the"
        " best possible policy (it knows the hidden traits), `ceiling` the greedy policy of a model fitted on the"
        " noise-free true incremental profit from the observable features (what the features allow; valued on 30,000 of"
        " the round's customers, its share against the oracle on the same customers). The A/B lift is"
        " the report's estimate (treated vs holdout, 95% CI); `true lift` is the world's exact value for the treated.",
        "",
        "| round | model | policy | share of oracle | greedy | ceiling (share) | oracle | A/B lift [95% CI] | true lift"
        " | CI covers | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in rows:
        ceil = r.get("ceiling_value")
        ceil_txt = f"{ceil:+.4f} ({r['ceiling_share_of_oracle']:.0%})" if ceil is not None else "-"
        lines.append(
            f"| {r['round']} | v{r['model_version']} | {r['policy_value']:+.4f} | {r['share_of_oracle']:.1%} |"
            f" {r['greedy_value']:+.4f} | {ceil_txt} | {r['oracle_value']:+.4f} | {r['ab_lift']:+.3f}"
            f" [{r['ab_lift_ci'][0]:+.3f}, {r['ab_lift_ci'][1]:+.3f}] | {r['true_lift']:+.4f} |"
            f" {'yes' if r['ab_ci_covers_true_lift'] else 'NO'} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        "The gate: challenger (trained on every decision so far of the training customers) against the champion on"
        " every decision so far of the judging customers (30%, by hash): paired doubly robust difference per unit"
        " with a cross-fitted reward model, customer-level standard error, promoted when the one-sided 95% lower"
        " bound is above 0. `detectable` is the true difference it would detect with 80% power (2.49 se);"
        " the exact values are those of the two greedy policies on this round's judging customers.",
        "",
        "| round | challenger | units judged (differ) | gate diff [one-sided 95% bound, mirror] | se | detectable |"
        " challenger greedy (exact) | champion greedy (exact) | promoted |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ev = r["promotion_evidence"]
        lines.append(
            f"| {r['round']} | v{r['challenger_version']} | {ev['units']:,} ({ev['units_differ']:,}) |"
            f" {ev['diff']:+.3f} [{ev['ci'][0]:+.3f}, {ev['ci'][1]:+.3f}] | {ev['se']:.3f} | {ev['mde']:.3f} |"
            f" {r['challenger_greedy_value']:+.4f} | {r['champion_greedy_value_judged']:+.4f} | {r['promoted']} |"
        )
    open_gate = result.get("open_gate")
    if open_gate is not None:
        lines += [
            "",
            f"With the gate open (every challenger promoted; {result['open_gate_seconds']:.0f} s in all): what the"
            " learner gives the served policy when a learned model serves (10% holdout, 10% exploration) from round"
            " 1 on. Same world, seed and customers.",
            "",
            "| round | model | policy | share of oracle | greedy | greedy share | ceiling (share) | A/B lift [95% CI] |"
            " true lift | CI covers | seconds |",
            "|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|",
        ]
        for r in open_gate["rounds"]:
            ceil = r.get("ceiling_value")
            ceil_txt = f"{ceil:+.4f} ({r['ceiling_share_of_oracle']:.0%})" if ceil is not None else "-"
            lines.append(
                f"| {r['round']} | v{r['model_version']} | {r['policy_value']:+.4f} | {r['share_of_oracle']:.1%} |"
                f" {r['greedy_value']:+.4f} | {r['greedy_value'] / r['oracle_value']:.1%} | {ceil_txt} |"
                f" {r['ab_lift']:+.3f} [{r['ab_lift_ci'][0]:+.3f}, {r['ab_lift_ci'][1]:+.3f}] | {r['true_lift']:+.4f} |"
                f" {'yes' if r['ab_ci_covers_true_lift'] else 'NO'} | {r['seconds']:.0f} |"
            )
    lines += ["", NOTES_MARKER, ""]
    old = (OUT / "loop.md").read_text() if (OUT / "loop.md").exists() else ""
    if NOTES_MARKER in old:
        lines = [*lines[:-2], old[old.index(NOTES_MARKER) :].rstrip("\n")]
    return "\n".join(lines) + "\n"


#: Everything after this line in loop.md is kept when the script rewrites the tables (hand-written findings).
NOTES_MARKER = "<!-- notes: kept by loop_bench.py -->"


if __name__ == "__main__":
    main()
