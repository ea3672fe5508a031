"""Figures for uplift evaluation: Qini curve, uplift by decile, calibration of predicted uplift.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (Agg canvas), so nothing
is registered globally and nothing is shown; pass ``ax`` to draw into an existing figure instead. Styling
is applied through a local ``rc_context`` and never changes the global rcParams.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from statistics import NormalDist

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from offerlift.features.errors import ConfigError, DataError
from offerlift.training.metrics import perfect_qini_curve, qini_auc_score, qini_curve, qini_curve_band

MODEL_COLOR = "#1f5f99"
PREDICTED_COLOR = "#d9822b"
REFERENCE_COLOR = "#7f7f7f"
PERFECT_COLOR = "#2e8b57"
STYLE = {
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "font.size": 10,
}
FIGSIZE = (6.4, 4.4)


@contextmanager
def _canvas(ax: Axes | None) -> Iterator[Axes]:
    """Yield ``ax``, or the axes of a new Agg-backed figure, with the module style in force."""
    with mpl.rc_context(STYLE):
        if ax is None:
            fig = Figure(figsize=FIGSIZE, layout="constrained")
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
        yield ax


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    return NormalDist().inv_cdf((1 + level) / 2)


def _need_columns(table: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{what} table lacks columns {missing}; build it with offerlift.training.metrics")


def plot_qini_curve(
    y: ArrayLike,
    uplift: ArrayLike,
    treatment: ArrayLike,
    *,
    n_boot: int = 0,
    level: float = 0.95,
    seed: int = 0,
    label: str = "model",
    show_perfect: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """Qini curve against the share of units targeted, with the random line.

    ``n_boot > 0`` adds a percentile bootstrap band (``level``); ``show_perfect`` adds the perfect ranking
    (binary outcomes only). For a binary outcome the legend gives the Qini AUC (sklift definition).
    """
    x, v = qini_curve(y, uplift, treatment)
    n = x[-1]
    with _canvas(ax) as axes:
        name = label
        with suppress(DataError):  # a continuous outcome has no normalised score
            name = f"{label} (Qini AUC {qini_auc_score(y, uplift, treatment):.3f}, sklift def.)"
        if n_boot > 0:
            band = qini_curve_band(y, uplift, treatment, n_boot=n_boot, level=level, seed=seed)
            axes.fill_between(
                band["share"], band["low"], band["high"], color=MODEL_COLOR, alpha=0.2, label=f"{level:.0%} band"
            )
        axes.plot(x / n, v, color=MODEL_COLOR, lw=2, label=name)
        axes.plot([0, 1], [0, v[-1]], color=REFERENCE_COLOR, ls="--", lw=1.2, label="random")
        if show_perfect:
            px, pv = perfect_qini_curve(y, treatment)
            axes.plot(px / n, pv, color=PERFECT_COLOR, ls=":", lw=1.5, label="perfect")
        axes.set_xlim(0, 1)
        axes.set_xlabel("share of units targeted (highest predicted uplift first)")
        axes.set_ylabel("incremental outcomes (Qini)")
        axes.set_title("Qini curve")
        axes.legend(loc="best")
    return axes.figure


def plot_uplift_by_decile(table: pd.DataFrame, *, level: float = 0.95, ax: Axes | None = None) -> Figure:
    """Bars of observed uplift per decile (from ``uplift_by_decile``) with CIs, and the mean predicted uplift."""
    _need_columns(table, ["decile", "uplift", "uplift_se", "mean_predicted_uplift"], "uplift by decile")
    z = _z(level)
    with _canvas(ax) as axes:
        axes.bar(
            table["decile"],
            table["uplift"],
            yerr=z * table["uplift_se"],
            color=MODEL_COLOR,
            alpha=0.85,
            capsize=3,
            error_kw={"ecolor": "#333333", "lw": 1.2},
            label=f"observed uplift ({level:.0%} CI)",
        )
        axes.plot(
            table["decile"],
            table["mean_predicted_uplift"],
            color=PREDICTED_COLOR,
            marker="o",
            ls="none",
            label="mean predicted uplift",
        )
        axes.axhline(0.0, color=REFERENCE_COLOR, lw=1)
        axes.set_xticks(list(table["decile"]))
        axes.set_xlabel("decile of predicted uplift (1 = highest)")
        axes.set_ylabel("uplift (treated - control)")
        axes.set_title("Uplift by decile")
        axes.legend(loc="best")
    return axes.figure


def plot_uplift_calibration(table: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Observed against predicted uplift per decile (from ``uplift_calibration``), CIs and the diagonal."""
    cols = ["mean_predicted_uplift", "observed_uplift", "ci_low", "ci_high"]
    _need_columns(table, cols, "calibration")
    pred, obs = table["mean_predicted_uplift"].to_numpy(float), table["observed_uplift"].to_numpy(float)
    err = np.vstack([obs - table["ci_low"].to_numpy(float), table["ci_high"].to_numpy(float) - obs])
    with _canvas(ax) as axes:
        finite = np.r_[pred, table["ci_low"], table["ci_high"]]
        finite = finite[np.isfinite(finite)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        pad = 0.05 * (hi - lo or 1.0)
        axes.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color=REFERENCE_COLOR, ls="--", lw=1.2, label="ideal")
        axes.errorbar(pred, obs, yerr=err, fmt="o", color=MODEL_COLOR, capsize=3, label="decile (observed, CI)")
        axes.set_xlabel("mean predicted uplift")
        axes.set_ylabel("observed uplift")
        axes.set_title("Calibration of predicted uplift")
        axes.legend(loc="best")
    return axes.figure


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, e.g. .png); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
