"""Benchmark of offerlift's uplift learners against causalml and scikit-uplift (issue 3).

Run: ``python benchmarks/uplift_bench.py`` (any Python; it re-runs itself in ``.venv-bench``, creating that
virtualenv from ``benchmarks/requirements-peers.txt`` plus ``pip install --no-deps -e .`` when it is missing).
Writes ``benchmarks/results/uplift.md`` and ``uplift.json``. See ``benchmarks/README.md`` for the options.

Protocol: the same LightGBM settings (:data:`LGB`) and thread count for every method, the same folds
(``offerlift.training.evaluate.customer_folds``: grouped by customer, seeded) and seeds; every score comes from held-out
folds. Each (task, method) runs in its own worker process (``uplift_bench_peers.py``), which reports fit and
predict time (CPU time of the process and wall time) and the peak RSS above the fold's starting RSS.
Ranking: Qini AUC and uplift@30% (scikit-uplift definitions, ``offerlift.training.metrics``) per fold, mean and sd over
folds. Policy value: the greedy policy (best arm by predicted uplift, no offer when none is positive) on the
pooled held-out predictions, valued by IPS with the known propensities, against no offer and the best single
arm, with paired percentile-bootstrap CIs (``offerlift.training.policy_value``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = ROOT / ".venv-bench"
REQUIREMENTS = HERE / "requirements-peers.txt"
WORKER = HERE / "uplift_bench_peers.py"
RESULTS = HERE / "results"

#: LightGBM settings of every model of every method (scikit-learn names; offerlift maps them to its own).
LGB: dict[str, Any] = {
    "n_estimators": 200,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 100,
    "min_child_weight": 1e-3,
    "reg_lambda": 1.0,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
}
CORE = ["s", "t", "x", "dr"]
VARIANTS_MULTI = ["ours_dr_pairfix"]
PEERS_BINARY = ["causalml_s", "causalml_t", "causalml_x", "causalml_dr", "sklift_ct", "sklift_tm"]
PEERS_MULTI = ["causalml_s", "causalml_t", "causalml_x", "causalml_dr", "sklift_tm"]
VARIANTS_STARBUCKS = ["ours_s_value", "ours_t_pipe", "ours_dr_pairfix"]
PACKAGES = ["lightgbm", "causalml", "scikit-uplift", "xgboost", "scikit-learn", "numpy", "pandas", "offerlift"]


def ensure_venv(argv: list[str]) -> None:
    """Re-run this script with the benchmark virtualenv's Python, creating the virtualenv when missing."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        base = sys.executable if sys.version_info[:2] == (3, 11) else shutil.which("python3.11")
        if base is None:
            raise SystemExit("the benchmark needs python3.11 to create .venv-bench")
        print(f"creating {VENV} (causalml pulls in xgboost and NVIDIA libraries: a few minutes)", flush=True)
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
        subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv])


@dataclass
class Task:
    """One benchmark task: the data every method sees, and how its predictions are scored."""

    name: str
    title: str
    arms: list[str]
    outcome: str  # "binary" or "continuous": the outcome the learners model
    features: list[str]
    X: np.ndarray
    arm: np.ndarray  # arm code per row, 0 = control
    y: np.ndarray  # the modelled outcome
    prop: np.ndarray  # known propensity of the row's own arm
    pair_prop: np.ndarray  # (n, K-1): e_a / (e_a + e_0), the propensity of arm a within {control, a}
    folds: np.ndarray
    reward: np.ndarray  # what the policy value counts
    qini_y: np.ndarray  # binary outcome of the Qini (and its name in qini_name)
    qini_name: str
    methods: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def write(self, folder: Path, threads: int, seed: int, lgb: dict[str, Any]) -> None:
        """Write task.npz and task.json for the workers."""
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"X": self.X, "arm": self.arm, "y": self.y, "prop": self.prop, "pair_prop": self.pair_prop}
        np.savez(folder / "task.npz", folds=self.folds, **arrays, **self.arrays)
        meta = {"name": self.name, "arms": self.arms, "outcome": self.outcome, "features": self.features}
        meta.update(threads=threads, seed=seed, lgb=lgb, **self.extra)
        (folder / "task.json").write_text(json.dumps(meta, indent=1))


