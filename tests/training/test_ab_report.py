"""The A/B report: lift against the holdout with honest CIs, CUPED that keeps the estimate unbiased, SRM alarms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerlift.features.catalog import Catalog
from offerlift.features.errors import DataError
from offerlift.training.ab_report import ab_report, cuped, srm_check, welch, write_report

CAT = Catalog.from_dict(
    {
        "name": "t",
        "margin": 0.5,
        "offers": [{"id": "c5", "coupon_value": 5}],
        "channels": [{"id": "sms", "contact_cost": 0.1}],
    }
)


def campaign(seed: int, n: int = 4000, lift: float = 1.0, holdout: float = 0.2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pre = rng.gamma(2.0, 10.0, n)
    hold = rng.random(n) < holdout
    spend = pre * 0.8 + rng.normal(0, 4, n) + np.where(hold, 0.0, lift / 0.5)
    return pd.DataFrame(
        {
            "arm": np.where(hold, "none", "c5@sms"),
            "grp": np.where(hold, "holdout", "exploit"),
            "buy": (spend > 10).astype(float),
            "spend": np.clip(spend, 0, None),
            "redeem": 0.0,
            "pre_spend": pre,
        }
    )


def test_welch_matches_textbook_formula():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 1.0])
    d = welch(a, b)
    se = np.sqrt(a.var(ddof=1) / 4 + b.var(ddof=1) / 3)
    assert d.estimate == pytest.approx(2.5 - 2 / 3) and d.se == pytest.approx(se)
    assert d.ci_high - d.estimate == pytest.approx(1.959964 * se, rel=1e-5)


def test_ci_covers_the_true_lift_most_of_the_time_and_cuped_narrows_it():
    covered, covered_cuped, widths = 0, 0, []
    for seed in range(40):
        t = campaign(seed)
        true = 1.0 - 0.1  # margin * extra spend minus contact cost (no redemptions)
        r = ab_report(t, CAT, holdout_share=0.2, covariate="pre_spend")
        covered += r["lift"]["ci_low"] <= true <= r["lift"]["ci_high"]
        covered_cuped += r["lift_cuped"]["ci_low"] <= true <= r["lift_cuped"]["ci_high"]
        widths.append(
            (r["lift_cuped"]["ci_high"] - r["lift_cuped"]["ci_low"]) / (r["lift"]["ci_high"] - r["lift"]["ci_low"])
        )
    assert covered >= 34 and covered_cuped >= 34
    assert np.mean(widths) < 0.9


def test_cuped_with_useless_covariate_changes_nothing():
    y = np.arange(10.0)
    adj, theta, red = cuped(y, np.ones(10))
    np.testing.assert_array_equal(adj, y) and theta == 0 and red == 0


def test_srm_flags_a_broken_split_and_accepts_a_fair_one():
    assert srm_check(1000, 10_000, 0.1)["ok"]
    assert not srm_check(1300, 10_000, 0.1)["ok"]


def test_report_has_groups_arms_and_writes_json_and_html(tmp_path):
    r = ab_report(campaign(1), CAT, holdout_share=0.2)
    assert r["groups"]["holdout"]["customers"] + r["groups"]["treated"]["customers"] == 4000
    assert [a["arm"] for a in r["per_arm"]] == ["c5@sms"]
    paths = write_report(r, tmp_path)
    assert "A/B report" in paths["html"].read_text() and paths["json"].stat().st_size > 100


def test_missing_column_and_unknown_arm_are_named():
    with pytest.raises(DataError, match="'grp'"):
        ab_report(campaign(1).drop(columns=["grp"]), CAT, 0.2)
    with pytest.raises(DataError, match="'c9'"):
        ab_report(campaign(1).assign(arm="c9"), CAT, 0.2)


# --- per-arm effects against the simulated world's truth -----------------------------------------------------


def _world_policy(n: int, explore: float, seed: int = 0):
    """A simulated world, its exact incremental profits, and a treated policy: a noisy greedy choice among the
    reachable arms with `explore` spread uniformly over them (its probability of every arm)."""
    from offerlift.simworld.world import SimWorld
    from offerlift.training.ab_report import treated_policy_probs

    world = SimWorld.default(n_customers=n, seed=seed)
    incr, allowed = world.truth(None, 0.0).incr, world.eligible()
    noisy = np.where(allowed, incr + np.random.default_rng(seed).normal(0, 2, incr.shape), -np.inf)
    noisy[:, 0] = 0.0
    greedy = np.argmax(noisy, axis=1)
    return world, incr, treated_policy_probs(allowed, greedy, explore)


def _played(world, probs: np.ndarray, holdout: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(1000 + seed)
    ids = world.customers["customer_id"].astype(str).to_numpy()
    hold = rng.random(len(ids)) < holdout
    arm = np.where(hold, 0, (probs.cumsum(axis=1) > rng.random(len(ids))[:, None]).argmax(axis=1))
    dec = pd.DataFrame({"unit_id": ids, "customer_id": ids, "time": 0.0, "arm": np.asarray(world.arm_ids)[arm]})
    out = world.play(dec, seed=seed, record=False).outcomes
    return dec.assign(
        grp=np.where(hold, "holdout", "explore"),
        buy=out["buy"].to_numpy(),
        spend=out["spend"].to_numpy(),
        redeem=out["redeem"].to_numpy(),
        arm_index=arm,
    )


@pytest.mark.slow
@pytest.mark.parametrize("explore", [1.0, 0.3])
def test_per_arm_intervals_cover_every_arms_true_effect_together(explore):
    """Per arm, the estimand is the exact mean incremental profit of the arm over the units weighted by the policy's
    probability of giving it; the Bonferroni intervals must cover all of them at once in >= 95% of draws (allowing
    for 40 draws: at least 35), and the overall lift must cover the treated's exact lift as often."""
    world, incr, probs = _world_policy(8000, explore)
    truth = (probs * incr).sum(axis=0) / probs.sum(axis=0)
    joint, lift_covered, none_effects = 0, 0, []
    for seed in range(40):
        t = _played(world, probs, holdout=0.2, seed=seed)
        r = ab_report(t, world.catalog, 0.2, arm_probs=probs)
        treated = (t["grp"] != "holdout").to_numpy()
        true_lift = incr[np.flatnonzero(treated), t["arm_index"].to_numpy()[treated]].mean()
        lift_covered += r["lift"]["ci_low"] <= true_lift <= r["lift"]["ci_high"]
        arms = [a for a in r["per_arm"] if a["estimated"]]
        assert len(arms) == r["multiple_comparisons"]["arms"] >= 15
        joint += all(
            a["lift_vs_holdout"]["ci_low"] <= truth[world.arm_ids.index(a["arm"])] <= a["lift_vs_holdout"]["ci_high"]
            for a in arms
        )
        none_effects += [a["lift_vs_holdout"]["estimate"] for a in arms if a["arm"] == "none"]
    assert joint >= 35 and lift_covered >= 35
    # giving no offer has no effect: the weighted estimate of the treated `none` arm is centred on 0
    assert abs(np.mean(none_effects)) < 3 * np.std(none_effects) / np.sqrt(len(none_effects))


