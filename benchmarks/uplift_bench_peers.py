"""Worker of the uplift benchmark: one method, every fold of one task, held-out uplift out.

Run by ``benchmarks/uplift_bench.py`` (one process per task and method, in the benchmark's own virtualenv
``.venv-bench``, where causalml and scikit-uplift live next to offerlift)::

    python benchmarks/uplift_bench_peers.py TASK_DIR METHOD OUT.npz

``TASK_DIR`` holds ``task.npz`` (X, arm codes with 0 = control, y, fold per row, pair propensities
``e_a / (e_a + e_0)`` per treatment arm; optionally outcome components ``comp_y`` with coefficients
``comp_coef`` per treatment arm) and ``task.json`` (arm names, feature names, outcome kind, LightGBM settings,
threads). For each fold the method is fitted on the other folds and predicts the uplift of every treatment arm
on the held-out fold. ``OUT.npz`` gets the pooled held-out uplift (n, n_arms - 1) and, per fold, fit and predict
seconds (CPU time of this process and wall time) and the peak resident memory above the fold's starting RSS
(VmHWM after resetting it through /proc/self/clear_refs; LightGBM's C++ allocations included).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
FitFn = Callable[[dict[str, Any], dict[str, Any]], Predictor]


def _status_kb(field: str) -> float:
    """A field of /proc/self/status in kB (nan where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def _reset_peak() -> bool:
    """Give freed memory back to the OS (so that the next fold's allocations show in RSS) and reset the peak RSS
    (VmHWM) of this process; False where the kernel does not allow the reset."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def lgb_kwargs(task: dict[str, Any]) -> dict[str, Any]:
    """The shared LightGBM settings in scikit-learn names (every method gets these)."""
    return {**task["lgb"], "n_jobs": task["threads"], "random_state": task["seed"], "verbose": -1}


# ---------------------------------------------------------------------------------------------- ours


def _ours(name: str, components: bool = False, **extra: Any) -> FitFn:
    """offerlift's learner ``name``; with ``components``, one learner per outcome component (profit pipeline)."""

    def fit(d: dict[str, Any], task: dict[str, Any]) -> Predictor:
        from offerlift.training.learners import make_learner

        arms = task["arms"]
        labels = np.asarray(arms, dtype=object)[d["arm"]]
        kw = {"control": arms[0], "arms": arms, "params": lgb_kwargs(task), "random_state": task["seed"], **extra}
        if extra.get("arm_values") == "task":
            kw["arm_values"] = dict(zip(arms, task["arm_values"], strict=True))
        targets = d["comp_y"].T if components else [d["y"]]
        make = (lambda **k: pair_fixed_dr()(**k)) if name == "dr_pairfix" else (lambda **k: make_learner(name, **k))
        models = [make(**kw).fit(d["X"], labels, y, d["prop"]) for y in targets]

        def predict(Xte: pd.DataFrame, pair_te: np.ndarray) -> np.ndarray:
            ups = [m.predict_uplift(Xte) for m in models]
            if not components:
                return ups[0]
            total = sum(up * np.asarray(c)[None, :] for up, c in zip(ups, task["comp_coef"], strict=True))
            return total + np.asarray(task.get("comp_offset", 0.0))[None, :]

        return predict

    return fit


def pair_fixed_dr() -> type:
    """offerlift's DRLearner with the fix proposed for training/learners.py: on the pair rows ({control, a}) the
    AIPW pseudo-outcome must use the propensity within the pair, ``e_own / (e_a + e_0)``, not the row's
    propensity among all arms (which inflates the correction terms by ``1 / (e_a + e_0)``, 3x on Starbucks)."""
    from offerlift.training.learners import DRLearner, aipw_pseudo_outcome, stratified_folds
    from offerlift.training.learners_base import arm_shares, effect_params, make_dataset, subset, train

    class PairFixedDR(DRLearner):
        def _fit(self, X: np.ndarray, codes: np.ndarray, y: np.ndarray, prop: np.ndarray | None) -> None:
            m, params = len(self.arms_), self.lgb_params_
            ds = make_dataset(X, y, params, self.encoder_.categorical)
            mu = self._cross_fit(ds, X, codes, stratified_folds(codes, self.n_folds, self.random_state), params)
            self.arm_propensity_ = e = arm_shares(codes, m, prop)
            e_own = prop if prop is not None else e[codes]
            self.effect_models_ = []
            for a in range(1, m):
                rows = self._effect_rows(codes, a)
                own = e_own[rows]
                if self.effect_rows == "pair":
                    own = own / (own + np.where(codes[rows] == a, e[0], e[a]))
                phi = aipw_pseudo_outcome(y[rows], codes[rows], mu[rows], own, a)
                self.effect_models_.append(train(subset(ds, rows, phi), effect_params(params)))

    return PairFixedDR


# ------------------------------------------------------------------------------------------- causalml


def _reorder(te: np.ndarray, groups: np.ndarray, arms: list[str]) -> np.ndarray:
    """causalml's columns (sorted treatment groups) in the task's arm order."""
    pos = {str(g): j for j, g in enumerate(groups)}
    return te[:, [pos[a] for a in arms[1:]]]


def _causalml(kind: str) -> FitFn:
    """causalml's Base{S,T,X,DR} learner on LightGBM (classifier variants for binary outcomes, except DR)."""

    def fit(d: dict[str, Any], task: dict[str, Any]) -> Predictor:
        from causalml.inference import meta
        from lightgbm import LGBMClassifier, LGBMRegressor

        arms = task["arms"]
        binary = task["outcome"] == "binary"
        reg, clf = LGBMRegressor(**lgb_kwargs(task)), LGBMClassifier(**lgb_kwargs(task))
        if kind == "x" and binary:
            model = meta.BaseXClassifier(outcome_learner=clf, effect_learner=reg, control_name=arms[0])
        elif kind == "dr":
            # BaseDRClassifier fits its pseudo-outcomes from predict() (class labels), so the regressor it is.
            model = meta.BaseDRRegressor(learner=reg, control_name=arms[0])
        else:
            cls = {"s": "BaseS", "t": "BaseT", "x": "BaseX"}[kind] + ("Classifier" if binary else "Regressor")
            model = getattr(meta, cls)(learner=clf if binary else reg, control_name=arms[0])
        labels = np.asarray(arms, dtype=object)[d["arm"]]
        p = {a: d["pair_prop"][:, j] for j, a in enumerate(arms[1:])}
        if kind == "dr":
            model.fit(d["X"], labels, d["y"], p=p, seed=task["seed"])
        elif kind == "x":
            model.fit(d["X"], labels, d["y"], p=p)
        else:
            model.fit(d["X"], labels, d["y"])

        def predict(Xte: np.ndarray, pair_te: np.ndarray) -> np.ndarray:
            p_te = {a: pair_te[:, j] for j, a in enumerate(arms[1:])}
            te = model.predict(Xte, p=p_te) if kind == "x" else model.predict(Xte)
            return _reorder(np.asarray(te).reshape(len(Xte), -1), model.t_groups, arms)

        return predict

    return fit


# -------------------------------------------------------------------------------------- scikit-uplift


def _sklift(kind: str) -> FitFn:
    """scikit-uplift's TwoModels ("tm", one pair of models per treatment arm) or ClassTransformation ("ct")."""

    def fit(d: dict[str, Any], task: dict[str, Any]) -> Predictor:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from sklift.models import ClassTransformation, TwoModels

        est = LGBMClassifier if task["outcome"] == "binary" else LGBMRegressor
        models = []
        for j in range(1, len(task["arms"])):
            rows = (d["arm"] == 0) | (d["arm"] == j)
            t = (d["arm"][rows] == j).astype(int)
            if kind == "ct":
                m = ClassTransformation(LGBMClassifier(**lgb_kwargs(task)))
            else:
                m = TwoModels(est(**lgb_kwargs(task)), est(**lgb_kwargs(task)), method="vanilla")
            models.append(m.fit(d["X"][rows], d["y"][rows], t))

        def predict(Xte: np.ndarray, pair_te: np.ndarray) -> np.ndarray:
            return np.column_stack([m.predict(Xte) for m in models])

        return predict

    return fit


METHODS: dict[str, FitFn] = {
    "ours_s": _ours("s"),
    "ours_t": _ours("t"),
    "ours_x": _ours("x"),
    "ours_dr": _ours("dr"),
    "ours_dr_all": _ours("dr", effect_rows="all"),
    "ours_dr_pairfix": _ours("dr_pairfix"),
    "ours_s_value": _ours("s", arm_values="task"),
    "ours_s_pipe": _ours("s", components=True),
    "ours_t_pipe": _ours("t", components=True),
    "ours_dr_pipe": _ours("dr", components=True),
    "causalml_s": _causalml("s"),
    "causalml_t": _causalml("t"),
    "causalml_x": _causalml("x"),
    "causalml_dr": _causalml("dr"),
    "sklift_ct": _sklift("ct"),
    "sklift_tm": _sklift("tm"),
}


IMPORTS = {
    "ours": ["offerlift.training.learners", "lightgbm"],
    "causalml": ["causalml.inference.meta", "lightgbm"],
    "sklift": ["sklift.models", "lightgbm"],
}


def take(values: Any, rows: np.ndarray) -> Any:
    """Rows of an array or a DataFrame."""
    return values.iloc[rows] if isinstance(values, pd.DataFrame) else values[rows]


def _fold_data(data: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    return {k: take(v, rows) for k, v in data.items() if getattr(v, "ndim", 0) >= 1}


def warm_up(fit: FitFn, data: dict[str, np.ndarray], task: dict[str, Any]) -> None:
    """A small fit and predict (every 8th row, 5 trees) so that one-time costs (lazy imports, first allocations
    of the libraries) fall on no fold; failures here are ignored (the real folds report theirs)."""
    rows = np.arange(0, len(data["y"]), 8)
    small = {**task, "lgb": {**task["lgb"], "n_estimators": 5}}
    with contextlib.suppress(Exception):
        fit(_fold_data(data, rows), small)(take(data["X"], rows), data["pair_prop"][rows])


def run(task_dir: Path, method: str, out: Path) -> None:
    """Fit ``method`` on every fold of the task and write the held-out uplift with times and memory."""
    task = json.loads((task_dir / "task.json").read_text())
    with np.load(task_dir / "task.npz") as z:
        data = {k: z[k] for k in z.files}
    if method not in METHODS:
        raise SystemExit(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    fit = METHODS[method]
    for module in IMPORTS[method.split("_")[0]]:  # imported before the first fold, so that no fold pays for them
        importlib.import_module(module)
    if method.startswith("ours"):  # offerlift takes the user's DataFrame: built here, outside the measurements
        data["X"] = pd.DataFrame(data["X"], columns=task["features"])
    warm_up(fit, data, task)
    folds = data["folds"]
    n_arms = len(task["arms"])
    uplift = np.full((len(folds), n_arms - 1), np.nan)
    stats = {k: [] for k in ("fit_cpu", "fit_wall", "pred_cpu", "pred_wall", "mem_mb")}
    for f in np.unique(folds):
        train, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        d = _fold_data(data, train)
        exact = _reset_peak()
        base_kb = _status_kb("VmRSS")
        c0, w0 = time.process_time(), time.perf_counter()
        predict = fit(d, task)
        c1, w1 = time.process_time(), time.perf_counter()
        uplift[held] = predict(take(data["X"], held), data["pair_prop"][held])
        c2, w2 = time.process_time(), time.perf_counter()
        peak_kb = _status_kb("VmHWM")
        stats["fit_cpu"].append(c1 - c0)
        stats["fit_wall"].append(w1 - w0)
        stats["pred_cpu"].append(c2 - c1)
        stats["pred_wall"].append(w2 - w1)
        stats["mem_mb"].append((peak_kb - base_kb) / 1024.0 if exact else float("nan"))
        del predict, d
    np.savez(out, uplift=uplift, **{k: np.asarray(v) for k, v in stats.items()})


def main(argv: list[str]) -> None:
    """Command line: TASK_DIR METHOD OUT.npz."""
    if len(argv) != 3:
        raise SystemExit("usage: uplift_bench_peers.py TASK_DIR METHOD OUT.npz")
    warnings.filterwarnings("ignore")
    run(Path(argv[0]), argv[1], Path(argv[2]))


if __name__ == "__main__":
    main(sys.argv[1:])