def numeric_matrix(frame: Any) -> np.ndarray:
    """The features as float64, categorical columns as their codes (NaN for missing): the same for everyone."""
    import pandas as pd

    cols = []
    for c in frame.columns:
        s = frame[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            codes = s.cat.codes.to_numpy().astype(np.float64)
            codes[codes < 0] = np.nan
            cols.append(codes)
        else:
            cols.append(s.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.column_stack(cols)


def pair_propensity(arm: np.ndarray, prop: np.ndarray, stratum: np.ndarray, n_arms: int) -> np.ndarray:
    """Per row and treatment arm a: e_a / (e_a + e_0), with e the known propensities of the row's stratum."""
    out = np.empty((len(arm), n_arms - 1))
    for s in np.unique(stratum):
        rows = stratum == s
        e = np.array([prop[rows & (arm == a)].mean() if (rows & (arm == a)).any() else np.nan for a in range(n_arms)])
        out[rows] = e[1:] / (e[1:] + e[0])
    return out


def hillstrom_tasks(n_folds: int, seed: int) -> list[Task]:
    """Women's and men's e-mail vs none on visit and conversion; all three arms on spend."""
    from offerlift.datasets import load_dataset
    from offerlift.training.evaluate import customer_folds, realized_profit

    exp = load_dataset("hillstrom")
    units = exp.units()
    feats = list(exp.features.columns)
    X = numeric_matrix(exp.features.loc[units.index])
    folds = customer_folds(units["customer_id"].to_numpy(), n_folds, seed)
    labels = units["arm"].to_numpy()
    arms = exp.catalog.arm_ids
    code = np.array([arms.index(a) for a in labels])
    prop = units["propensity"].to_numpy(dtype=float)
    conv = units["conversion"].to_numpy(dtype=float)
    tasks = []
    for arm in ("womens_email", "mens_email"):
        rows = np.flatnonzero((labels == "none") | (labels == arm))
        t = (labels[rows] == arm).astype(np.intp)
        pp = pair_propensity(code[rows], prop[rows], np.zeros(len(rows)), len(arms))[:, [arms.index(arm) - 1]]
        own = np.where(t == 1, pp[:, 0], 1.0 - pp[:, 0])
        for outcome in ("visit", "conversion"):
            y = units[outcome].to_numpy(dtype=float)[rows]
            name = f"hillstrom_{arm.split('_')[0]}_{outcome}"
            title = f"Hillstrom, {arm.replace('_', ' ')} vs none, {outcome} ({len(rows):,} customers)"
            tasks.append(
                Task(
                    name=name,
                    title=title,
                    arms=["none", arm],
                    outcome="binary",
                    features=feats,
                    X=X[rows],
                    arm=t,
                    y=y,
                    prop=own,
                    pair_prop=pp,
                    folds=folds[rows],
                    reward=y,
                    qini_y=y,
                    qini_name=outcome,
                    methods=[f"ours_{k}" for k in CORE] + PEERS_BINARY,
                )
            )
    spend = realized_profit(exp, "spend")
    tasks.append(
        Task(
            name="hillstrom_3arm_spend",
            title=f"Hillstrom, all 3 arms, spend ({len(code):,} customers)",
            arms=arms,
            outcome="continuous",
            features=feats,
            X=X,
            arm=code,
            y=spend,
            prop=prop,
            pair_prop=pair_propensity(code, prop, np.zeros(len(code)), len(arms)),
            folds=folds,
            reward=spend,
            qini_y=conv,
            qini_name="conversion",
            methods=[f"ours_{k}" for k in CORE] + PEERS_MULTI + VARIANTS_MULTI,
        )
    )
    return tasks


def starbucks_task(n_folds: int, seed: int) -> Task:
    """Starbucks, 11 arms, profit = margin x spend - reward paid - contact cost; folds grouped by member."""
    from offerlift.datasets import load_dataset
    from offerlift.training.evaluate import customer_folds, realized_profit

    exp = load_dataset("starbucks")
    units = exp.units()
    cat = exp.catalog
    arms = cat.arm_ids
    code = np.array([arms.index(a) for a in units["arm"].to_numpy()])
    prop = units["propensity"].to_numpy(dtype=float)
    profit = realized_profit(exp, "spend")
    by_id = {a.id: a for a in cat.arms}
    treated = [by_id[a] for a in arms[1:]]
    extra = {
        "arm_values": [by_id[a].coupon_value for a in arms],
        "comp_coef": [[cat.margin] * len(treated), [-a.redeem_cost for a in treated]],
        "comp_offset": [-(a.contact_cost - by_id[arms[0]].contact_cost) for a in treated],
        "margin": cat.margin,
    }
    task = Task(
        name="starbucks_11arm_profit",
        title=f"Starbucks, 11 arms, profit ({len(code):,} member-waves of {units['customer_id'].nunique():,} members)",
        arms=arms,
        outcome="continuous",
        features=list(exp.features.columns),
        X=numeric_matrix(exp.features.loc[units.index]),
        arm=code,
        y=profit,
        prop=prop,
        pair_prop=pair_propensity(code, prop, units["wave"].to_numpy(), len(arms)),
        folds=customer_folds(units["customer_id"].to_numpy(), n_folds, seed),
        reward=profit,
        qini_y=units["buy"].to_numpy(dtype=float),
        qini_name="buy",
        methods=[f"ours_{k}" for k in CORE] + PEERS_MULTI + VARIANTS_STARBUCKS,
        extra=extra,
        arrays={"comp_y": units[["spend", "redeem"]].to_numpy(dtype=float)},
    )
    return task


def interleave(methods: list[str]) -> list[str]:
    """Ours and the matching peer next to each other, so that they meet the same machine load."""
    order = []
    for k in CORE:
        order += [m for m in (f"ours_{k}", f"causalml_{k}") if m in methods]
    return order + [m for m in methods if m not in order]


def run_worker(task_dir: Path, method: str, out: Path, threads: int) -> dict[str, Any]:
    """One worker process; returns its measurements (or the error)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(task_dir), method, str(out)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"], "seconds": time.perf_counter() - start}
    with np.load(out) as z:
        return {k: z[k] for k in z.files} | {"seconds": time.perf_counter() - start}


def run_all(tasks: list[Task], args: argparse.Namespace, work: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Every (task, method) worker, ``args.jobs`` at a time; outputs reused with ``--reuse``."""
    jobs = []
    for task in tasks:
        task.write(work / task.name, args.threads, args.seed, {**LGB, "n_estimators": args.trees})
        jobs += [(task, m) for m in interleave(args.methods or task.methods)]
    results: dict[str, dict[str, dict[str, Any]]] = {t.name: {} for t in tasks}
    with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {}
        for task, m in jobs:
            out = work / task.name / f"{m}.npz"
            if args.reuse and out.exists():
                with np.load(out) as z:
                    results[task.name][m] = {k: z[k] for k in z.files} | {"seconds": 0.0}
                continue
            futures[pool.submit(run_worker, work / task.name, m, out, args.threads)] = (task.name, m)
        for fut in cf.as_completed(futures):
            name, m = futures[fut]
            results[name][m] = res = fut.result()
            note = res.get("error") or f"fit {res['fit_cpu'].sum():.1f}s cpu, predict {res['pred_cpu'].sum():.1f}s cpu"
            print(f"  {name} / {m}: {note} ({res['seconds']:.0f}s)", flush=True)
    return results


# ------------------------------------------------------------------------------------------- scoring


def family(method: str) -> str:
    """ "ours", "causalml" or "sklift"."""
    return method.split("_")[0]


def fold_ranking(task: Task, up: np.ndarray) -> tuple[list[float], list[float]]:
    """Per fold, the mean over treatment arms of Qini AUC (on ``qini_y``) and uplift@30% (on the modelled
    outcome for binary tasks, on the reward otherwise), each arm against control."""
    from offerlift.training.metrics import qini_auc_score, uplift_at_k

    u_y = task.y if task.outcome == "binary" else task.reward
    qini, u30 = [], []
    for f in np.unique(task.folds):
        q, u = [], []
        for j in range(1, len(task.arms)):
            m = (task.folds == f) & ((task.arm == 0) | (task.arm == j))
            t = (task.arm[m] == j).astype(int)
            q.append(qini_auc_score(task.qini_y[m], up[m, j - 1], t))
            u.append(uplift_at_k(u_y[m], up[m, j - 1], t, k=0.3))
        qini.append(float(np.mean(q)))
        u30.append(float(np.mean(u)))
    return qini, u30


def greedy(up: np.ndarray) -> np.ndarray:
    """Arm code per row: the arm with the largest positive predicted uplift, 0 (control) when none is."""
    from offerlift.training.evaluate import greedy_arms

    return greedy_arms(np.column_stack([np.zeros(len(up)), up]))


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and t-interval of paired per-fold differences."""
    from scipy import stats

    d = np.asarray(diffs)
    half = stats.t.ppf((1 + level) / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def score_task(task: Task, res: dict[str, dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    """Ranking, policy value, time and memory of every method of a task, and ours-vs-peers comparisons."""
    from offerlift.training.policy_value import bootstrap_means, compare_policies

    ok = {m: r for m, r in res.items() if "uplift" in r and np.isfinite(r["uplift"]).all()}
    labels = np.asarray(task.arms, dtype=object)
    chosen = {m: greedy(r["uplift"]) for m, r in ok.items()}
    table = compare_policies(
        {m: labels[c] for m, c in chosen.items()}, labels[task.arm], task.reward, task.prop,
        arm_ids=task.arms, control_arm=task.arms[0], n_boot=n_boot, seed=seed,
    )  # fmt: skip
    rows = {r["policy"]: r for r in table.to_dict("records")}
    methods: dict[str, Any] = {}
    for m, r in res.items():
        if m not in ok:
            methods[m] = {"error": " ".join(map(str, r.get("error", ["non-finite predictions"])))}
            continue
        qini, u30 = fold_ranking(task, r["uplift"])
        pol = rows[m]
        methods[m] = {
            "qini_folds": qini,
            "qini": float(np.mean(qini)),
            "qini_sd": float(np.std(qini, ddof=1)),
            "uplift_at_30": float(np.mean(u30)),
            "policy": {k: float(pol[k]) for k in pol if k.startswith(("value", "ci_", "vs_"))},
            "treated_share": float(np.mean(chosen[m] != 0)),
            "arms_used": len(np.unique(chosen[m][chosen[m] != 0])),
            **{k: float(np.sum(r[k])) for k in ("fit_cpu", "fit_wall", "pred_cpu", "pred_wall")},
            "mem_mb": float(np.nanmedian(r["mem_mb"])),
        }
    baselines = {k: {c: float(v[c]) for c in v if c.startswith(("value", "ci_", "vs_"))} for k, v in rows.items()
                 if k.startswith("always:")}  # fmt: skip
    out = {"title": task.title, "arms": task.arms, "qini_outcome": task.qini_name, "n": len(task.y)}
    out.update(methods=methods, baselines=baselines, best_arm=str(table["best_arm"].iloc[0]))
    out["compare"] = compare_best(task, ok, methods, chosen, n_boot, seed, bootstrap_means)
    core = {m: r for m, r in ok.items() if family(m) != "ours" or m in {f"ours_{k}" for k in CORE}}
    if len(core) < len(ok):
        out["compare_core"] = compare_best(task, core, methods, chosen, n_boot, seed, bootstrap_means)
    out["speed"] = speed_ratios(methods)
    return out


def compare_best(task: Task, ok: dict, methods: dict, chosen: dict, n_boot: int, seed: int, boot_fn: Any) -> dict:
    """Our best configuration against the best peer: Qini (paired over folds) and policy value (paired bootstrap)."""
    ours = [m for m in ok if family(m) == "ours"]
    peers = [m for m in ok if family(m) != "ours"]
    if not ours or not peers:
        return {}
    out: dict[str, Any] = {}
    for metric in ("qini", "value"):
        get = (lambda m: methods[m]["qini"]) if metric == "qini" else (lambda m: methods[m]["policy"]["value"])
        a, b = max(ours, key=get), max(peers, key=get)
        if metric == "qini":
            diffs = np.subtract(methods[a]["qini_folds"], methods[b]["qini_folds"]).tolist()
            diff, lo, hi = t_interval(diffs)
        else:
            cols = np.column_stack([(chosen[m] == task.arm) / task.prop * task.reward for m in (a, b)])
            boot = boot_fn(cols, n_boot, seed)
            diff = float(cols[:, 0].mean() - cols[:, 1].mean())
            lo, hi = (float(x) for x in np.quantile(boot[:, 0] - boot[:, 1], [0.025, 0.975]))
        out[metric] = {"ours": a, "peer": b, "ours_value": get(a), "peer_value": get(b), "diff": diff}
        out[metric].update(diff_ci_low=lo, diff_ci_high=hi, not_worse=hi >= 0, better_mean=diff > 0)
    return out


def speed_ratios(methods: dict[str, Any]) -> dict[str, dict[str, float]]:
    """ours / causalml per matching learner: fit and predict CPU time, fit wall time, peak memory."""
    out = {}
    for k in CORE:
        a, b = methods.get(f"ours_{k}", {}), methods.get(f"causalml_{k}", {})
        if "fit_cpu" in a and "fit_cpu" in b:
            out[k] = {key: a[key] / b[key] for key in ("fit_cpu", "pred_cpu", "fit_wall", "pred_wall", "mem_mb")}
    return out


def score_all(tasks: list[Task], results: dict, n_boot: int, seed: int) -> dict[str, Any]:
    """Scores of every task."""
    return {t.name: score_task(t, results[t.name], n_boot, seed) for t in tasks}


# -------------------------------------------------------------------------------------------- report


def machine_info(packages: list[str]) -> dict[str, Any]:
    """CPU model, cores, load, Python and package versions, git commit, date."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    versions = {"python": platform.python_version()}
    for pkg in packages:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "not installed"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "load_start": os.getloadavg(),
        "versions": versions,
        "commit": commit.stdout.strip(),
    }


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.{digits}f}"


