"""How close learned policies get to the oracle of the simulated world, by configuration and training size.

Run: ``.venv/bin/python benchmarks/sim_learning.py [--world default] [--sizes 20000,70000] [--seeds 101,102,103]
[--configs t,final]``; writes benchmarks/results/sim_learning.md (and .json, which later runs extend: a (config,
size, seed) already measured is not fitted again unless ``--fresh``).

This is where the loop's learner is chosen, so it runs on SELECTION seeds (101-103 by default; evaluation world
1101, feature-ceiling world 1007), never on the seeds the loop reports (benchmarks/loop_bench.py: 0, 1, 2).

Every model is fitted with `offerlift.training.train.fit_spec` on a uniformly randomized experiment of the world
(``make_experiment(size, seed, spec=world)``), scored with the exported spec (`offerlift.models.scoring.ArmScorer`) on
FRESH customers (another world, ``--eval-customers`` customers, seed ``--eval-seed``), and its greedy policy (largest
positive predicted incremental profit among the arms each customer can receive) is valued exactly with the world's
truth at time 0. References on the same customers: the oracle, the best single arm, and a feature ceiling (LightGBM
fitted on the noise-free true incremental profit of a ``--ceiling-size`` training world: what the visible features
allow).
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
from offerlift.features.experiment import Experiment
from offerlift.models.scoring import ArmScorer
from offerlift.simworld.world import make_experiment
from offerlift.training.evaluate import allowed_mask, greedy_arms
from offerlift.training.train import TrainConfig, fit_spec

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("sim_learning")

#: Everything after this line in the results file is kept when the script rewrites the table.
NOTES = "<!-- notes: kept by sim_learning.py -->"

SMALL_TREES = {"num_iterations": 400, "num_leaves": 7, "min_data_in_leaf": 200}

#: name -> (description, configuration); each adds one thing to the one before it (but "t" and "s").
CONFIGS: dict[str, tuple[str, TrainConfig]] = {
    "t": ("T-learner, default parameters (today's default)", TrainConfig(learner="t")),
    "s": ("S-learner, one-hot arms + coupon value", TrainConfig(learner="s")),
    "s_struct": (
        "S, structured arms (value, min spend, channel, contact cost), monotone in value",
        TrainConfig(learner="s", structured_arms=True, monotone=True),
    ),
    "s_hurdle": (
        "+ hurdle: spend = P(buy) x E[spend of buyers]",
        TrainConfig(learner="s", structured_arms=True, monotone=True, hurdle=True),
    ),
    "s_small": (
        "+ small regularised trees (7 leaves, 200 per leaf, 400 rounds)",
        TrainConfig(learner="s", structured_arms=True, monotone=True, hurdle=True, params=SMALL_TREES),
    ),
    "final": ("+ uplift features only (TrainConfig.for_simulated())", TrainConfig.for_simulated()),
}


WORLD: dict[str, Any] = {"spec": None}  # the world spec file of this run (set by main)


def eval_set(n: int, seed: int) -> dict[str, Any]:
    """Fresh customers: their features, allowed arms, world rows and the references."""
    exp = make_experiment(n, seed=seed, spec=WORLD["spec"])
    world = exp.meta["world"]
    rows = world.rows_of(exp.assignments["customer_id"])
    card = world.scorecard(rows)
    return {
        "exp": exp,
        "X": exp.features.loc[exp.units().index],
        "allowed": allowed_mask(exp),
        "rows": rows,
        "card": card,
    }


def value_of(ev: dict[str, Any], incr: np.ndarray) -> tuple[float, float]:
    """Exact value of the greedy policy on `incr`, and the share of customers it sends nothing."""
    arms = greedy_arms(incr, ev["allowed"])
    return ev["exp"].meta["world"].policy_value(arms, rows=ev["rows"], time=0.0), float(np.mean(arms == 0))


def run_one(name: str, size: int, seed: int, ev: dict[str, Any]) -> dict[str, Any]:
    """Fit configuration `name` on `size` randomized units of world `seed` and value it on the eval set."""
    config = CONFIGS[name][1]
    exp = make_experiment(size, seed=seed, spec=WORLD["spec"])
    units = exp.units()
    X = exp.features.loc[units.index]
    t0 = time.perf_counter()
    spec = fit_spec(exp, config, X, units["arm"].to_numpy(), units, units["propensity"].to_numpy(float))
    fit_s = time.perf_counter() - t0
    scorer = ArmScorer(spec)
    value, none = value_of(ev, scorer.incremental_profit(scorer.features.encode(ev["X"])))
    log.info("%s n=%d seed=%d: %+.4f (fit %.0fs)", name, size, seed, value, fit_s)
    return {"config": name, "size": size, "seed": seed, "value": value, "share_none": none, "fit_seconds": fit_s}


def feature_ceiling(size: int, seed: int, ev: dict[str, Any]) -> float:
    """Value of a policy from LightGBM fitted on the noise-free true incremental profit (one model per arm)."""
    import lightgbm as lgb

    from offerlift.training.learners_base import FeatureEncoder

    exp: Experiment = make_experiment(size, seed=seed, spec=WORLD["spec"])
    world = exp.meta["world"]
    incr = world.truth(world.rows_of(exp.assignments["customer_id"])).incr.astype(np.float64)
    enc = FeatureEncoder().fit(exp.features)
    A, B = enc.transform(exp.features), enc.transform(ev["X"])
    params = {"objective": "regression", "verbosity": -1, "num_threads": 1, "num_leaves": 31, "learning_rate": 0.05}
    pred = np.zeros((len(B), incr.shape[1]))
    for a in range(1, incr.shape[1]):
        pred[:, a] = lgb.train(params, lgb.Dataset(A, incr[:, a], categorical_feature=enc.categorical), 300).predict(B)
    return value_of(ev, pred)[0]


def table_md(results: list[dict[str, Any]], card: dict[str, Any], ceiling: float | None) -> str:
    """Configuration x size -> mean exact value (share of oracle), with the seeds' range."""
    sizes = sorted({r["size"] for r in results})
    oracle, best = card["oracle"], card["best_single_arm_value"]
    n_seeds = {s: len({r["seed"] for r in results if r["size"] == s}) for s in sizes}
    head = "| configuration | " + " | ".join(f"{s:,} units ({n_seeds[s]} seeds)" for s in sizes) + " |"
    lines = [head, "|---|" + "---:|" * len(sizes)]
    for name, (desc, _) in CONFIGS.items():
        cells = []
        for s in sizes:
            vals = [r["value"] for r in results if r["config"] == name and r["size"] == s]
            if not vals:
                cells.append("")
                continue
            m = float(np.mean(vals))
            spread = f" [{min(vals):+.3f}, {max(vals):+.3f}]" if len(vals) > 1 else ""
            cells.append(f"{m:+.3f} ({m / oracle:.0%}; {m - best:+.3f}){spread}")
        if any(cells):
            lines.append(f"| `{name}`: {desc} | " + " | ".join(cells) + " |")
    refs = [
        f"- oracle (hidden traits known): {oracle:+.4f}; best single arm ({card['best_single_arm']}, to everyone it "
        f"reaches): {best:+.4f} ({best / oracle:.0%} of the oracle); no offer: 0.",
    ]
    if ceiling is not None:
        refs.append(
            f"- feature ceiling (LightGBM on the noise-free true incremental profit of a training world): "
            f"{ceiling:+.4f} ({ceiling / oracle:.0%} of the oracle)."
        )
    return "\n".join(lines) + "\n\n" + "\n".join(refs)


