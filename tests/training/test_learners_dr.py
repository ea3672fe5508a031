"""The DR learner's pair-row pseudo-outcomes use the propensity within {control, arm}, so they are unbiased."""

from __future__ import annotations

import numpy as np

from offerlift.training.learners import aipw_pseudo_outcome


def test_pair_propensities_make_pseudo_outcomes_unbiased_with_unequal_arms():
    rng = np.random.default_rng(0)
    n = 400_000
    probs = np.array([0.5, 0.25, 0.25])
    codes = rng.choice(3, n, p=probs)
    tau = np.array([0.0, 2.0, -1.0])
    y = 1.0 + tau[codes] + rng.normal(0, 1, n)
    mu = np.tile(1.0 + tau + np.array([0.7, -0.5, 0.0]), (n, 1))  # a biased outcome model: AIPW must correct it
    rows = np.flatnonzero((codes == 0) | (codes == 1))
    e_all = probs[codes[rows]]
    e_pair = e_all / (e_all + np.where(codes[rows] == 1, probs[0], probs[1]))
    right = aipw_pseudo_outcome(y[rows], codes[rows], mu[rows], e_pair, 1).mean()
    wrong = aipw_pseudo_outcome(y[rows], codes[rows], mu[rows], e_all, 1).mean()
    assert abs(right - 2.0) < 0.05
    assert abs(wrong - 2.0) > 0.2  # the all-arm propensities on pair rows are biased (the bug this guards)