def test_per_arm_effect_compares_with_the_holdout_units_that_could_have_got_the_arm():
    """Two kinds of customers, A (profit 10 whatever happens) and B (profit 0); the policy gives arm c5@sms only
    to A and nothing to B. Against the whole holdout the arm seems to earn 10 * share of B; against the holdout
    weighted by its probability it earns exactly 0, and so does `none`."""
    n = 2000
    kind_a = np.arange(n) % 2 == 0
    hold = np.arange(n) % 10 < 3
    arm = np.where(hold | ~kind_a, "none", "c5@sms")
    t = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "arm": arm,
            "grp": np.where(hold, "holdout", "exploit"),
            "buy": kind_a.astype(float),
            "spend": np.where(kind_a, 20.0, 0.0),
            "redeem": 0.0,
        }
    )
    probs = np.column_stack([(~kind_a).astype(float), kind_a.astype(float)])
    r = ab_report(t, CAT, 0.3, arm_probs=probs)
    by_arm = {a["arm"]: a["lift_vs_holdout"] for a in r["per_arm"]}
    # c5@sms: profit 0.5 * 20 - 0.1 = 9.9 against 10 for the holdout of kind A; none: 0 against 0
    assert by_arm["c5@sms"]["estimate"] == pytest.approx(-0.1)
    assert by_arm["none"]["estimate"] == pytest.approx(0.0)
    naive = 9.9 - t.loc[hold, "spend"].mean() * 0.5
    assert naive > 3  # what comparing with the whole holdout would have said (and -6.7 for `none`)
    assert r["multiple_comparisons"] == {**r["multiple_comparisons"], "method": "bonferroni", "arms": 2}


def test_totals_are_per_decision_differences_times_the_treated_decisions():
    t = campaign(3, n=5000, lift=2.0)
    r = ab_report(t, CAT, 0.2)
    tot, n_t = r["totals"], int((t["grp"] != "holdout").sum())
    hold = t["grp"] == "holdout"
    buyers = (t.loc[~hold, "buy"].mean() - t.loc[hold, "buy"].mean()) * n_t
    assert tot["treated_decisions"] == n_t and tot["buyers"]["estimate"] == pytest.approx(buyers)
    assert tot["contact_cost"] == pytest.approx(0.1 * n_t) and tot["coupon_cost"] == 0.0
    assert tot["profit"]["estimate"] == pytest.approx(r["lift"]["estimate"] * n_t)
    assert tot["roi"]["estimate"] == pytest.approx(tot["profit"]["estimate"] / (0.1 * n_t))
    assert tot["roi"]["ci_low"] < tot["roi"]["estimate"] < tot["roi"]["ci_high"]


def test_cluster_robust_se_counts_a_customer_decided_twice_once():
    """Every customer's two decisions share one outcome: the clustered se equals that of one decision each."""
    t = campaign(4, n=3000)
    twice = pd.concat([t.assign(customer_id=[f"c{i}" for i in range(len(t))])] * 2, ignore_index=True)
    once = ab_report(t.assign(customer_id=[f"c{i}" for i in range(len(t))]), CAT, 0.2)
    both = ab_report(twice, CAT, 0.2)
    assert both["lift"]["estimate"] == pytest.approx(once["lift"]["estimate"])
    assert both["lift"]["se"] == pytest.approx(once["lift"]["se"], rel=1e-3)
