"""Compiled trees (lleaves): an optional fast path for batch scoring, compiled once and cached off the request path.

`compile_scorer(scorer, cache_dir)` returns a copy of an `ArmScorer` whose LightGBM boosters are replaced by
lleaves models (LLVM-compiled tree code). Each booster is compiled once per model text: the object file is cached
as ``<cache_dir>/<sha256 of the model text>.o`` and later loads take milliseconds. The compiled models predict the
same numbers up to floating-point rounding (about 1e-14); `same_decisions` checks that the decisions are equal
on given rows before a compiled scorer is trusted (the batch benchmark and the tests do).

lleaves 1.3.0 needs ``llvmlite==0.44.0`` (it breaks with 0.45+), which numba-based packages may not accept; it is
in the runtime environment because nothing there needs numba. Without lleaves, `available()` is False and
`compile_scorer` raises ModelError.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from offerlift.features.errors import ModelError
from offerlift.models.scoring import ArmScorer

log = logging.getLogger(__name__)


def available() -> bool:
    """True when lleaves (and a compatible llvmlite) can be imported."""
    try:
        import lleaves  # noqa: F401
    except Exception:  # an incompatible llvmlite fails at import with various errors
        return False
    return True


class CompiledBooster:
    """A lleaves model with the `predict(X)` of a LightGBM booster (transformed output, float64)."""

    def __init__(self, model: Any, n_jobs: int):
        self.model, self.n_jobs = model, n_jobs

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for the rows of X."""
        return self.model.predict(np.ascontiguousarray(X, dtype=np.float64), n_jobs=self.n_jobs)


def compile_booster(model_text: str, cache_dir: str | Path, n_jobs: int = 1) -> CompiledBooster:
    """Compile one LightGBM model text (or load its cached object file)."""
    if not available():
        raise ModelError("compiled trees need lleaves (pip install lleaves llvmlite==0.44.0)")
    import lleaves

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(model_text.encode()).hexdigest()[:32]
    text_path, obj_path = cache / f"{key}.txt", cache / f"{key}.o"
    if not text_path.exists():
        text_path.write_text(model_text)
    model = lleaves.Model(model_file=str(text_path))
    t0 = time.perf_counter()
    model.compile(cache=str(obj_path))
    log.debug("booster %s ready in %.2fs", key, time.perf_counter() - t0)
    return CompiledBooster(model, n_jobs)


def compile_scorer(scorer: ArmScorer, cache_dir: str | Path, n_jobs: int = 1) -> ArmScorer:
    """A copy of `scorer` whose boosters are compiled with lleaves (cached in `cache_dir`)."""
    t0 = time.perf_counter()
    out = copy.copy(scorer)
    out.outcomes = {}
    for name, outcome in scorer.outcomes.items():
        fast = copy.copy(outcome)
        fast.boosters = [compile_booster(b.model_to_string(), cache_dir, n_jobs) for b in outcome.boosters]
        out.outcomes[name] = fast
    log.info(
        "compiled %d boosters in %.1fs", sum(len(o.boosters) for o in out.outcomes.values()), time.perf_counter() - t0
    )
    return out


def max_difference(scorer: ArmScorer, compiled: ArmScorer, X: np.ndarray) -> float:
    """Largest absolute difference of any outcome prediction on X."""
    a, b = scorer.predict(X), compiled.predict(X)
    return max(float(np.max(np.abs(a[k] - b[k]), initial=0.0)) for k in a)


def same_decisions(scorer: ArmScorer, compiled: ArmScorer, X: np.ndarray) -> bool:
    """True when both scorers give every row of X the same best arm (greedy on incremental profit)."""
    a = scorer.incremental_profit(X)
    b = compiled.incremental_profit(X)
    best_a = np.where(a.max(axis=1) > 0, a.argmax(axis=1), 0)
    best_b = np.where(b.max(axis=1) > 0, b.argmax(axis=1), 0)
    return bool(np.array_equal(best_a, best_b))
