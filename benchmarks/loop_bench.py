"""The closed loop on the simulated world, over several seeds, against its floors, ceiling and targets.

Run: ``.venv/bin/python benchmarks/loop_bench.py [--rounds 6] [--customers 100000] [--seeds 0,1,2]
[--world default] [--out loop]``; writes benchmarks/results/<out>.md and .json.

Each seed is one `offerlift.loop.run_loop` on its own world (the world's seed is the loop's seed) starting from the
random policy, with the loop's defaults (`LoopConfig`): champion/challenger live test, softmax exploration, the
learner `TrainConfig.for_simulated`. Every value is the world's exact incremental profit per customer over no
offer. The reporting seeds must not be the ones configurations were chosen on (benchmarks/sim_learning.py writes
which seeds those were).
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._env import environment_md
from offerlift.loop import LoopConfig, run_loop
from offerlift.training.train import TrainConfig

OUT = Path(__file__).resolve().parent / "results"
log = logging.getLogger("loop_bench")


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One loop run in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = LoopConfig(
            rounds=args.rounds,
            customers=args.customers,
            seed=seed,
            workdir=Path(tmp) / "loop",
            train=TrainConfig.for_simulated(n_folds=0, seed=seed),
            world=args.world,
            ceiling_sample=args.ceiling_sample,
        )
        t0 = time.perf_counter()
        result = run_loop(cfg, tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}", progress=log.info)
        result["wall_seconds"] = time.perf_counter() - t0
        return result


def _pct(x: float | None) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.0%}"


def _num(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:+.{digits}f}"


def seed_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| round | champion | challenger | served | best single arm | ceiling | oracle | served / ceiling | "
        "greedy / ceiling | served / oracle | A/B lift [95% CI] | true lift | covers | test: diff [bound] | "
        "true diff | verdict | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|---:|---|---:|",
    ]
    for r in result["rounds"]:
        ev = r.get("promotion_evidence") or {}
        test = f"{ev['diff']:+.3f} [{ev['ci'][0]:+.3f}]" if ev else "-"
        lo, hi = r["ab_lift_ci"]
        challenger = f"v{r['challenger_version']}" if r.get("challenger_version") else "-"
        greedy_share = _pct(r.get("greedy_share_of_ceiling"))
        lines.append(
            f"| {r['round']} | v{r['model_version']} | {challenger} "
            f"| {r['policy_value']:+.4f} | {r['best_single_arm_value']:+.4f} | {_num(r.get('ceiling_value'))} "
            f"| {r['oracle_value']:+.4f} | {_pct(r.get('share_of_ceiling'))} | {greedy_share} "
            f"| {_pct(r['share_of_oracle'])} | {r['ab_lift']:+.3f} [{lo:+.3f}, {hi:+.3f}] | {r['true_lift']:+.4f} "
            f"| {'yes' if r['ab_ci_covers_true_lift'] else 'NO'} | {test} | {_num(r.get('true_diff'))} "
            f"| {ev.get('verdict', '-')} | {r['seconds']:.0f} |"
        )
    return lines


def targets(results: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, checked on the runs (computed, not hand-written)."""
    rounds = [r for res in results for r in res["rounds"]]
    lines = []
    above = [
        r["policy_value"] > r["best_single_arm_value"] for res in results for r in res["rounds"] if r["round"] >= 2
    ]
    lines.append(
        f"- Served policy above the best single arm from round 2 on: {sum(above)} of {len(above)} rounds "
        f"({'met' if above and all(above) else 'NOT met'})."
    )
    last = [res["rounds"][-1] for res in results]
    if all(r.get("ceiling_value") for r in last):
        served = [r["share_of_ceiling"] for r in last]
        greedy = [r["greedy_share_of_ceiling"] for r in last]
        met_s, met_g = ("met" if min(served) >= 0.7 else "NOT met"), ("met" if min(greedy) >= 0.85 else "NOT met")
        lines.append(
            f"- Round {last[0]['round']}: served policy {min(served):.0%}-{max(served):.0%} of the feature ceiling "
            f"(target 70%, stretch 80%: {met_s}); the champion's greedy policy {min(greedy):.0%}-{max(greedy):.0%} "
            f"(target 85%, stretch 95%: {met_g})."
        )
    covers = [r["ab_ci_covers_true_lift"] for r in rounds]
    lines.append(
        f"- A/B report's 95% CI covers the true lift in {sum(covers)} of {len(covers)} rounds "
        f"({sum(covers) / len(covers):.0%}; target 95%)."
    )
    promoted = [r for r in rounds if r["promoted"]]
    false = [r for r in promoted if not (np.isfinite(r.get("true_diff", np.nan)) and r["true_diff"] > 0)]
    tested = [r for r in rounds if r.get("promotion_evidence")]
    lines.append(
        f"- Promotions: {len(promoted)} in {len(tested)} looks of a live test; {len(false)} of them of a challenger "
        "whose exact difference in its last look was <= 0 (the false promotion rate over many draws is in gate.md)."
    )
    return lines


