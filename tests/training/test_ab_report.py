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
