"""Properties of the decision policy: rules hold, holdout gets nothing, propensities are the true frequencies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError
from offerlift.serving.policy import PolicyConfig, decide, explain, holdout_unit
from offerlift.serving.rules import Rules, allowed_arms

CATALOG = Catalog.from_dict(
    {
        "name": "t",
        "offers": [{"id": f"c{v}", "coupon_value": v} for v in (2, 5, 10)],
        "channels": [
            {"id": "sms", "contact_cost": 0.05, "consent": "consent_sms"},
            {"id": "push", "contact_cost": 0.0, "consent": "consent_push"},
        ],
    }
)
K = len(CATALOG.arm_ids)
WORST = np.array([a.redeem_cost + a.contact_cost for a in CATALOG.arms])


def reference_greedy(incr_row, allowed_row):
    """The obvious loop: best allowed arm with positive profit, else no offer."""
    best, best_v = 0, 0.0
    for j in range(1, len(incr_row)):
        if allowed_row[j] and incr_row[j] > best_v:
            best, best_v = j, incr_row[j]
    return best


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 40))
def test_exploit_matches_reference_loop(seed, n):
    rng = np.random.default_rng(seed)
    incr = rng.normal(size=(n, K))
    allowed = rng.random((n, K)) < 0.7
    d = decide(incr, np.zeros((n, K)), allowed, np.ones(n), np.ones((n, 2)), PolicyConfig(holdout=0, explore=0))
    assert list(d.arm) == [reference_greedy(incr[i], allowed[i] | (np.arange(K) == 0)) for i in range(n)]
    assert set(d.group) == {"exploit"}
    np.testing.assert_allclose(d.propensity, 1.0)


def simulate(seed: int, n: int, budget: float, cap: int, explore: float, holdout: float):
    """Serve n sequential requests from a few customers with an in-memory budget and contact ledger."""
    rng = np.random.default_rng(seed)
    customers = [f"c{i}" for i in range(max(1, n // 4))]
    consent = {c: {"consent_sms": rng.random() < 0.5, "consent_push": rng.random() < 0.7} for c in customers}
    contacts = {c: {"sms": 0, "push": 0} for c in customers}
    config = PolicyConfig(holdout=holdout, explore=explore, experiment="e1")
    rules = Rules(cap_per_customer=cap)
    spent, log = 0.0, []
    for _ in range(n):
        cid = customers[rng.integers(len(customers))]
        attrs = {k: [v] for k, v in consent[cid].items()}
        allowed = allowed_arms(CATALOG, attrs, 1, rules, {k: [v] for k, v in contacts[cid].items()}, budget - spent)
        incr = rng.normal(0.5, 1.0, size=(1, K))
        d = decide(incr, incr * 0.1, allowed, holdout_unit([cid], "e1"), rng.random((1, 2)), config)
        arm = CATALOG.arms[int(d.arm[0])]
        if not arm.is_control:
            spent += WORST[int(d.arm[0])]
            contacts[cid][arm.channel.id] += 1
        log.append((cid, arm, d.group[0], consent[cid]))
    return spent, contacts, log


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 120),
    st.floats(0, 100),
    st.integers(0, 4),
    st.floats(0, 0.9),
    st.floats(0, 0.9),
)
def test_budget_caps_consent_and_holdout_always_hold(seed, n, budget, cap, explore, holdout):
    spent, contacts, log = simulate(seed, n, budget, cap, explore, holdout)
    assert spent <= budget + 1e-9
    assert all(sum(c.values()) <= cap for c in contacts.values())
    for cid, arm, group, consent in log:
        if not arm.is_control:
            assert consent[f"consent_{arm.channel.id}"], f"{cid} contacted on {arm.channel.id} without consent"
        if group == "holdout":
            assert arm.is_control
        if holdout_unit([cid], "e1")[0] < holdout:
            assert group == "holdout"


def test_logged_propensities_match_observed_frequencies():
    rng = np.random.default_rng(3)
    n = 200_000
    incr = np.tile(np.array([[0.0, 0.3, 1.0, -0.2, 0.1, 0.4, 0.2]]), (n, 1))
    allowed = np.tile(np.array([[True, True, True, False, True, True, False]]), (n, 1))
    config = PolicyConfig(holdout=0.1, explore=0.2)
    ids = [f"c{i}" for i in range(n)]
    d = decide(incr, np.zeros_like(incr), allowed, holdout_unit(ids, "x"), rng.random((n, 2)), config)
    for arm in range(K):
        observed = np.mean(d.arm == arm)
        logged = d.propensity[d.arm == arm]
        if observed == 0:
            assert not allowed[0, arm]
            continue
        assert np.allclose(logged, logged[0])
        assert observed == pytest.approx(logged[0], abs=4 * np.sqrt(logged[0] * (1 - logged[0]) / n))
    assert np.mean(d.group == "holdout") == pytest.approx(0.1, abs=0.005)


def test_holdout_is_stable_per_customer_and_experiment():
    a = holdout_unit(["x", "y", "z"], "e1")
    np.testing.assert_array_equal(a, holdout_unit(["x", "y", "z"], "e1"))
    assert not np.array_equal(a, holdout_unit(["x", "y", "z"], "e2"))
    assert ((a >= 0) & (a < 1)).all()


def test_pacing_price_moves_choice_to_cheaper_arm():
    incr = np.array([[0.0, 1.0, 1.2]])
    cost = np.array([[0.0, 0.1, 2.0]])
    args = (np.ones((1, 3), bool), np.ones(1), np.ones((1, 2)), PolicyConfig(holdout=0, explore=0))
    assert decide(incr, cost, *args, price=0.0).arm[0] == 2
    assert decide(incr, cost, *args, price=0.5).arm[0] == 1
    assert decide(incr, cost, *args, price=20.0).arm[0] == 0


def test_fallback_arm_used_when_no_allowed_arm_pays_and_fallback_is_allowed():
    incr = np.array([[0.0, -1.0, -1.0], [0.0, -1.0, -1.0]])
    allowed = np.array([[True, False, False], [True, True, False]])
    d = decide(incr, np.zeros((2, 3)), allowed, np.ones(2), np.ones((2, 2)), PolicyConfig(0, 0, fallback_arm=1))
    assert list(d.arm) == [0, 1]
    allowed = np.array([[True, True, False], [True, False, True]])
    d = decide(incr, np.zeros((2, 3)), allowed, np.ones(2), np.ones((2, 2)), PolicyConfig(0, 0, fallback_arm=2))
    assert list(d.arm) == [0, 2]


def test_bad_config_is_named():
    with pytest.raises(ConfigError, match="holdout"):
        PolicyConfig(holdout=1.5)
    with pytest.raises(ConfigError, match="min_tier"):
        Rules(tiers=("a", "b"), min_tier="c")
    with pytest.raises(ConfigError, match="colour"):
        Rules.from_dict({"colour": 1})


def test_explain_lists_best_allowed_arms_first():
    out = explain(np.array([0.0, 2.0, 3.0, 1.0]), np.array([True, True, False, True]), ["none", "a", "b", "c"], top=2)
    assert [o["arm"] for o in out] == ["a", "c"]


def test_eligibility_rules_mask_all_treatments():
    rules = Rules(cities=("sh",), tiers=("bronze", "gold"), min_tier="gold", cap_per_customer=None)
    attrs = {
        "city": ["sh", "bj", "sh"],
        "tier": ["gold", "gold", "bronze"],
        "consent_sms": [1, 1, 1],
        "consent_push": [1, 1, 1],
    }
    mask = allowed_arms(CATALOG, attrs, 3, rules)
    assert mask[0].all() and not mask[1, 1:].any() and not mask[2, 1:].any() and mask[:, 0].all()


SOFTMAX = PolicyConfig(holdout=0.1, explore=0.3, explore_scheme="softmax", temperature=0.5, explore_floor=0.2)


def reference_softmax(score_row, allowed_row, temperature, floor):
    """The exploration distribution written out: floor spread evenly, the rest softmax over allowed arms."""
    idx = [j for j in range(len(score_row)) if allowed_row[j]]
    w = {j: np.exp(score_row[j] / temperature) for j in idx}
    total = sum(w.values())
    return {j: floor / len(idx) + (1 - floor) * w[j] / total for j in idx}


def test_softmax_propensities_match_observed_frequencies_and_the_written_out_distribution():
    rng = np.random.default_rng(5)
    n = 200_000
    row = np.array([0.0, 0.3, 1.0, -0.2, 0.1, 0.4, 0.2])
    allowed_row = np.array([True, True, True, False, True, True, False])
    incr, allowed = np.tile(row, (n, 1)), np.tile(allowed_row, (n, 1))
    ids = [f"c{i}" for i in range(n)]
    d = decide(incr, np.zeros_like(incr), allowed, holdout_unit(ids, "x"), rng.random((n, 2)), SOFTMAX)
    q = reference_softmax(np.where(allowed_row, row, 0.0), allowed_row, 0.5, 0.2)
    greedy = 2
    for arm in range(K):
        observed = np.mean(d.arm == arm)
        if not allowed_row[arm]:
            assert observed == 0
            continue
        expected = 0.1 * (arm == 0) + 0.9 * (0.3 * q[arm] + 0.7 * (arm == greedy))
        logged = d.propensity[d.arm == arm]
        np.testing.assert_allclose(logged, expected, rtol=1e-12)
        assert observed == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / n))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 30), st.floats(0.05, 5.0), st.floats(0.01, 1.0))
def test_softmax_exploration_keeps_a_floor_on_every_allowed_arm(seed, n, temperature, floor):
    rng = np.random.default_rng(seed)
    incr = rng.normal(0, 3, size=(n, K))
    allowed = rng.random((n, K)) < 0.6
    config = PolicyConfig(holdout=0.0, explore=1.0, explore_scheme="softmax", temperature=temperature,
                          explore_floor=floor)  # fmt: skip
    d = decide(incr, np.zeros((n, K)), allowed, np.ones(n), rng.random((n, 2)), config)
    allowed[:, 0] = True
    n_allowed = allowed.sum(axis=1)
    assert allowed[np.arange(n), d.arm].all()
    assert (d.propensity >= floor / n_allowed - 1e-12).all()


def test_softmax_at_a_high_temperature_is_uniform_and_at_a_low_one_favours_the_best_arm():
    rng = np.random.default_rng(0)
    n = 50_000
    incr = np.tile(np.array([0.0, 1.0, 2.0, 0.5, 0.0, 0.0, 0.0]), (n, 1))
    allowed = np.ones((n, K), dtype=bool)
    hot = PolicyConfig(holdout=0, explore=1, explore_scheme="softmax", temperature=1e6, explore_floor=0.1)
    d_hot = decide(incr, np.zeros_like(incr), allowed, np.ones(n), rng.random((n, 2)), hot)
    d_uni = decide(incr, np.zeros_like(incr), allowed, np.ones(n), rng.random((n, 2)), PolicyConfig(0, 1))
    np.testing.assert_allclose(d_hot.propensity, 1 / K, rtol=1e-5)
    np.testing.assert_allclose(d_uni.propensity, 1 / K)
    cold = PolicyConfig(holdout=0, explore=1, explore_scheme="softmax", temperature=1e-3, explore_floor=0.1)
    d_cold = decide(incr, np.zeros_like(incr), allowed, np.ones(n), rng.random((n, 2)), cold)
    assert np.mean(d_cold.arm == 2) == pytest.approx(0.9 + 0.1 / K, abs=0.01)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 40), st.sampled_from(["uniform", "softmax"]))
def test_challenger_traffic_is_decided_on_the_challengers_scores(seed, n, scheme):
    rng = np.random.default_rng(seed)
    champ, chall = rng.normal(size=(n, K)), rng.normal(size=(n, K))
    cost = rng.random((n, K))
    allowed = rng.random((n, K)) < 0.7
    serves = rng.random(n) < 0.5
    hu, u = rng.random(n), rng.random((n, 2))
    config = PolicyConfig(holdout=0.2, explore=0.3, explore_scheme=scheme)
    from offerlift.serving.policy import ChallengerScores

    both = decide(champ, cost, allowed, hu, u, config, 0.1, ChallengerScores(chall, cost, serves))
    alone_champ = decide(champ, cost, allowed, hu, u, config, 0.1)
    alone_chall = decide(chall, cost, allowed, hu, u, config, 0.1)
    for field in ("arm", "propensity", "group", "incr", "greedy"):
        ours = getattr(both, field)
        ref = np.where(serves, getattr(alone_chall, field), getattr(alone_champ, field))
        assert list(ours) == list(ref), field
    a = allowed | (np.arange(K) == 0)
    for i in range(n):  # holdout customers too: the gate compares the two models everywhere
        assert both.champion_greedy[i] == reference_greedy(champ[i] - 0.1 * cost[i], a[i])
        assert both.challenger_greedy[i] == reference_greedy(chall[i] - 0.1 * cost[i], a[i])
    assert (both.challenger == (serves & (hu >= 0.2))).all()
    assert (alone_champ.challenger_greedy == -1).all() and not alone_champ.challenger.any()


def test_bad_exploration_settings_are_refused():
    with pytest.raises(ConfigError, match="explore_scheme"):
        PolicyConfig(explore_scheme="greedy")
    with pytest.raises(ConfigError, match="temperature"):
        PolicyConfig(temperature=0)
    with pytest.raises(ConfigError, match="explore_floor"):
        PolicyConfig(explore_floor=0)


def test_the_challenger_may_explore_at_its_own_share():
    rng = np.random.default_rng(3)
    n = 40_000
    incr = np.tile(np.array([0.0, 1.0, 0.5, 0.2, 0.1, 0.0, 0.3]), (n, 1))
    allowed = np.ones((n, K), dtype=bool)
    serves = np.arange(n) % 2 == 0
    from offerlift.serving.policy import ChallengerScores

    d = decide(incr, np.zeros_like(incr), allowed, np.ones(n), rng.random((n, 2)), PolicyConfig(0, explore=1.0),
               challenger=ChallengerScores(incr, np.zeros_like(incr), serves, explore=0.1))  # fmt: skip
    assert (d.group[~serves] == "explore").all()
    assert np.mean(d.group[serves] == "explore") == pytest.approx(0.1, abs=0.01)
    np.testing.assert_allclose(d.propensity[serves & (d.arm == 1)], 0.9 + 0.1 / K)
    np.testing.assert_allclose(d.propensity[~serves], 1 / K)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["uniform", "softmax"]))
def test_arm_probabilities_are_the_logged_propensities(seed, scheme):
    from offerlift.serving.policy import arm_probabilities

    rng = np.random.default_rng(seed)
    n = 50
    incr, cost = rng.normal(size=(n, K)), rng.random((n, K))
    allowed = rng.random((n, K)) < 0.6
    config = PolicyConfig(holdout=0.0, explore=0.3, explore_scheme=scheme, temperature=0.4)
    probs = arm_probabilities(incr, cost, allowed, config, price=0.2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    d = decide(incr, cost, allowed, np.ones(n), rng.random((n, 2)), config, 0.2)
    np.testing.assert_allclose(probs[np.arange(n), d.arm], d.propensity)