def findings_md(results: list[dict[str, Any]], card: dict[str, Any], ceiling: float | None, population: Any) -> str:
    """Notes computed from the numbers: how far the best learner is from the feature ceiling and the oracle."""
    oracle, best_arm = card["oracle"], card["best_single_arm_value"]
    sizes = sorted({r["size"] for r in results})
    means = {
        (name, s): float(np.mean([r["value"] for r in results if r["config"] == name and r["size"] == s]))
        for name in CONFIGS
        for s in sizes
        if any(r["config"] == name and r["size"] == s for r in results)
    }
    (top_name, top_size), top = max(means.items(), key=lambda kv: kv[1])
    lines = [
        "## Notes (computed from the table by sim_learning.py)",
        "",
        f"- The oracle knows each customer's hidden traits (price sensitivity, sd {population.sensitivity_sd} on the "
        f"logit, an indifferent share of {population.indifferent_share:.0%}, base buying rate, basket); a policy sees "
        "only the point-in-time features.",
    ]
    if ceiling is not None:
        lines.append(
            f"- Feature ceiling: a model fitted on the NOISE-FREE true incremental profit from the same observable "
            f"features reaches {ceiling:+.4f} = {ceiling / oracle:.0%} of the oracle ({oracle:+.4f}). It is an "
            "estimate (a fitted model, not the exact best policy on these features), but no policy learned from "
            "noisy outcomes with these features can be expected much above it: a target of 90% of the oracle is out "
            "of reach in this world whatever the learner or the data size."
        )
    lines.append(
        f"- Best learned policy: `{top_name}` at {top_size:,} units, {top:+.4f} = {top / oracle:.0%} of the oracle"
        + (f", {top / ceiling:.0%} of the feature ceiling" if ceiling else "")
        + f"; the best single arm for everyone earns {best_arm:+.4f} ({best_arm / oracle:.0%})."
    )
    final = [(s, means[("final", s)]) for s in sizes if ("final", s) in means]
    if len(final) > 1:
        curve = ", ".join(f"{s:,}: {v:+.3f}" for s, v in final)
        lines.append(
            f"- `final` by training size (mean over seeds): {curve}. Not monotone below 100,000 units (the seeds' "
            "spread is as large as the steps); the largest size is the best."
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default=None, help="world preset or spec file (default: the default world)")
    ap.add_argument("--sizes", default="20000,70000,200000")
    ap.add_argument("--seeds", default="101,102,103")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--eval-customers", type=int, default=50_000)
    ap.add_argument("--eval-seed", type=int, default=1101)
    ap.add_argument("--out", default="sim_learning")
    ap.add_argument("--ceiling-size", type=int, default=200_000, help="0 skips the feature ceiling")
    ap.add_argument("--fresh", action="store_true", help="ignore earlier results in the JSON file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from offerlift.simworld.config import resolve_world

    WORLD["spec"] = resolve_world(args.world)
    path = RESULTS / f"{args.out}.json"
    saved = {} if args.fresh or not path.exists() else json.loads(path.read_text())
    done = {(r["config"], r["size"], r["seed"]): r for r in saved.get("results", [])}
    ev = eval_set(args.eval_customers, args.eval_seed)
    ceiling = saved.get("ceiling")
    if args.ceiling_size and ceiling is None:
        ceiling = feature_ceiling(args.ceiling_size, 1007, ev)
    for size in map(int, args.sizes.split(",")):
        for seed in map(int, args.seeds.split(",")):
            for name in args.configs.split(","):
                if (name, size, seed) not in done:
                    done[(name, size, seed)] = run_one(name, size, seed, ev)
                    results = sorted(done.values(), key=lambda r: (r["config"], r["size"], r["seed"]))
                    path.write_text(json.dumps({"results": results, "ceiling": ceiling}, indent=1))
    results = sorted(done.values(), key=lambda r: (r["config"], r["size"], r["seed"]))
    write_md(results, ev["card"], ceiling, args, ev["exp"].meta["world"].config.population)


def write_md(
    results: list[dict[str, Any]], card: dict[str, Any], ceiling: float | None, args: Any, population: Any
) -> None:
    """The results file: environment, the table and how to read it."""
    seeds = sorted({r["seed"] for r in results})
    env = environment_md(
        {
            "world": args.world or "default",
            "training data": f"make_experiment(size, seed) for seeds {seeds} (uniform randomization over "
            "each customer's eligible arms); these are selection seeds: the loop reports on others",
            "evaluation": f"{args.eval_customers:,} fresh customers (world seed {args.eval_seed}), exact value at "
            "time 0, greedy policy on the exported scorer",
            "threads": "OMP_NUM_THREADS=1",
        }
    )
    text = (
        "# Learning policies on the simulated world\n\n"
        + env
        + "\n\nExact incremental profit per customer of the learned policy (mean over the seeds), its share of the "
        "oracle's, and its gain over the best single arm; [min, max] over the seeds.\n\n"
        + table_md(results, card, ceiling)
        + "\n\n"
        + findings_md(results, card, ceiling, population)
        + "\n"
    )
    path = RESULTS / f"{args.out}.md"
    old = path.read_text() if path.exists() else ""
    if NOTES in old:  # hand-written findings below the marker survive a re-run
        text += "\n" + old[old.index(NOTES) :]
    path.write_text(text)


if __name__ == "__main__":
    main()