def _ci(d: dict[str, float], key: str, digits: int = 3) -> str:
    return f"{_f(d[key], digits)} [{_f(d[key + '_ci_low'], digits)}, {_f(d[key + '_ci_high'], digits)}]"


def task_table(sc: dict[str, Any]) -> list[str]:
    """The per-method table of one task."""
    lines = [
        f"### {sc['title']}",
        "",
        f"Qini AUC on {sc['qini_outcome']} (sklift definition, mean +- sd over folds, each arm vs control, averaged "
        "over arms); policy value by IPS per customer, 95% paired bootstrap CI; times summed over folds (CPU s).",
        "",
        "| method | Qini AUC | uplift@30% | policy vs no offer | policy vs best arm | treated | fit s | predict s "
        "| peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m, r in sc["methods"].items():
        if "error" in r:
            lines.append(f"| {m} | error: {r['error'][:80]} | | | | | | | |")
            continue
        p = r["policy"]
        lines.append(
            f"| {m} | {r['qini']:.4f} +- {r['qini_sd']:.4f} | {_f(r['uplift_at_30'], 4)} | {_ci(p, 'vs_control')} "
            f"| {_ci(p, 'vs_best_arm')} | {r['treated_share']:.0%} | {r['fit_cpu']:.1f} | {r['pred_cpu']:.2f} "
            f"| {r['mem_mb']:.0f} |"
        )
    base = sc["baselines"]
    best = base.get(f"always:{sc['best_arm']}", {})
    lines += ["", f"Baselines: best single arm `{sc['best_arm']}` for everyone: {_ci(best, 'vs_control')} vs no offer."]
    return [*lines, ""]


def summary_table(scored: dict[str, Any]) -> list[str]:
    """Our best against the best peer, per task."""
    lines = [
        "| task | Qini: ours best / peer best | diff [95% CI, folds] | policy value: ours best / peer best "
        "| diff [95% CI, bootstrap] |",
        "|---|---|---|---|---|",
    ]
    rows = [(n, sc["compare"]) for n, sc in scored.items()]
    rows += [(f"{n} (core learners only)", sc["compare_core"]) for n, sc in scored.items() if "compare_core" in sc]
    for name, c in rows:
        if not c:
            continue
        q, v = c["qini"], c["value"]
        lines.append(
            f"| {name} | {q['ours']} {q['ours_value']:.4f} / {q['peer']} {q['peer_value']:.4f} "
            f"| {_ci(q, 'diff', 4)} | {v['ours']} {v['ours_value']:.3f} / {v['peer']} {v['peer_value']:.3f} "
            f"| {_ci(v, 'diff')} |"
        )
    return [*lines, ""]


def speed_table(scored: dict[str, Any]) -> list[str]:
    """ours / causalml ratios per matching learner."""
    lines = [
        "| task | learner | fit CPU ratio | predict CPU ratio | fit wall ratio | peak memory ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, sc in scored.items():
        for k, r in sc["speed"].items():
            lines.append(
                f"| {name} | {k.upper()} | {r['fit_cpu']:.2f} | {r['pred_cpu']:.2f} | {r['fit_wall']:.2f} "
                f"| {r['mem_mb']:.2f} |"
            )
    return [*lines, ""]


NOTES_MARK = "<!-- notes: kept across runs -->"


def write_results(out: Path, tasks: list[Task], scored: dict, info: dict, settings: dict) -> None:
    """uplift.md (tables; the hand-written notes after NOTES_MARK are kept) and uplift.json (everything)."""
    md, js = out.with_suffix(".md"), out.with_suffix(".json")
    notes = ""
    if md.exists() and NOTES_MARK in md.read_text():
        notes = md.read_text().split(NOTES_MARK, 1)[1]
    v = info["versions"]
    lines = [
        "# Uplift learners: offerlift against causalml and scikit-uplift",
        "",
        f"- date: {info['date']}; commit {info['commit']}; whole run {info['seconds']:.0f} s",
        f"- machine: {info['cpu']}, {info['cores']} cores (shared; load average at start "
        f"{info['load_start'][0]:.1f}, at end {info['load_end'][0]:.1f}), {info['os']}",
        "- versions: " + ", ".join(f"{k} {x}" for k, x in v.items()),
        f"- LightGBM settings of every model of every method: {json.dumps(settings['lgb'])}, "
        f"{settings['threads']} thread(s) per model (OMP_NUM_THREADS too), {settings['jobs']} worker(s) at once",
        f"- {settings['folds']}-fold CV (`offerlift.training.evaluate.customer_folds`, seed {settings['seed']}, "
        f"grouped by customer), LightGBM seed {settings['seed']}, {settings['n_boot']} bootstrap resamples (seed "
        f"{settings['seed']})",
        "- times: CPU seconds of the worker process (1 thread: equal to wall time on an idle core; wall times, "
        "inflated by the other users of the machine, are in uplift.json); peak memory: the worker's peak RSS "
        "(VmHWM, reset per fold after returning freed memory to the OS) above its RSS at the start of the fold, "
        "median over folds",
        "",
        "## Our best configuration against the best peer",
        "",
        *summary_table(scored),
        "## Speed and memory: ours / causalml, matching learners, same run",
        "",
        *speed_table(scored),
        "## Per task",
        "",
    ]
    for sc in scored.values():
        lines += task_table(sc)
    text = "\n".join(lines) + "\n" + NOTES_MARK + (notes or "\n")
    md.write_text(text)
    js.write_text(json.dumps({"info": info, "settings": settings, "tasks": scored}, indent=1, default=float))


def main(argv: list[str]) -> None:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="LightGBM threads of every model (and OMP_NUM_THREADS)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes at once")
    p.add_argument("--trees", type=int, default=LGB["n_estimators"])
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--tasks", default="", help="comma-separated task names (default: all)")
    p.add_argument("--methods", default="", help="comma-separated method names (default: each task's list)")
    p.add_argument("--workdir", default="", help="keep task files and worker outputs here (default: a temp dir)")
    p.add_argument("--reuse", action="store_true", help="reuse worker outputs found in --workdir")
    p.add_argument("--out", default=str(RESULTS / "uplift"), help="results path without suffix (.md and .json)")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    ensure_venv(argv)
    start = time.perf_counter()
    info = machine_info(PACKAGES)
    wanted = [t for t in args.tasks.split(",") if t]
    tasks = []
    if not wanted or any(t.startswith("hillstrom") for t in wanted):
        tasks += hillstrom_tasks(args.folds, args.seed)
    if not wanted or any(t.startswith("starbucks") for t in wanted):
        tasks.append(starbucks_task(args.folds, args.seed))
    tasks = [t for t in tasks if not wanted or t.name in wanted]
    with tempfile.TemporaryDirectory(prefix="uplift-bench-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        results = run_all(tasks, args, work)
    scored = score_all(tasks, results, args.n_boot, args.seed)
    info.update(seconds=round(time.perf_counter() - start, 1), load_end=os.getloadavg())
    settings = {k: v for k, v in vars(args).items() if k not in ("workdir", "reuse", "out")}
    write_results(Path(args.out), tasks, scored, info, {**settings, "lgb": {**LGB, "n_estimators": args.trees}})
    print(f"wrote {args.out}.md and .json in {info['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    main(sys.argv[1:])
