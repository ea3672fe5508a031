"""Off-policy estimators: known truth on simulated RCTs, identities, loop references, paired comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from offerlift.features.errors import ConfigError, DataError, PolicyError
from offerlift.training.policy_value import (
    bootstrap_counts,
    bootstrap_means,
    compare_policies,
    dr_value,
    ips_value,
    logged_data,
    policy_probabilities,
    policy_value,
    snips_value,
)

ARMS = ("none", "a", "b")
# True mean reward per (context, arm) and logging probabilities per context (rows sum to 1).
MEAN = np.array([[1.0, 1.5, 0.5], [2.0, 2.2, 2.6], [0.5, 1.4, 0.6], [1.2, 1.0, 1.6]])
LOGGING = np.array([[0.5, 0.25, 0.25], [0.2, 0.4, 0.4], [0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]])
GREEDY = MEAN.argmax(axis=1)  # deterministic policy by context
SOFT = np.array([[0.1, 0.8, 0.1], [0.0, 0.5, 0.5], [0.2, 0.2, 0.6], [1.0, 0.0, 0.0]])


def simulate(n: int, seed: int):
    """Contexts uniform over 4 values, arms drawn by LOGGING, reward = MEAN + N(0, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, n)
    cum = LOGGING[x].cumsum(axis=1)
    a = (rng.random(n)[:, None] > cum).sum(axis=1)
    r = MEAN[x, a] + rng.normal(size=n)
    return x, np.array(ARMS)[a], r, LOGGING[x, a]


def truth(policy_probs_by_context: np.ndarray) -> float:
    return float((policy_probs_by_context * MEAN).sum(axis=1).mean())


