"""The closed loop's learning curve on the simulated world: writes benchmarks/results/loop.md (and .json).

Run: .venv/bin/python benchmarks/loop_bench.py [--rounds 6] [--customers 20000] [--seed 0] [--learner s]
Each round serves every customer once through the service's decision code path; values are exact (world truth).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _env import environment_md

from offerlift.loop import LoopConfig, run_loop
from training.train import TrainConfig

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    """Run the loop and write the results."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--learner", default="s")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = LoopConfig(
            rounds=args.rounds,
            customers=args.customers,
            seed=args.seed,
            workdir=Path(tmp) / "loop",
            train=TrainConfig.for_simulated(n_folds=0, seed=args.seed)
            if args.learner == "s"
            else TrainConfig(learner=args.learner, n_folds=0, seed=args.seed),
        )
        t0 = time.perf_counter()
        result = run_loop(cfg, tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        seconds = time.perf_counter() - t0
    rows = result["rounds"]
    lines = [
        "# The closed loop on the simulated world",
        "",
        environment_md(
            {
                "command": " ".join(sys.argv),
                "rounds": str(args.rounds),
                "customers": str(args.customers),
                "seed": str(args.seed),
                "learner": args.learner,
                "seconds": f"{seconds:.0f}",
            }
        ),
        "",
        "Values are the world's exact incremental profit per customer over no offer. `policy` is the policy as served"
        " (model choices with 10% holdout and 10% exploration; round 0 is the random policy), `greedy` the serving"
        " model's own choices for everyone, `oracle` the best possible policy. The A/B lift is the report's estimate"
        " (treated vs holdout, 95% CI); `true lift` is the world's exact value for the treated customers.",
        "",
        "| round | model | policy | greedy | oracle | share of oracle | A/B lift [95% CI] | true lift | CI covers |"
        " promoted | gate diff [95% CI] | challenger greedy (exact) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---|---|---|---:|",
    ]
    for r in rows:
        ev = r["promotion_evidence"]
        lines.append(
            f"| {r['round']} | v{r['model_version']} | {r['policy_value']:+.4f} | {r['greedy_value']:+.4f} |"
            f" {r['oracle_value']:+.4f} | {r['share_of_oracle']:.1%} | {r['ab_lift']:+.3f}"
            f" [{r['ab_lift_ci'][0]:+.3f}, {r['ab_lift_ci'][1]:+.3f}] | {r['true_lift']:+.4f} |"
            f" {'yes' if r['ab_ci_covers_true_lift'] else 'NO'} | {r['promoted']} |"
            f" {ev['diff']:+.3f} [{ev['ci'][0]:+.3f}, {ev['ci'][1]:+.3f}] | {r['challenger_greedy_value']:+.4f} |"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "loop.md").write_text("\n".join(lines) + "\n")
    (OUT / "loop.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {OUT / 'loop.md'}")


if __name__ == "__main__":
    main()
