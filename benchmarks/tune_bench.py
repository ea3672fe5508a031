"""Tuned against default configuration on Hillstrom (3 arms, spend) and Starbucks (11 arms, profit).

Run: ``.venv/bin/python benchmarks/tune_bench.py`` (about 10 minutes on 2 cores; ``--help`` for the budget).
Writes ``benchmarks/results/tune.md``.

Protocol (so that the tuned configuration is judged on data the tuning never saw):
1. Outer split: the customers of each data set are split at random in two halves (``customer_folds``, seed
   ``OUTER_SEED``): the tuning half A and the evaluation half B. A customer's units are all in one half.
2. `offerlift.training.tune.tune` runs on A only: 3 inner folds (grouped by customer), objective = IPS incremental
profit
   per unit of the greedy policy vs no offer on the inner held-out folds, MedianPruner on the fold values,
   seeded TPE; the first trial is the default configuration (T-learner, the learners' LightGBM defaults),
   then one trial of each other learner (parameters drawn at random).
3. The default configuration and the best trial's configuration are each fitted on all of A and decide for the
   units of B. Their policies are valued on B by IPS with the known propensities, against no offer and the best
   single arm (chosen on B, which flatters that baseline), with paired 95% bootstrap CIs, and the tuned-minus-
   default difference with its own paired CI.
The best inner value is optimistic (a maximum over trials, measured on the folds it was chosen on); the numbers
on B are the honest comparison.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

OUTER_SEED = 2026
INNER_SEED = 0
N_FOLDS = 3
N_BOOT = 1000
#: LightGBM on one thread: the machine is shared, and two OpenMP threads fighting for busy cores are slower.
BASE_PARAMS = {"num_threads": 1}
#: Tuning budget per data set: trials and seconds (whichever ends first; a running trial finishes).
BUDGET = {"hillstrom": (20, 210.0), "starbucks": (15, 300.0)}
#: Narrower than offerlift.training.tune.SPACE on the number of trees, to bound a trial's time.
SPACE = {"num_iterations": (50, 300, True, True)}

log = logging.getLogger("tune_bench")


def outer_split(exp: Any, seed: int) -> tuple[Any, Any]:
    """Two halves of the experiment, grouped by customer: (tuning half, evaluation half)."""
    import numpy as np

    from offerlift.training.evaluate import customer_folds
    from offerlift.training.tune import subset_experiment

    half = customer_folds(exp.units()["customer_id"].to_numpy(), 2, seed)
    return subset_experiment(exp, np.flatnonzero(half == 0)), subset_experiment(exp, np.flatnonzero(half == 1))


def decide(train: Any, test: Any, config: Any) -> tuple[Any, float, float]:
    """Fit `config` on all of `train`, choose the greedy arm for every unit of `test`: (arms, fit s, predict s)."""
    import numpy as np

    from offerlift.models.scoring import ArmScorer
    from offerlift.training.evaluate import allowed_mask, greedy_arms
    from offerlift.training.train import fit_spec

    units = train.units()
    t0 = time.perf_counter()
    spec = fit_spec(
        train,
        config,
        train.features.loc[units.index],
        units["arm"].to_numpy(),
        units,
        units["propensity"].to_numpy(dtype=float),
    )
    t1 = time.perf_counter()
    scorer = ArmScorer(spec)
    test_units = test.units()
    profit = scorer.profit(scorer.predict(scorer.features.encode(test.features.loc[test_units.index])))
    chosen = greedy_arms(profit - profit[:, [0]], allowed_mask(test, test_units.index))
    return np.asarray(test.catalog.arm_ids, dtype=object)[chosen], t1 - t0, time.perf_counter() - t1


def judge(test: Any, policies: dict[str, Any]) -> dict[str, Any]:
    """IPS value on `test` of each policy vs no offer and the best arm, and the paired tuned-minus-default gain."""
    import numpy as np

    from offerlift.training.evaluate import allowed_mask, realized_profit
    from offerlift.training.policy_value import bootstrap_means, compare_policies
    from offerlift.training.train import outcome_plan

    units = test.units()
    _, value = outcome_plan(test)
    reward = realized_profit(test, value)
    arms, prop = units["arm"].to_numpy(), units["propensity"].to_numpy(dtype=float)
    table = compare_policies(
        policies,
        arms,
        reward,
        prop,
        estimator="ips",
        arm_ids=test.catalog.arm_ids,
        control_arm=test.catalog.control_arm,
        n_boot=N_BOOT,
        seed=OUTER_SEED,
        allowed=allowed_mask(test, units.index),
    )
    contrib = {name: (np.asarray(pol) == arms) * reward / prop for name, pol in policies.items()}
    diff = contrib["tuned"] - contrib["default"]
    boot = bootstrap_means(diff[:, None], N_BOOT, seed=OUTER_SEED)[:, 0]
    lo, hi = np.quantile(boot, [0.025, 0.975])
    agree = float(np.mean(np.asarray(policies["tuned"]) == np.asarray(policies["default"])))
    return {"table": table, "gain": float(diff.mean()), "gain_ci": (float(lo), float(hi)), "agree": agree}


def run_task(name: str, n_trials: int, timeout: float, storage_dir: Path) -> dict[str, Any]:
    """Load, split, tune on A, judge default and tuned on B."""
    from offerlift.datasets import load_dataset
    from offerlift.training.train import TrainConfig
    from offerlift.training.tune import tune

    exp = load_dataset(name)
    tune_half, eval_half = outer_split(exp, OUTER_SEED)
    log.info("%s: %d units to tune on, %d to judge on", name, len(tune_half.assignments), len(eval_half.assignments))
    t0 = time.perf_counter()
    result = tune(
        tune_half,
        n_trials,
        objective="policy_value",
        n_folds=N_FOLDS,
        seed=INNER_SEED,
        storage=f"sqlite:///{storage_dir / f'{name}.db'}",
        study_name=f"bench-{name}",
        timeout=timeout,
        space=SPACE,
        base_params=BASE_PARAMS,
    )
    tune_s = time.perf_counter() - t0
    log.info("%s: tuned in %.0fs: best %.4f %s", name, tune_s, result.best_value, result.best_params)
    default = TrainConfig(learner="t", params=dict(BASE_PARAMS), seed=INNER_SEED)
    policies, timing = {}, {}
    for label, config in (("default", default), ("tuned", result.best_config)):
        policies[label], fit_s, pred_s = decide(tune_half, eval_half, config)
        timing[label] = (fit_s, pred_s)
    verdict = judge(eval_half, policies)
    return {
        "name": name,
        "arms": len(exp.catalog.arm_ids),
        "units": (len(tune_half.assignments), len(eval_half.assignments)),
        "tune": result,
        "tune_seconds": tune_s,
        "timing": timing,
        **verdict,
    }


def _fmt_ci(v: float, lo: float, hi: float) -> str:
    return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _rounded(params: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in params.items()}


def _trial_md(trial: dict[str, Any]) -> str:
    name = trial["params"].get("learner", "?") + ("+mono" if trial["params"].get("monotone") else "")
    if trial["state"] == "COMPLETE":
        return f"{name} {trial['value']:+.3f}"
    return f"{name} p" if trial["state"] == "PRUNED" else f"{name} {trial['state'].lower()}"


def task_md(r: dict[str, Any]) -> list[str]:
    """The markdown section of one data set."""
    res = r["tune"]
    trials = [t for t in res.trials if t["state"] == "COMPLETE"]
    default_inner = next((t["value"] for t in res.trials if t["number"] == 0 and t["value"] is not None), None)
    per_learner: dict[str, float] = {}
    for t in trials:
        key = t["params"]["learner"]
        per_learner[key] = max(per_learner.get(key, -float("inf")), t["value"])
    table = r["table"].set_index("policy")
    lines = [
        f"### {r['name']} ({r['arms']} arms; {r['units'][0]:,} units tuned on, {r['units'][1]:,} judged on)",
        "",
        f"- tuning: {res.n_complete} complete, {res.n_pruned} pruned, {res.n_failed} failed trials in "
        f"{r['tune_seconds']:.0f} s",
        f"- inner held-out IPS vs no offer (tuning half, 3 folds): default {default_inner:+.3f}, "
        f"best trial {res.best_value:+.3f} (optimistic: the max over trials)",
        "- best inner value per learner: " + ", ".join(f"{k} {v:+.3f}" for k, v in sorted(per_learner.items())),
        "- trials in order (learner and inner value; p = pruned): " + ", ".join(_trial_md(t) for t in res.trials),
        f"- best configuration: `{_rounded(res.best_params)}`",
        "",
        "Evaluation half (never seen by the tuning), IPS, 95% paired bootstrap CIs, per unit:",
        "",
        "| policy | value | vs no offer | vs best single arm | fit s | predict s |",
        "|---|---|---|---|---|---|",
    ]
    for label in ("default", "tuned"):
        row = table.loc[label]
        fit_s, pred_s = r["timing"][label]
        vs_none = _fmt_ci(row["vs_control"], row["vs_control_ci_low"], row["vs_control_ci_high"])
        vs_best = _fmt_ci(row["vs_best_arm"], row["vs_best_arm_ci_low"], row["vs_best_arm_ci_high"])
        lines.append(f"| {label} | {row['value']:.3f} | {vs_none} | {vs_best} | {fit_s:.1f} | {pred_s:.1f} |")
    best = table[table["is_baseline"]].iloc[-1]
    lines += [
        f"| {best.name} (best single arm on this half) | {best['value']:.3f} | {best['vs_control']:+.3f} | 0 | | |",
        "",
        f"- tuned minus default on the evaluation half: {_fmt_ci(r['gain'], *r['gain_ci'])} per unit; "
        f"the two policies choose the same arm for {r['agree']:.0%} of the units",
        "",
    ]
    return lines


def write_md(results: list[dict[str, Any]], path: Path, started: float, load: tuple[float, ...]) -> None:
    """Write the results file."""
    from importlib.metadata import version

    from benchmarks._env import environment_md

    extra = {
        "optuna": version("optuna"),
        "seeds": f"outer split {OUTER_SEED}, inner folds / TPE / LightGBM {INNER_SEED}",
        "budget": ", ".join(f"{k}: {n} trials or {s:.0f} s" for k, (n, s) in BUDGET.items()),
        "load average at start (1, 5, 15 min)": ", ".join(f"{x:.1f}" for x in load),
        "wall time": f"{time.perf_counter() - started:.0f} s",
    }
    head = (__doc__ or "").split("\n\n", 2)
    lines = [
        "# Tuning: tuned vs default configuration, judged on held-out customers",
        "",
        environment_md(extra),
        "",
        head[2].strip() if len(head) > 2 else "",
        "",
        "Search space: learner in s, t, x, dr; LightGBM parameters of `offerlift.training.tune.SPACE` with "
        f"num_iterations in {SPACE['num_iterations'][:2]}; LightGBM on one thread. Fit and predict seconds: fit on "
        "the tuning half, predict on the evaluation half.",
        "",
    ]
    for r in results:
        lines += task_md(r)
    path.write_text("\n".join(lines))
    log.info("wrote %s", path)


def main(argv: list[str] | None = None) -> None:
    """Run every data set and write the results file."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(BUDGET), choices=list(BUDGET))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget (trials and seconds)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "tune.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("offerlift.training").setLevel(logging.WARNING)
    started, load = time.perf_counter(), os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="offerlift-tune-bench-") as tmp:
        for name in args.datasets:
            n, seconds = BUDGET[name]
            results.append(run_task(name, max(2, round(n * args.scale)), seconds * args.scale, Path(tmp)))
    write_md(results, args.out, started, load)


if __name__ == "__main__":
    main()
