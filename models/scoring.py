"""The scoring runtime shared by training and serving: feature encoding and per-arm predictions from boosters.

A trained model is saved as plain data (LightGBM model strings plus a JSON spec), so that serving can score it
without importing `training/`, and training checks that this runtime gives exactly its learners' predictions.

Spec of one outcome model (``kind``):
- ``"s"``: one booster on ``[X, arm_table[arm]]`` (the arm's features: one-hot, coupon value, ...); all arms
  scored in one stacked call.
- ``"t"``: one booster per arm on ``X``.
- ``"mu_tau"``: ``n_mu`` control-outcome boosters (their mean is ``mu``) followed by effect boosters ``tau_j``;
  arm ``a`` gets ``mu(X) + sum_j weights[a][j] * tau_j(X)`` (X- and DR-learners).

The model's ``value_outcome`` (the outcome that carries money value, default ``"spend"``) is either an outcome
model itself or, when the spec has ``value_from`` (a list of outcome names), the product of those outcomes'
predictions: ``value_from: ["buy", "basket"]`` is a hurdle model, E[spend] = P(buy) * E[spend | buy].
`ArmScorer.predict` then returns the composed value under the ``value_outcome`` name next to its parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ModelError

FORMAT = "offerlift-arm-scorer/1"


@dataclass(frozen=True)
class FeatureSpec:
    """Column order and categorical levels; turns frames or records into the float matrix the boosters expect.

    Categoricals are encoded as their code in the training levels (unknown levels and missing values -> NaN, which
    LightGBM treats as missing), numbers as float64.
    """

    columns: tuple[str, ...]
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, X: pd.DataFrame) -> FeatureSpec:
        """Learn the spec from a training frame (pandas Categorical or text columns are categorical)."""
        cats: dict[str, tuple[str, ...]] = {}
        for col in X.columns:
            s = X[col]
            if isinstance(s.dtype, pd.CategoricalDtype):
                cats[col] = tuple(str(c) for c in s.cat.categories)
            elif not pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                cats[col] = tuple(sorted(str(v) for v in s.dropna().unique()))
        return cls(tuple(str(c) for c in X.columns), cats)

    @property
    def categorical_indices(self) -> list[int]:
        """Positions of the categorical columns (for LightGBM's `categorical_feature`)."""
        return [i for i, c in enumerate(self.columns) if c in self.categories]

    def encode(self, X: pd.DataFrame) -> np.ndarray:
        """A float64 matrix in spec order; ModelError names a missing column."""
        missing = [c for c in self.columns if c not in X.columns]
        if missing:
            raise ModelError(f"features missing from the input: {missing}")
        out = np.empty((len(X), len(self.columns)), dtype=np.float64)
        for j, col in enumerate(self.columns):
            s = X[col]
            if col in self.categories:
                levels = pd.Index(self.categories[col])
                codes = levels.get_indexer(s.astype("string").astype(object).where(s.notna(), None))
                out[:, j] = np.where(codes < 0, np.nan, codes)
            else:
                out[:, j] = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return out

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The same encoding from plain dicts, without pandas (the serving hot path). Missing keys -> NaN."""
        lookup = {c: {v: i for i, v in enumerate(levels)} for c, levels in self.categories.items()}
        out = np.full((len(records), len(self.columns)), np.nan, dtype=np.float64)
        for i, rec in enumerate(records):
            row = out[i]
            for j, col in enumerate(self.columns):
                v = rec.get(col)
                if v is None:
                    continue
                if col in lookup:
                    code = lookup[col].get(str(v))
                    if code is not None:
                        row[j] = code
                else:
                    try:
                        row[j] = float(v)
                    except (TypeError, ValueError):
                        raise ModelError(f"feature {col!r} must be a number, got {v!r}") from None
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"columns": list(self.columns), "categories": {k: list(v) for k, v in self.categories.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """Inverse of `to_dict`."""
        return cls(tuple(d["columns"]), {k: tuple(v) for k, v in d.get("categories", {}).items()})


def _booster(model_str: str) -> lgb.Booster:
    return lgb.Booster(model_str=model_str)


class OutcomeScorer:
    """Per-arm predictions of one outcome from its spec and booster strings."""

    def __init__(self, spec: Mapping[str, Any], n_arms: int):
        self.kind = spec["kind"]
        self.n_arms = n_arms
        self.boosters = [_booster(s) for s in spec["boosters"]]
        self.arm_table = np.asarray(spec.get("arm_table", []), dtype=np.float64)
        self.weights = np.asarray(spec.get("weights", []), dtype=np.float64)
        self.clip = spec.get("clip")
        self.n_mu = int(spec.get("n_mu", 1))
        if self.kind not in ("s", "t", "mu_tau"):
            raise ModelError(f"unknown outcome model kind {self.kind!r}")

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n, n_arms) expected outcome under each arm (clipped to ``clip`` when the spec gives one)."""
        out = self._raw(X)
        if self.clip is not None:
            np.clip(out, self.clip[0], self.clip[1], out=out)
        return out

    def _raw(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        if self.kind == "t":
            return np.column_stack([b.predict(X) for b in self.boosters])
        if self.kind == "s":
            return self.boosters[0].predict(stack_arms(X, self.arm_table)).reshape(self.n_arms, n).T
        mu = np.mean([b.predict(X) for b in self.boosters[: self.n_mu]], axis=0)
        rest = self.boosters[self.n_mu :]
        taus = np.column_stack([b.predict(X) for b in rest]) if rest else np.zeros((n, 0))
        return mu[:, None] + taus @ self.weights.T


def stack_arms(X: np.ndarray, arm_table: np.ndarray) -> np.ndarray:
    """Rows of X repeated once per arm (arm-major), each block followed by that arm's row of `arm_table`."""
    n, d = X.shape
    m, k = arm_table.shape
    out = np.empty((n * m, d + k), dtype=np.float64)
    out[:, :d] = np.tile(X, (m, 1))
    out[:, d:] = np.repeat(arm_table, n, axis=0)
    return out


class ArmScorer:
    """All outcome models of a trained offerlift model, with its feature spec and catalog.

    `predict(X)` gives, per outcome, the (n, n_arms) expected outcome; `incremental_profit(X)` the (n, n_arms)
    expected incremental profit of each arm over the control arm (column 0 is 0).
    """

    def __init__(self, spec: Mapping[str, Any]):
        if spec.get("format") != FORMAT:
            raise ModelError(f"unknown model format {spec.get('format')!r}; expected {FORMAT!r}")
        self.spec = dict(spec)
        self.catalog = Catalog.from_dict(spec["catalog"])
        self.arms: list[str] = list(spec["arms"])
        if self.arms != self.catalog.arm_ids:
            raise ModelError(f"model arms {self.arms} differ from its catalog {self.catalog.arm_ids}")
        self.features = FeatureSpec.from_dict(spec["feature_spec"])
        self.outcomes = {name: OutcomeScorer(o, len(self.arms)) for name, o in spec["outcomes"].items()}
        self.metadata: dict[str, Any] = dict(spec.get("metadata") or {})
        self.value_outcome: str = spec.get("value_outcome", "spend")
        self.value_from: tuple[str, ...] = tuple(spec.get("value_from") or ())
        unknown = [name for name in self.value_from if name not in self.outcomes]
        if unknown:
            raise ModelError(
                f"value_from names outcome {unknown[0]!r}, which has no model; outcomes: {list(self.outcomes)}"
            )
        arms = [self.catalog.arm(a) for a in self.arms]
        self.redeem_cost = np.array([a.redeem_cost for a in arms])
        self.contact_cost = np.array([a.contact_cost for a in arms])

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Per outcome, (n, n_arms) predictions on an encoded matrix (plus the composed value, see ``value_from``)."""
        preds = {name: m.predict(X) for name, m in self.outcomes.items()}
        if self.value_from:
            value = preds[self.value_from[0]].copy()
            for name in self.value_from[1:]:
                value *= preds[name]
            preds[self.value_outcome] = value
        return preds

    def profit(self, preds: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, n_arms) expected profit: margin * E[value] - redeem cost * P(redeem) - contact cost."""
        value = preds[self.value_outcome]
        profit = self.catalog.margin * value - self.contact_cost
        if "redeem" in preds:
            profit = profit - self.redeem_cost * preds["redeem"]
        return profit

    def incremental_profit(self, X: np.ndarray) -> np.ndarray:
        """(n, n_arms) expected profit of each arm minus that of the control arm."""
        profit = self.profit(self.predict(X))
        return profit - profit[:, [0]]


def score_frame(scorer: ArmScorer, frame: pd.DataFrame) -> pd.DataFrame:
    """Incremental profit per treatment arm (``uplift_<arm>``) and the recommended arm (control when none is
    positive), one row per input row."""
    incr = scorer.incremental_profit(scorer.features.encode(frame))
    out = pd.DataFrame(incr[:, 1:], columns=[f"uplift_{a}" for a in scorer.arms[1:]], index=frame.index)
    best = np.argmax(incr, axis=1)
    best = np.where(incr[np.arange(len(incr)), best] > 0, best, 0)
    out["recommended_arm"] = np.asarray(scorer.arms, dtype=object)[best]
    return out
