"""False promotions and power of the champion/challenger test, against the world's exact values.

Run: ``.venv/bin/python benchmarks/gate_bench.py [--customers 100000] [--draws 200] [--world default]``;
writes benchmarks/results/gate.md and gate.json.

Models: the loop's learner (`TrainConfig.for_simulated`) fitted on uniformly randomized experiments of the same
world spec (seeds 501-503, never the benchmark's population) of different sizes, so that their policies differ in
quality. Population: one world of ``--customers`` customers (seed ``--population-seed``), features at time 0.

Pairs (champion, challenger): ``same`` (a model against itself: the exact difference is 0, the hardest null),
``worse`` (a weaker challenger), ``better`` and ``slightly better`` (stronger challengers: power). For each pair and
draw, up to ``--looks`` periods are played: each period draws the challenger's customers afresh (share 0.5 of the
customers outside the 10% holdout), the exploration coins and the world's outcomes, decides with the pure policy
(`offerlift.serving.policy.decide`, softmax exploration as in the loop), plays the decisions with
`SimWorld.play`, and adds the period's look (`offerlift.training.challenger_gate.look_difference`, CUPED on the
point-in-time features) to the test (`ChallengerTrial`) until it gives a verdict. The exact difference of the two
policies as served (`arm_probabilities` against the truth) is the reference. A false promotion is a promotion of a
challenger whose exact difference is <= 0.
For comparison the same looks are also read with the fixed-horizon one-sided z > 1.645 after every look (the
naive repeated test) and at the first look only.
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
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._env import environment_md
from offerlift.features.eligibility import reachable_arms
from offerlift.loop import covariates
from offerlift.models.scoring import ArmScorer
from offerlift.serving.policy import ChallengerScores, PolicyConfig, arm_probabilities, decide
from offerlift.simworld.config import resolve_world
from offerlift.simworld.experiment import make_experiment
from offerlift.simworld.world import SimWorld
from offerlift.training.challenger_gate import ChallengerTrial, TrialConfig, look_difference
from offerlift.training.train import TrainConfig, fit_spec

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("gate_bench")

POLICY = PolicyConfig(holdout=0.1, explore=0.1, explore_scheme="softmax", temperature=1.0, explore_floor=0.2)
WINDOW = 168.0


def fit_model(size: int, seed: int, world: str | None) -> ArmScorer:
    """The loop's learner on a randomized experiment of `size` units of the world spec (seed `seed`)."""
    exp = make_experiment(size, seed=seed, spec=resolve_world(world))
    units = exp.units()
    X = exp.features.loc[units.index]
    spec = fit_spec(exp, TrainConfig.for_simulated(n_folds=0, seed=seed), X, units["arm"].to_numpy(), units,
                    units["propensity"].to_numpy(float))  # fmt: skip
    return ArmScorer(spec)


def population(n: int, seed: int, world: str | None) -> dict[str, Any]:
    """The customers, their point-in-time features at time 0, allowed arms and CUPED covariates."""
    from offerlift.features.build import build_features

    w = SimWorld.from_yaml(resolve_world(world), n, seed=seed)
    ids = w.customers["customer_id"]
    as_of = pd.DataFrame({"unit_id": ids, "customer_id": ids, "time": 0.0})
    feats = build_features(w.history_events(), w.customers, as_of).reset_index(drop=True)
    return {"world": w, "features": feats, "allowed": reachable_arms(w.catalog, feats, len(feats)),
            "covariates": covariates(feats)}  # fmt: skip


