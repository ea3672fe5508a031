"""Turn fitted learners into the plain-data scorer spec that `offerlift.models.scoring.ArmScorer` runs.

The spec holds LightGBM model strings and the arithmetic that combines them, so serving scores a model without
importing `training/`. `check_export` proves, on given rows, that the spec predicts what the learner predicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ModelError, NotFittedError
from offerlift.models.scoring import FORMAT, ArmScorer, FeatureSpec
from offerlift.training.learners import DRLearner, SLearner, TLearner, XLearner
from offerlift.training.learners_base import UpliftLearnerBase


def feature_spec(learner: UpliftLearnerBase) -> FeatureSpec:
    """The learner's column order and categorical levels as a FeatureSpec."""
    enc = learner.encoder_
    cats = {str(enc.columns[j]): tuple(str(c) for c in levels) for j, levels in enc.categories.items()}
    return FeatureSpec(tuple(str(c) for c in enc.columns), cats)


def outcome_spec(learner: UpliftLearnerBase) -> dict[str, Any]:
    """The spec of one fitted learner (kind, boosters, arm table or weights, clip)."""
    if not hasattr(learner, "arms_"):
        raise NotFittedError(f"cannot export an unfitted {type(learner).__name__}: call fit first")
    clip = [0.0, 1.0] if learner.outcome_ == "binary" else None
    if isinstance(learner, SLearner):
        return {
            "kind": "s",
            "boosters": [learner.model_.model_to_string()],
            "arm_table": learner.arm_table_.tolist(),
            "clip": clip,
        }
    if isinstance(learner, TLearner):
        return {"kind": "t", "boosters": [m.model_to_string() for m in learner.models_], "clip": clip}
    m = len(learner.arms_)
    if isinstance(learner, XLearner):
        mu = [learner.models_[0]]
        parts = learner.effect_models_
    elif isinstance(learner, DRLearner):
        mu = list(learner.control_models_)
        parts = [[(b, 1.0)] for b in learner.effect_models_]
    else:
        raise ModelError(f"no export for learner type {type(learner).__name__}")
    taus, weights = [], np.zeros((m, sum(len(p) for p in parts)))
    for a, arm_parts in enumerate(parts, 1):
        for booster, w in arm_parts:
            weights[a, len(taus)] = w
            taus.append(booster)
    return {
        "kind": "mu_tau",
        "n_mu": len(mu),
        "boosters": [b.model_to_string() for b in mu + taus],
        "weights": weights.tolist(),
        "clip": clip,
    }


def scorer_spec(
    learners: Mapping[str, UpliftLearnerBase],
    catalog: Catalog,
    value_outcome: str,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The full model spec: every outcome learner, the feature spec, the catalog and metadata.

    All learners must share arms (in catalog order) and features.
    """
    if not learners:
        raise ModelError("a model needs at least one outcome learner")
    if value_outcome not in learners:
        raise ModelError(f"value outcome {value_outcome!r} has no learner; outcomes are {sorted(learners)}")
    first = next(iter(learners.values()))
    outcomes = {name: outcome_spec(lr) for name, lr in learners.items()}
    spec_f = feature_spec(first)
    for name, lr in learners.items():
        if list(lr.arms_) != catalog.arm_ids:
            raise ModelError(f"learner of {name!r} has arms {list(lr.arms_)}, the catalog {catalog.arm_ids}")
        if feature_spec(lr) != spec_f:
            raise ModelError(f"learner of {name!r} was fitted on other features than {next(iter(learners))!r}")
    return {
        "format": FORMAT,
        "arms": catalog.arm_ids,
        "catalog": catalog.to_dict(),
        "feature_spec": spec_f.to_dict(),
        "outcomes": outcomes,
        "value_outcome": value_outcome,
        "metadata": dict(metadata or {}),
    }


def check_export(spec: Mapping[str, Any], learners: Mapping[str, UpliftLearnerBase], X: pd.DataFrame) -> float:
    """Largest absolute difference between the spec's and the learners' predictions on X; ModelError if > 1e-9."""
    scorer = ArmScorer(spec)
    preds = scorer.predict(scorer.features.encode(X))
    worst = 0.0
    for name, lr in learners.items():
        worst = max(worst, float(np.max(np.abs(preds[name] - lr.predict(X)))))
    if worst > 1e-9:
        raise ModelError(f"exported model differs from the fitted learners by {worst:g}")
    return worst