# ---------------------------------------------------------------- known truth
@pytest.mark.parametrize("estimator", ["ips", "snips", "dr"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_estimators_are_unbiased_and_cis_cover_the_truth(estimator, stochastic):
    by_context = SOFT if stochastic else np.eye(3)[GREEDY]
    true_value = truth(by_context)
    values, covered = [], 0
    for seed in range(30):
        x, a, r, p = simulate(1500, seed)
        policy = SOFT[x] if stochastic else np.array(ARMS)[GREEDY[x]]
        mu = MEAN[x] + np.array([0.4, -0.3, 0.2]) if estimator == "dr" else None  # a biased reward model
        est = policy_value(a, r, p, policy, estimator=estimator, mu=mu, arm_ids=ARMS, n_boot=200, seed=seed)
        values.append(est.value)
        covered += est.ci_low <= true_value <= est.ci_high
    assert covered >= 25  # nominal 95% of 30 = 28.5
    assert abs(np.mean(values) - true_value) < 3 * np.std(values) / np.sqrt(len(values))


def test_dr_with_an_exact_reward_model_has_a_smaller_spread_than_ips():
    ips_vals, dr_vals = [], []
    for seed in range(20):
        x, a, r, p = simulate(1000, seed)
        policy = np.array(ARMS)[GREEDY[x]]
        ips_vals.append(ips_value(a, r, p, policy, arm_ids=ARMS, n_boot=2).value)
        dr_vals.append(dr_value(a, r, p, policy, mu=MEAN[x], arm_ids=ARMS, n_boot=2).value)
    assert np.std(dr_vals) < 0.8 * np.std(ips_vals)


# ---------------------------------------------------------------- identities
def test_dr_equals_ips_when_the_reward_model_is_zero():
    x, a, r, p = simulate(800, 1)
    policy = SOFT[x]
    ips = ips_value(a, r, p, policy, arm_ids=ARMS, n_boot=100, seed=4)
    dr = dr_value(a, r, p, policy, mu=np.zeros((800, 3)), arm_ids=ARMS, n_boot=100, seed=4)
    assert dr.value == pytest.approx(ips.value, abs=1e-12)
    assert (dr.ci_low, dr.ci_high) == pytest.approx((ips.ci_low, ips.ci_high), abs=1e-12)


def test_snips_equals_ips_when_weights_average_one():
    x, a, r, p = simulate(600, 2)
    logging_policy = LOGGING[x]  # w = 1 for every unit
    assert snips_value(a, r, p, logging_policy, arm_ids=ARMS).value == pytest.approx(
        ips_value(a, r, p, logging_policy, arm_ids=ARMS).value
    )
    # a constant policy on a design with exactly n * q units per arm at propensity q
    arms = np.array(["none"] * 50 + ["a"] * 25 + ["b"] * 25)
    props = np.where(arms == "none", 0.5, 0.25)
    rewards = np.random.default_rng(0).normal(size=100)
    for arm in ARMS:
        const = [arm] * 100
        assert snips_value(arms, rewards, props, const).value == pytest.approx(
            ips_value(arms, rewards, props, const).value
        )
        assert ips_value(arms, rewards, props, const).value == pytest.approx(rewards[arms == arm].mean())


def test_constant_policy_snips_is_the_propensity_weighted_arm_mean():
    _, a, r, p = simulate(1000, 3)
    for arm in ARMS:
        got = snips_value(a, r, p, [arm] * a.size, arm_ids=ARMS).value
        mask = a == arm
        assert got == pytest.approx(np.sum(r[mask] / p[mask]) / np.sum(1 / p[mask]))
    arms = np.array(["none", "a", "none", "b", "a", "none"])
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    const_p = np.full(6, 0.4)
    assert snips_value(arms, rewards, const_p, ["none"] * 6).value == pytest.approx(10.0 / 3)


def test_estimates_equal_a_loop_reference():
    x, a, r, p = simulate(200, 5)
    mu = MEAN[x] * 0.9
    probs = SOFT[x]
    idx = {arm: k for k, arm in enumerate(ARMS)}
    ips_terms, ws, dr_terms = [], [], []
    for i in range(len(a)):
        w = probs[i][idx[a[i]]] / p[i]
        ws.append(w)
        ips_terms.append(w * r[i])
        direct = sum(probs[i][k] * mu[i][k] for k in range(3))
        dr_terms.append(direct + w * (r[i] - mu[i][idx[a[i]]]))
    assert ips_value(a, r, p, probs, arm_ids=ARMS).value == pytest.approx(sum(ips_terms) / len(a))
    assert snips_value(a, r, p, probs, arm_ids=ARMS).value == pytest.approx(sum(ips_terms) / sum(ws))
    assert dr_value(a, r, p, probs, mu=mu, arm_ids=ARMS).value == pytest.approx(sum(dr_terms) / len(a))


def test_policy_given_as_indices_equals_policy_given_as_labels():
    x, a, r, p = simulate(300, 6)
    by_label = ips_value(a, r, p, np.array(ARMS)[GREEDY[x]], arm_ids=ARMS, n_boot=50)
    by_index = ips_value(a, r, p, GREEDY[x], arm_ids=ARMS, n_boot=50)
    assert by_label == by_index


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_counts_are_resamples_and_reproducible():
    chunks = list(bootstrap_counts(50, 7, seed=1))
    counts = np.vstack(chunks)
    assert counts.shape == (7, 50)
    assert (counts.sum(axis=1) == 50).all() and (counts >= 0).all()
    assert np.array_equal(counts, np.vstack(list(bootstrap_counts(50, 7, seed=1))))
    assert not np.array_equal(counts, np.vstack(list(bootstrap_counts(50, 7, seed=2))))


def test_bootstrap_means_match_explicit_resamples_and_chunking(monkeypatch):
    values = np.random.default_rng(0).normal(size=(40, 2))
    counts = np.vstack(list(bootstrap_counts(40, 30, seed=5)))
    explicit = np.array([np.repeat(values, c.astype(int), axis=0).mean(axis=0) for c in counts])
    np.testing.assert_allclose(bootstrap_means(values, 30, seed=5), explicit)
    monkeypatch.setattr("offerlift.training.policy_value._MAX_CELLS", 40 * 4)  # chunks of 4 rows
    assert len(list(bootstrap_counts(40, 30, seed=5))) == 8


def test_bootstrap_se_is_close_to_the_analytic_se():
    x, a, r, p = simulate(4000, 7)
    policy = np.array(ARMS)[GREEDY[x]]
    est = ips_value(a, r, p, policy, arm_ids=ARMS, n_boot=1000, seed=0)
    data = logged_data(a, r, p, ARMS)
    w = policy_probabilities(policy, data)[np.arange(a.size), data.arm_index] / p
    analytic = np.std(w * r) / np.sqrt(a.size)
    assert est.se == pytest.approx(analytic, rel=0.1)
    assert est.ci_high - est.ci_low == pytest.approx(2 * 1.96 * analytic, rel=0.15)


# ---------------------------------------------------------------- compare_policies
def test_compare_policies_reports_paired_differences_against_both_baselines():
    x, a, r, p = simulate(3000, 8)
    policies = {"greedy": np.array(ARMS)[GREEDY[x]], "soft": SOFT[x]}
    table = compare_policies(policies, a, r, p, arm_ids=ARMS, n_boot=300, seed=1)
    assert list(table["policy"]) == ["greedy", "soft", "always:none", "always:a"]
    assert list(table["is_baseline"]) == [False, False, True, True]
    const = {arm: ips_value(a, r, p, [arm] * a.size, arm_ids=ARMS, n_boot=2).value for arm in ARMS}
    assert table["best_arm"].iloc[0] == max(const, key=const.get) == "a"
    row = table.set_index("policy").loc["greedy"]
    assert row["vs_control"] == pytest.approx(row["value"] - const["none"])
    assert row["vs_best_arm"] == pytest.approx(row["value"] - const["a"])
    assert row["vs_control_ci_low"] < row["vs_control"] < row["vs_control_ci_high"]
    assert row["vs_best_arm_ci_low"] > 0  # greedy beats every constant arm in this world
    ctrl = table.set_index("policy").loc["always:none"]
    assert (ctrl["vs_control"], ctrl["vs_control_ci_low"], ctrl["vs_control_ci_high"]) == (0.0, 0.0, 0.0)


def test_paired_difference_ci_is_narrower_than_unpaired_for_similar_policies():
    x, a, r, p = simulate(3000, 9)
    near_best = np.where(x == 2, "b", "a")  # equals always-a except in context 2
    table = compare_policies({"near": near_best}, a, r, p, arm_ids=ARMS, n_boot=400, seed=2).set_index("policy")
    width_paired = table.loc["near", "vs_best_arm_ci_high"] - table.loc["near", "vs_best_arm_ci_low"]
    width_each = [table.loc[k, "ci_high"] - table.loc[k, "ci_low"] for k in ("near", "always:a")]
    assert width_paired < 0.6 * np.hypot(*width_each)


@pytest.mark.parametrize("estimator", ["snips", "dr"])
def test_compare_policies_uses_the_chosen_estimator(estimator):
    x, a, r, p = simulate(500, 10)
    mu = MEAN[x] if estimator == "dr" else None
    policy = np.array(ARMS)[GREEDY[x]]
    table = compare_policies({"g": policy}, a, r, p, estimator=estimator, mu=mu, arm_ids=ARMS, n_boot=50)
    single = policy_value(a, r, p, policy, estimator=estimator, mu=mu, arm_ids=ARMS, n_boot=50)
    assert table["value"].iloc[0] == pytest.approx(single.value)
    assert (table["estimator"] == estimator).all()


# ---------------------------------------------------------------- errors
A3, R3, P3 = ["none", "a", "b"], [1.0, 2.0, 3.0], [0.5, 0.25, 0.25]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ips_value(A3, R3, [0.5, 0.0, 0.25], A3), DataError, r"propensities.*0\.0.*rows \[1\]"),
        (lambda: ips_value(A3, R3, [0.5, 1.5, 0.25], A3), DataError, "propensities"),
        (lambda: ips_value(A3, R3[:2], P3, A3), DataError, "rewards has 2"),
        (lambda: ips_value(A3, [1.0, np.nan, 3.0], P3, A3), DataError, "rewards must be finite"),
        (lambda: ips_value(A3, R3, P3, ["none", "c", "b"]), PolicyError, "unknown arm 'c'"),
        (lambda: ips_value(A3, R3, P3, ["none", "a"]), PolicyError, "3 chosen arms"),
        (lambda: ips_value(A3, R3, P3, A3, arm_ids=["none", "a"]), DataError, "unknown arm 'b'"),
        (lambda: ips_value(A3, R3, P3, [0, 5, 1], arm_ids=ARMS), PolicyError, "arm index 5"),
        (lambda: ips_value(A3, R3, P3, np.full((3, 3), 0.5), arm_ids=ARMS), PolicyError, "sum to 1"),
        (lambda: ips_value(A3, R3, P3, np.full((3, 2), 0.5), arm_ids=ARMS), PolicyError, r"shape \(3, 3\)"),
        (lambda: policy_value(A3, R3, P3, A3, estimator="dr"), ConfigError, "needs mu"),
        (lambda: dr_value(A3, R3, P3, A3, mu=np.zeros((3, 2))), DataError, "mu must have shape"),
        (lambda: policy_value(A3, R3, P3, A3, estimator="ipw"), ConfigError, "'ipw'"),
        (lambda: ips_value(A3, R3, P3, A3, n_boot=1), ConfigError, "n_boot"),
        (lambda: ips_value(A3, R3, P3, A3, level=95), ConfigError, "level"),
        (lambda: compare_policies({"p": A3}, A3, R3, P3, control_arm="off"), ConfigError, "control_arm 'off'"),
        (lambda: compare_policies({}, A3, R3, P3), ConfigError, "at least one policy"),
    ],
)
def test_bad_inputs_raise_errors_naming_them(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_policy_difference_is_paired_and_signs_the_better_policy():
    from offerlift.training.policy_value import policy_difference

    rng = np.random.default_rng(7)
    n = 20_000
    arms = rng.integers(0, 3, n)
    reward = np.where(arms == 2, 1.0, 0.0) + rng.normal(0, 1, n)
    good, bad = np.full(n, 2), np.full(n, 0)
    out = policy_difference(good, bad, arms, reward, np.full(n, 1 / 3), estimator="ips", arm_ids=[0, 1, 2], n_boot=200)
    assert out["ci_low"] > 0.5 and out["diff"] == pytest.approx(out["value_a"] - out["value_b"])
    same = policy_difference(good, good, arms, reward, np.full(n, 1 / 3), estimator="ips", arm_ids=[0, 1, 2], n_boot=50)
    assert same["diff"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0


def test_paired_difference_equals_dr_policy_difference_and_is_zero_where_policies_agree():
    from offerlift.training.policy_value import paired_difference, policy_difference

    rng = np.random.default_rng(3)
    n, k = 4000, 4
    arms = rng.integers(0, k, n)
    p = np.full(n, 1 / k)
    mu = rng.normal(0, 1, (n, k))
    reward = mu[np.arange(n), arms] + rng.normal(0, 2, n)
    new, old = rng.integers(0, k, n), rng.integers(0, k, n)
    old[:1000] = new[:1000]
    rows = np.arange(n)
    got = paired_difference(new, old, arms, reward, p, mu[rows, new], mu[rows, old], mu[rows, arms])
    ref = policy_difference(new, old, arms, reward, p, estimator="dr", mu=mu, arm_ids=list(range(k)), n_boot=2)
    assert got["diff"] == pytest.approx(ref["diff"], abs=1e-12)
    assert got["value_a"] == pytest.approx(ref["value_a"]) and got["value_b"] == pytest.approx(ref["value_b"])
    assert got["n_differ"] == int((new != old).sum())
    same = paired_difference(new, new, arms, reward, p, mu[rows, new], mu[rows, new], mu[rows, arms])
    assert same["diff"] == 0 and same["se"] == 0


def test_paired_difference_se_counts_a_cluster_once():
    from offerlift.training.policy_value import paired_difference

    rng = np.random.default_rng(4)
    n = 3000
    arms, new, old = rng.integers(0, 2, n), np.ones(n, dtype=int), np.zeros(n, dtype=int)
    reward = rng.normal(0, 1, n)
    zeros = np.zeros(n)
    alone = paired_difference(new, old, arms, reward, np.full(n, 0.5), zeros, zeros, zeros)
    copies = [np.tile(v, 4) for v in (new, old, arms, reward)]
    zeros4 = np.zeros(4 * n)
    p4 = np.full(4 * n, 0.5)
    naive = paired_difference(*copies[:3], copies[3], p4, zeros4, zeros4, zeros4)
    clustered = paired_difference(*copies[:3], copies[3], p4, zeros4, zeros4, zeros4, clusters=np.tile(np.arange(n), 4))
    assert naive["se"] == pytest.approx(alone["se"] / 2, rel=0.01)  # four copies look like four times the data
    assert clustered["se"] == pytest.approx(alone["se"], rel=0.01)  # unless a customer counts once
    assert clustered["ci_low"] < clustered["diff"] < clustered["ci_high"]
