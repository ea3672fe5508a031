"""The floors and ceilings every loop round is measured against, exactly, on the simulated world.

- no offer: 0 by definition (values are incremental profit over no offer);
- the best single arm for everyone: the arm whose policy "this arm for every customer it can reach with consent"
  has the largest exact value at the round's time (`SimWorld.scorecard`);
- the feature ceiling: the greedy policy of a model fitted on the NOISE-FREE true incremental profit from the
  observable features the policies see (what the features allow, whatever the learner or the data size), cross-
  fitted over the round's customers (each customer's choice comes from a fit on the other half of a sample), valued
  exactly at the round's time;
- the oracle: the best policy knowing the hidden traits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.eligibility import reachable_arms
from offerlift.simworld.world import SimWorld

#: LightGBM settings of the ceiling's per-arm regressions on the noise-free targets.
CEILING_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "verbosity": -1,
    "num_threads": 1,
    "num_leaves": 31,
    "learning_rate": 0.1,
    "min_data_in_leaf": 20,
    "seed": 0,
}
CEILING_ROUNDS = 150


def best_single_arm(world: SimWorld, rows: np.ndarray, time: float) -> dict[str, Any]:
    """The best single arm for everyone on these customers at `time`: its id and exact value."""
    card = world.scorecard(rows, time)
    return {"best_single_arm": card["best_single_arm"], "best_single_arm_value": card["best_single_arm_value"]}


def feature_ceiling(
    world: SimWorld, features: pd.DataFrame, rows: np.ndarray, time: float, sample: int = 50_000, seed: int = 0
) -> dict[str, Any]:
    """The feature ceiling's exact value per customer on a random sample of the customers (``rows`` of the world,
    ``features`` their point-in-time features in the same order), with the oracle's value on the same sample.

    The sample is split in two halves; per arm, a LightGBM regression of the true incremental profit on the
    features is fitted on one half and predicts the other. The greedy choice over the reachable arms is valued with
    the world's truth."""
    import lightgbm as lgb

    from offerlift.training.learners_base import FeatureEncoder

    rng = np.random.default_rng(seed)
    take = rng.permutation(len(rows))[: min(sample, len(rows))]
    rows, feats = np.asarray(rows)[take], features.iloc[take].reset_index(drop=True)
    truth = world.truth(rows, time)
    incr = truth.incr.astype(np.float64)
    enc = FeatureEncoder().fit(feats)
    X = enc.transform(feats)
    half = rng.random(len(rows)) < 0.5
    pred = np.zeros_like(incr)
    for fit_rows in (half, ~half):
        if fit_rows.sum() < 50 or (~fit_rows).sum() < 1:
            continue
        for a in range(1, incr.shape[1]):
            data = lgb.Dataset(X[fit_rows], incr[fit_rows, a], categorical_feature=enc.categorical)
            booster = lgb.train(CEILING_PARAMS, data, CEILING_ROUNDS)
            pred[~fit_rows, a] = booster.predict(X[~fit_rows])
    allowed = reachable_arms(world.catalog, feats, len(feats))
    score = np.where(allowed, pred, -np.inf)
    score[:, 0] = 0.0
    arms = np.where(score.max(axis=1) > 0, score.argmax(axis=1), 0)
    return {
        "ceiling_value": float(truth.values(arms).mean()),
        "ceiling_oracle_value": float(truth.values(truth.oracle()).mean()),
        "ceiling_customers": len(rows),
    }