def results_md(results: list[dict[str, Any]], args: argparse.Namespace, load: tuple[Any, Any]) -> str:
    seconds = sum(r["wall_seconds"] for r in results)
    per_round = [r["seconds"] for res in results for r in res["rounds"]]
    serve = [r["serve_seconds"] for res in results for r in res["rounds"]]
    env = environment_md({
        "command": "benchmarks/loop_bench.py " + " ".join(sys.argv[1:]),
        "world": args.world or "default",
        "rounds x customers": f"{args.rounds} x {args.customers:,}",
        "seeds": ",".join(str(s) for s in args.seeds),
        "learner": "TrainConfig.for_simulated (chosen in sim_learning.md on other seeds)",
        "seconds": f"{seconds:.0f} in all; a round {min(per_round):.0f}-{max(per_round):.0f} s, of which deciding "
                   f"{min(serve):.0f}-{max(serve):.0f} s",
        "load average (1 min) at start / end": f"{load[0][0]:.1f} / {load[1][0]:.1f}",
    })  # fmt: skip
    lines = [
        f"# The closed loop on the simulated world ({args.world or 'default'})",
        "",
        env,
        "",
        "Values are the world's exact incremental profit per customer over no offer (no offer = 0). `served` is the "
        "policy that served the round (champion and challenger traffic, 10% holdout, 10% softmax exploration); "
        "`best single arm` the best one coupon for everyone (exact, on the round's customers); `ceiling` the greedy "
        "policy of a model fitted on the noise-free true incremental profit from the observable features (cross-"
        "fitted on a sample of the round's customers); `oracle` the best policy knowing the hidden traits; `greedy` "
        "the champion's own choices for everyone. The test: the live champion/challenger look (challenger minus "
        "champion, per customer outside the holdout) with its always-valid one-sided 95% lower bound; `true diff` "
        "its exact value.",
        "",
        "## Targets",
        "",
        *targets(results),
        "",
    ]
    for res in results:
        lines += [f"## Seed {res['seed']}", "", f"Verdict: {res['verdict']}", "", *seed_table(res), ""]
        cost = [(r["round"], r.get("exploration_cost"), r.get("exploration_cost_uniform")) for r in res["rounds"]]
        cost = [c for c in cost if c[1] is not None and np.isfinite(c[1])]
        if cost:
            lines.append(
                "Exploration's cost per customer (explore share x the greedy value it gives up, exact, on the "
                "champion's scores): " + "; ".join(
                    f"round {k}: softmax {a:+.4f}, uniform {b:+.4f}" for k, a, b in cost) + "."
            )  # fmt: skip
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--world", default=None)
    ap.add_argument("--ceiling-sample", type=int, default=40_000)
    ap.add_argument("--out", default="loop")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "offerlift"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    load_start = os.getloadavg()
    results = []
    for seed in args.seeds:
        results.append(run_seed(args, seed))
        log.info("seed %d: %s", seed, results[-1]["verdict"])
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"{args.out}.json").write_text(json.dumps(results, indent=2, default=str))
    (OUT / f"{args.out}.md").write_text(results_md(results, args, (load_start, os.getloadavg())))
    log.info("wrote %s", OUT / f"{args.out}.md")


if __name__ == "__main__":
    main()
