"""The package's figures: built from held-out results, in one style, saved as PNG, never through pyplot."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import offerlift.api as ol
from offerlift import plots
from offerlift.features.errors import ConfigError, DataError
from offerlift.training import metrics as um
from offerlift.training.evaluate import realized_profit

FAST = {"num_iterations": 20, "num_leaves": 7, "min_data_in_leaf": 20}
PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def res():
    exp = ol.load("simulated", n_customers=3000, seed=7)
    return ol.train(exp, learner="s", n_folds=2, params=FAST, n_boot=30, register=False)


@pytest.fixture(autouse=True)
def _no_pyplot_figures():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def _labels(ax):
    return [line.get_label() for line in ax.get_lines()]


def test_arm_view_holds_the_arm_and_the_control_rows(res):
    arm = plots.treatment_arms(res)[0]
    view = plots.arm_view(res, arm)
    units = res.experiment.units()
    n = int(units["arm"].isin([arm, "none"]).sum())
    assert view.y.shape == view.score.shape == view.treatment.shape == (n,)
    assert set(np.unique(view.treatment)) == {0, 1} and view.outcome == "buy"
    profit = plots.arm_view(res, arm, outcome="profit")
    mask = units["arm"].isin([arm, "none"]).to_numpy()
    assert np.allclose(profit.y, realized_profit(res.experiment, "spend")[mask])
    assert np.allclose(profit.score, res.held_out.incr[mask, res.experiment.catalog.index(arm)])


def test_arm_view_names_bad_arms_and_outcomes(res):
    with pytest.raises(ConfigError, match="'none'"):
        plots.arm_view(res, "none")
    with pytest.raises(ConfigError, match="'clicks'"):
        plots.arm_view(res, plots.treatment_arms(res)[0], outcome="clicks")
    with pytest.raises(ConfigError, match="held-out"):
        plots.plot_qini(SimpleNamespace(held_out=None, experiment=res.experiment))


def test_qini_has_a_panel_per_arm_with_random_line_and_band(res, tmp_path):
    fig = ol.plot_qini(res, n_boot=20, path=tmp_path / "q.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for ax in fig.axes:
        assert "random" in _labels(ax) and ax.collections, "random line and band"
    assert (tmp_path / "q.png").read_bytes()[:4] == PNG
    one = ol.plot_qini(res, arm=plots.treatment_arms(res)[1], n_boot=0)
    assert len(one.axes) == 1 and not one.axes[0].collections


def test_uplift_curve_band_holds_the_curve_of_the_metrics_module():
    rng = np.random.default_rng(0)
    y, t, u = rng.integers(0, 2, 400), rng.integers(0, 2, 400), rng.normal(size=400)
    band = plots.uplift_curve_band(y, u, t, n_boot=40, seed=1)
    x, v = um.uplift_curve(y, u, t)
    assert np.allclose(band["uplift"], np.interp(band["share"] * 400, x, v))
    assert (band["low"] <= band["high"]).all()
    inside = (band["low"] <= band["uplift"]) & (band["uplift"] <= band["high"])
    assert inside.mean() > 0.9
    pd.testing.assert_frame_equal(band, plots.uplift_curve_band(y, u, t, n_boot=40, seed=1))


def test_decile_calibration_and_uplift_curve_figures(res):
    arm = plots.treatment_arms(res)[0]
    dec = ol.plot_uplift_by_decile(res, arm=arm)
    assert len(dec.axes[0].patches) == 10
    cal = ol.plot_calibration(res, max_arms=2)
    assert len(cal.axes) == 2 and all("ideal" in _labels(ax) for ax in cal.axes)
    cur = ol.plot_uplift_curve(res, arm=arm, n_boot=20)
    assert "random" in _labels(cur.axes[0]) and cur.axes[0].collections


def test_policy_values_show_every_row_with_its_interval(res):
    table = ol.policy_table(res, n_boot=30)
    fig = ol.plot_policy_values(table)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(ticks) == sorted(table["policy"])
    assert "learned policy" in _labels(fig.axes[0])
    with pytest.raises(ConfigError):
        ol.plot_policy_values(table, vs="oracle")
    with pytest.raises(DataError):
        ol.plot_policy_values(table, estimator="dr")


def test_uplift_by_arm_figure_has_one_row_per_arm(res):
    table = ol.uplift_by_arm(res)
    fig = ol.plot_uplift_by_arm(table)
    assert len(fig.axes[0].get_yticklabels()) == len(table)


def test_budget_curve_marks_the_budget_per_customer():
    curve = pd.DataFrame({"price": [0.0, 1.0, 2.0], "spend": [100.0, 60.0, 0.0], "incremental_profit": [50, 45, 0]})
    alloc = SimpleNamespace(budget=80.0, spend=60.0, value=45.0)
    fig = ol.plot_budget_curve(curve, alloc, per_unit=10)
    ax = fig.axes[0]
    budget_line = next(line for line in ax.get_lines() if line.get_label() == "budget")
    assert budget_line.get_xdata()[0] == pytest.approx(8.0)
    assert "per customer" in ax.get_xlabel()


def test_loop_figure_shows_values_against_the_oracle_and_the_ab_lift():
    rounds = [
        {"round": r, "policy_value": 0.1 * r, "greedy_value": 0.1, "oracle_value": 0.5, "ab_lift": 0.2,
         "ab_lift_ci": [0.0, 0.4], "true_lift": 0.25, "promoted": r == 1, "best_single_arm_value": 0.07,
         "ceiling_value": 0.3}
        for r in range(3)
    ]  # fmt: skip
    fig = ol.plot_loop({"rounds": rounds})
    left, right = fig.axes
    assert {"oracle", "policy served", "champion, greedy", "best single arm", "feature ceiling"} <= set(_labels(left))
    best = next(line for line in left.get_lines() if line.get_label() == "best single arm")
    assert list(best.get_ydata()) == [0.07] * 3
    served = next(line for line in left.get_lines() if line.get_label() == "policy served")
    assert list(served.get_ydata()) == [0.0, 0.1, 0.2]
    assert "true lift" in _labels(right)
    with pytest.raises(DataError):
        ol.plot_loop({"rounds": []})


def test_ab_lift_figure_leaves_out_tiny_arms():
    lift = {"estimate": 0.5, "ci_low": 0.1, "ci_high": 0.9}
    report = {
        "campaign": "c",
        "lift": lift,
        "per_arm": [
            {"arm": "big", "customers": 500, "lift_vs_holdout": lift},
            {"arm": "tiny", "customers": 5, "lift_vs_holdout": lift},
        ],
    }
    ticks = [t.get_text() for t in ol.plot_ab_lift(report).axes[0].get_yticklabels()]
    assert ticks == ["all treated", "big"]


def test_inline_display_is_a_png_formatter():
    assert plots.enable_inline() is False  # not inside IPython
    fig = ol.plot_budget_curve(pd.DataFrame({"price": [0.0], "spend": [1.0], "incremental_profit": [1.0]}))
    assert plots.figure_png(fig)[:4] == PNG