def scores(model: ArmScorer, pop: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    incr = model.incremental_profit(model.features.encode(pop["features"]))
    return incr, np.zeros_like(incr)


def exact_difference(pop: dict[str, Any], champ: np.ndarray, chall: np.ndarray, t: float) -> float:
    """Exact mean difference (challenger - champion) of the two policies as served, outside the holdout."""
    truth = pop["world"].truth(None, t).incr
    zeros = np.zeros_like(champ)
    p_h = arm_probabilities(chall, zeros, pop["allowed"], POLICY)
    p_c = arm_probabilities(champ, zeros, pop["allowed"], POLICY)
    return float(((p_h - p_c) * truth).sum(axis=1).mean())


def one_draw(pop: dict[str, Any], champ: np.ndarray, chall: np.ndarray, looks: int, draw: int, cfg: TrialConfig):
    """One sequence of looks; the first verdict and what the naive readings would have said."""
    world = pop["world"]
    n = world.n_customers
    rng = np.random.default_rng(10_000 + draw)
    trial = ChallengerTrial("h", "c", cfg)
    naive_any, first_fixed = False, None
    verdict = "continue"
    for k in range(looks):
        serves = rng.random(n) < 0.5
        holdout_u = rng.random(n)
        d = decide(champ, np.zeros_like(champ), pop["allowed"], holdout_u, rng.random((n, 2)), POLICY,
                   challenger=ChallengerScores(chall, np.zeros_like(chall), serves))  # fmt: skip
        frame = pd.DataFrame({"customer_id": world.customers["customer_id"], "time": k * WINDOW,
                              "arm": np.asarray(world.arm_ids, dtype=object)[d.arm]})  # fmt: skip
        profit = world.play(frame, seed=20_000 + 97 * draw + k, record=False).outcomes["profit"].to_numpy()
        out = d.group != "holdout"
        champion_arm, challenger_arm = d.champion_greedy[out], d.challenger_greedy[out]
        look = look_difference(profit[out], d.challenger[out], (d.group == "explore")[out], champion_arm,
                               challenger_arm, pop["covariates"][out])  # fmt: skip
        ev = trial.add(look)
        naive_any = naive_any or ev["z"] > ev["fixed_horizon_z"]
        if first_fixed is None:
            first_fixed = ev["z"] > ev["fixed_horizon_z"]
        if ev["verdict"] != "continue":
            verdict = ev["verdict"]
            break
    return {"verdict": verdict, "looks": ev["looks"], "diff": ev["diff"], "se": ev["se"], "naive_any": naive_any,
            "fixed_first": bool(first_fixed), "variance_kept": ev["variance_kept"]}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    log.info("fitting models")
    models = {f"{s // 1000}k": fit_model(s, 501 + i, args.world) for i, s in enumerate(args.sizes)}
    log.info("models fitted in %.0fs; building the population", time.perf_counter() - t0)
    pop = population(args.customers, args.population_seed, args.world)
    sc = {name: scores(m, pop) for name, m in models.items()}
    truth0 = pop["world"].truth(None, 0.0).incr
    zeros = np.zeros_like(truth0)
    served = {
        name: float((arm_probabilities(s[0], zeros, pop["allowed"], POLICY) * truth0).sum(axis=1).mean())
        for name, s in sc.items()
    }
    names = sorted(models, key=served.__getitem__)  # weakest first, by the exact value of the served policy
    strong, weak, mid = names[-1], names[0], names[-2]
    pairs = {"same": (strong, strong), "worse": (strong, weak), "better": (weak, strong),
             "slightly better": (mid, strong)}  # fmt: skip
    cfg = TrialConfig(n_star=round(args.customers * 0.9), max_looks=args.looks)
    out: dict[str, Any] = {"pairs": {}, "served_value": served,
                           "settings": vars(args) | {"n_star": cfg.n_star, "level": cfg.level}}  # fmt: skip
    for label, (c, h) in pairs.items():
        champ, chall = sc[c][0], sc[h][0]
        exact = [exact_difference(pop, champ, chall, k * WINDOW) for k in range(args.looks)]
        draws = []
        t1 = time.perf_counter()
        for i in range(args.draws):
            draws.append(one_draw(pop, champ, chall, args.looks, i, cfg))
        verdicts = pd.Series([d["verdict"] for d in draws])
        out["pairs"][label] = {
            "champion": c,
            "challenger": h,
            "exact_difference": exact,
            "draws": len(draws),
            "promoted": float((verdicts == "promote").mean()),
            "stopped_worse": float((verdicts == "worse").mean()),
            "retired": float((verdicts == "retire").mean()),
            "mean_looks": float(np.mean([d["looks"] for d in draws])),
            "naive_repeated_promoted": float(np.mean([d["naive_any"] for d in draws])),
            "fixed_first_look_promoted": float(np.mean([d["fixed_first"] for d in draws])),
            "se_first_look": float(np.median([d["se"] for d in draws if d["looks"] >= 1])),
            "variance_kept": float(np.median([d["variance_kept"] for d in draws])),
            "seconds": time.perf_counter() - t1,
        }
        log.info("%s: %s", label, {k: v for k, v in out["pairs"][label].items() if k != "exact_difference"})
    out["seconds"] = time.perf_counter() - t0
    return out


def results_md(res: dict[str, Any], load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    s = res["settings"]
    lines = [
        "# The champion/challenger test: false promotions and power",
        "",
        environment_md(
            {
                "command": "benchmarks/gate_bench.py " + " ".join(sys.argv[1:]),
                "world": s["world"] or "default",
                "population": f"{s['customers']:,} customers (seed {s['population_seed']}), features at time 0",
                "models": f"TrainConfig.for_simulated on randomized experiments of {s['sizes']} units (seeds 501-)",
                "test": f"one-sided level {s['level']}, n_star {s['n_star']:,}, at most {s['looks']} looks, "
                "challenger share 0.5 of the customers outside a 10% holdout, softmax exploration 10%",
                "draws": f"{s['draws']} per pair",
                "seconds": f"{res['seconds']:.0f}",
                "load average (1 min) at start / end": f"{load[0][0]:.1f} / {load[1][0]:.1f}",
            }
        ),
        "",
        "Every rate is over the pair's draws. `exact difference` is the world's exact difference of the two policies "
        "as served (challenger minus champion, per customer outside the holdout) at each look's time. A promotion "
        "of a pair whose exact difference is <= 0 is a false promotion: the test's guarantee is at most 5%. "
        "`naive repeated` reads the fixed-horizon bound (z > 1.645) after every look, `fixed, first look` only "
        "after the first: neither is what the gate does; they show what the always-valid bound costs and buys.",
        "",
        "| pair | champion -> challenger | exact difference per look | promoted | 95% CI of the rate "
        "| stopped as worse | retired | mean looks | naive repeated | fixed, first look | se at a look "
        "| variance kept |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, p in res["pairs"].items():
        n, k = p["draws"], p["promoted"] * p["draws"]
        lo, hi = wilson(k, n)
        ex = ", ".join(f"{x:+.4f}" for x in p["exact_difference"])
        lines.append(
            f"| {label} | {p['champion']} -> {p['challenger']} | {ex} | {p['promoted']:.1%} | [{lo:.1%}, {hi:.1%}] "
            f"| {p['stopped_worse']:.1%} | {p['retired']:.1%} | {p['mean_looks']:.2f} | "
            f"{p['naive_repeated_promoted']:.1%} | {p['fixed_first_look_promoted']:.1%} | {p['se_first_look']:.4f} "
            f"| {p['variance_kept']:.0%} |"
        )
    lines.append("")
    lines.append(
        "Exact value of each model's policy as served (incremental profit per customer outside the holdout, "
        "time 0): " + ", ".join(f"{k} {v:+.4f}" for k, v in res["served_value"].items()) + "."
    )
    lines.append("")
    nulls = [p for p in res["pairs"].values() if max(p["exact_difference"]) <= 0]
    if nulls:
        worst = max(p["promoted"] for p in nulls)
        lines.append(
            f"- False promotions (pairs whose exact difference is <= 0 at every look): at most {worst:.1%} of draws "
            f"(level 5%)."
        )
    for label, p in res["pairs"].items():
        if min(p["exact_difference"]) > 0:
            lines.append(f"- Power, {label} (exact difference {np.mean(p['exact_difference']):+.4f}): promoted in "
                         f"{p['promoted']:.0%} of draws after {p['mean_looks']:.2f} looks on average.")  # fmt: skip
    lines.append(
        "- `variance kept`: the look's variance after removing the alike decisions and CUPED, as a share of the "
        "plain difference of group means' variance (median over draws)."
    )
    return "\n".join(lines) + "\n"


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--looks", type=int, default=3)
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[3_000, 20_000, 100_000])
    ap.add_argument("--population-seed", type=int, default=11)
    ap.add_argument("--world", default=None)
    ap.add_argument("--out", default=str(RESULTS / "gate"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("offerlift.simworld.world").setLevel(logging.ERROR)
    load_start = os.getloadavg()
    res = run(args)
    res["load_average"] = {"start": load_start, "end": os.getloadavg()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(results_md(res, (load_start, os.getloadavg())))
    out.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str))
    log.info("wrote %s", out.with_suffix(".md"))


if __name__ == "__main__":
    main()
