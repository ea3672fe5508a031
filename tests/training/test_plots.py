"""Figures: expected artists, data drawn equals the metric tables, PNG output, no global state leaks."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from offerlift.features.errors import DataError
from offerlift.training.metrics import qini_curve, uplift_by_decile, uplift_calibration
from offerlift.training.plots import plot_qini_curve, plot_uplift_by_decile, plot_uplift_calibration, save_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rct():
    rng = np.random.default_rng(0)
    n = 1500
    x = rng.normal(size=n)
    t = rng.integers(0, 2, n)
    y = (rng.random(n) < 0.3 + 0.15 * t * (x > 0)).astype(int)
    return y, 0.1 * x, t


def _labels(ax):
    return [line.get_label() for line in ax.get_lines()]


def test_qini_figure_has_curve_random_line_and_score_in_legend(rct):
    y, u, t = rct
    fig = plot_qini_curve(y, u, t)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = _labels(ax)
    assert labels[1] == "random" and "Qini AUC" in labels[0] and "sklift" in labels[0]
    x, v = qini_curve(y, u, t)
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), x / x[-1])
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), v)
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [0.0, v[-1]])
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert ax.get_legend() is not None and ax.get_xlabel() and ax.get_ylabel()


def test_qini_figure_with_band_and_perfect_curve(rct):
    y, u, t = rct
    ax = plot_qini_curve(y, u, t, n_boot=30, show_perfect=True, label="T-learner").axes[0]
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1
    assert _labels(ax)[-1] == "perfect" and _labels(ax)[0].startswith("T-learner")


def test_qini_figure_accepts_a_continuous_outcome_without_a_score(rct):
    y, u, t = rct
    ax = plot_qini_curve(y * 12.5, u, t).axes[0]
    assert _labels(ax)[0] == "model"


def test_decile_figure_bars_and_markers_equal_the_table(rct):
    table = uplift_by_decile(*rct)
    ax = plot_uplift_by_decile(table).axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 1 and len(bars[0].patches) == 10
    np.testing.assert_allclose([p.get_height() for p in bars[0].patches], table["uplift"])
    markers = next(line for line in ax.get_lines() if line.get_label() == "mean predicted uplift")
    np.testing.assert_allclose(markers.get_ydata(), table["mean_predicted_uplift"])
    assert [int(tick) for tick in ax.get_xticks()] == list(range(1, 11))


def test_calibration_figure_has_error_bars_and_the_diagonal(rct):
    table = uplift_calibration(*rct, bins=5)
    ax = plot_uplift_calibration(table).axes[0]
    errbars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(errbars) == 1
    data_line = errbars[0].lines[0]
    np.testing.assert_allclose(data_line.get_xdata(), table["mean_predicted_uplift"])
    np.testing.assert_allclose(data_line.get_ydata(), table["observed_uplift"])
    diagonal = next(line for line in ax.get_lines() if line.get_label() == "ideal")
    np.testing.assert_allclose(diagonal.get_xdata(), diagonal.get_ydata())


def test_figures_save_to_png_and_leak_no_global_state(rct, tmp_path):
    import matplotlib.pyplot as plt

    before_rc = dict(mpl.rcParams)
    before_figs = plt.get_fignums()
    figs = {
        "qini": plot_qini_curve(*rct, n_boot=20),
        "deciles": plot_uplift_by_decile(uplift_by_decile(*rct)),
        "calibration": plot_uplift_calibration(uplift_calibration(*rct)),
    }
    for name, fig in figs.items():
        path = save_figure(fig, tmp_path / "out" / f"{name}.png")
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000
    assert plt.get_fignums() == before_figs
    assert dict(mpl.rcParams) == before_rc


def test_plots_draw_into_a_given_axes():
    fig = Figure()
    axes = fig.subplots(1, 2)
    table = uplift_by_decile(
        [0, 1, 1, 0, 1, 0, 1, 1], [0.1, 0.4, 0.3, 0.2, 0.8, 0.5, 0.6, 0.7], [0, 1, 0, 1, 1, 0, 1, 0], 2
    )
    assert plot_uplift_by_decile(table, ax=axes[1]) is fig
    assert axes[1].containers and not axes[0].containers


def test_tables_without_the_needed_columns_are_rejected(rct):
    table = uplift_by_decile(*rct).drop(columns=["uplift_se"])
    with pytest.raises(DataError, match="uplift_se"):
        plot_uplift_by_decile(table)
    with pytest.raises(DataError, match="ci_low"):
        plot_uplift_calibration(table)
