"""The figures a data scientist expects, in one style, from training results, loop results and A/B reports.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (nothing global is touched);
``path="x.png"`` also writes it as PNG. In a notebook, call :func:`enable_inline` once (``offerlift.api.
setup_notebook`` does) so a figure left as the last value of a cell is shown inline.

Result-level functions (``plot_qini(result)``, ...) read held-out predictions: ``result`` is what
``offerlift.api.train`` returns (it carries ``experiment``, ``held_out`` and ``spec``). The style, colours and the
Qini / decile / calibration panels come from `offerlift.training.plots`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from offerlift.features.errors import ConfigError, DataError
from offerlift.training import metrics as um
from offerlift.training import plots as tp
from offerlift.training.evaluate import _is_binary, realized_profit
from offerlift.training.train import outcome_plan

log = logging.getLogger(__name__)

COLORS = {"model": tp.MODEL_COLOR, "predicted": tp.PREDICTED_COLOR, "reference": tp.REFERENCE_COLOR}
ORACLE_COLOR = tp.PERFECT_COLOR


@dataclass(frozen=True)
class ArmView:
    """One treatment arm against the control on held-out rows: outcome, predicted uplift, treatment (0/1)."""

    arm: str
    outcome: str
    y: np.ndarray
    score: np.ndarray
    treatment: np.ndarray


def _held(result: Any) -> Any:
    held = getattr(result, "held_out", None)
    if held is None or getattr(result, "experiment", None) is None:
        raise ConfigError("this needs held-out predictions: train with n_folds >= 2 through offerlift.api.train")
    return held


def treatment_arms(result: Any, max_arms: int | None = None) -> list[str]:
    """Treatment arms of a result, the most frequent first (at most `max_arms`)."""
    exp = result.experiment
    counts = exp.units()["arm"].value_counts()
    arms = [a for a in counts.index if a != exp.catalog.control_arm]
    return arms[:max_arms] if max_arms else arms


def arm_view(result: Any, arm: str, outcome: str | None = None) -> ArmView:
    """Held-out rows of `arm` and the control: the outcome and the predicted uplift of that outcome.

    ``outcome``: a column of the experiment (default: the main outcome if binary, else ``buy`` or ``visit``), or
    ``"profit"`` (realized profit against the predicted incremental profit). The score is the predicted uplift of
    the outcome when the model predicts it, else the predicted incremental profit (what the policy ranks by).
    """
    held, exp = _held(result), result.experiment
    units = exp.units()
    if arm not in exp.catalog.arm_ids or arm == exp.catalog.control_arm:
        raise ConfigError(f"arm must be a treatment arm of {exp.catalog.arm_ids[1:]}, got {arm!r}")
    if outcome is None:
        binary = [c for c in (exp.main_outcome, "buy", "visit") if c in units and _is_binary(units[c].to_numpy(float))]
        outcome = binary[0] if binary else "profit"
    j, arms = exp.catalog.index(arm), units["arm"].to_numpy()
    mask = (arms == arm) | (arms == exp.catalog.control_arm)
    if outcome == "profit":
        y, score = realized_profit(exp, outcome_plan(exp)[1]), held.incr[:, j]
    elif outcome in units:
        y = units[outcome].to_numpy(dtype=float)
        pred = held.preds.get(outcome)
        score = pred[:, j] - pred[:, 0] if pred is not None else held.incr[:, j]
    else:
        raise ConfigError(f"unknown outcome {outcome!r}; choose 'profit' or one of {list(exp.outcomes.columns)}")
    return ArmView(arm, outcome, y[mask], score[mask], (arms[mask] == arm).astype(int))


def _figure(n_panels: int = 1, width: float | None = None) -> tuple[Figure, list[Axes]]:
    """A new Agg-backed figure with `n_panels` axes side by side, in the module style."""
    with mpl.rc_context(tp.STYLE):
        w, h = tp.FIGSIZE
        fig = Figure(figsize=(width or w * min(n_panels, 2) * (0.85 if n_panels > 1 else 1), h), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write `fig` as an image (PNG by the suffix) and log where it went; returns the path."""
    out = tp.save_figure(fig, path, dpi=dpi)
    log.info("saved figure to %s", out)
    return out


def _per_arm(
    result: Any, arm: str | None, max_arms: int, draw: Callable[[ArmView, Axes], None], outcome: str | None
) -> Figure:
    arms = [arm] if arm is not None else treatment_arms(result, max_arms)
    views = [arm_view(result, a, outcome) for a in arms]
    fig, axes = _figure(len(views))
    for view, ax in zip(views, axes, strict=True):
        draw(view, ax)
        if len(views) > 1:
            ax.set_title(f"{ax.get_title()}: {view.arm}")
    return fig


def plot_qini(
    result: Any,
    arm: str | None = None,
    outcome: str | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    max_arms: int = 2,
    path: str | Path | None = None,
) -> Figure:
    """Qini curve(s) of held-out predictions with the random line and a bootstrap band (one panel per arm).

    >>> fig = plot_qini(res, outcome="visit")               # doctest: +SKIP
    """

    def draw(v: ArmView, ax: Axes) -> None:
        label = f"{v.arm} ({v.outcome})"
        tp.plot_qini_curve(v.y, v.score, v.treatment, n_boot=n_boot, level=level, label=label, ax=ax)

    return _finish(_per_arm(result, arm, max_arms, draw, outcome), path)


def uplift_curve_band(
    y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray, n_boot: int = 200, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Uplift curve on 101 shares targeted with a percentile bootstrap band: columns share, uplift, low, high."""
    if n_boot < 2 or not 0 < level < 1:
        raise ConfigError(f"need n_boot >= 2 and 0 < level < 1, got {n_boot!r}, {level!r}")
    n, share = len(y), np.linspace(0.0, 1.0, 101)
    x, v = um.uplift_curve(y, uplift, treatment)
    rng, boot = np.random.default_rng(seed), []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        if np.ptp(treatment[i]) == 0:
            continue
        bx, bv = um.uplift_curve(y[i], uplift[i], treatment[i])
        boot.append(np.interp(share * n, bx, bv))
    low, high = np.quantile(np.array(boot), [(1 - level) / 2, (1 + level) / 2], axis=0)
    return pd.DataFrame({"share": share, "uplift": np.interp(share * n, x, v), "low": low, "high": high})


def plot_uplift_curve(
    result: Any,
    arm: str | None = None,
    outcome: str | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    max_arms: int = 2,
    path: str | Path | None = None,
) -> Figure:
    """Uplift curve(s) (scikit-uplift definition) with the random line and a bootstrap band, one panel per arm."""

    def draw(v: ArmView, ax: Axes) -> None:
        band = uplift_curve_band(v.y, v.score, v.treatment, n_boot=n_boot, level=level)
        with mpl.rc_context(tp.STYLE):
            auc = um.uplift_auc_score(v.y, v.score, v.treatment) if _is_binary(v.y) else None
            name = f"{v.arm} ({v.outcome})" + (f", uplift AUC {auc:.3f} (sklift def.)" if auc is not None else "")
            ax.fill_between(band["share"], band["low"], band["high"], color=tp.MODEL_COLOR, alpha=0.2)
            ax.plot(band["share"], band["uplift"], color=tp.MODEL_COLOR, lw=2, label=name)
            end = band["uplift"].iloc[-1]
            ax.plot([0, 1], [0, end], color=tp.REFERENCE_COLOR, ls="--", lw=1.2, label="random")
            ax.set(xlim=(0, 1), title="Uplift curve", ylabel="incremental outcomes (uplift x units)")
            ax.set_xlabel("share of units targeted (highest predicted uplift first)")
            ax.legend(loc="best", title=f"band: {level:.0%} bootstrap")

    return _finish(_per_arm(result, arm, max_arms, draw, outcome), path)


def plot_uplift_by_decile(
    result: Any, arm: str | None = None, outcome: str = "profit", max_arms: int = 2, path: str | Path | None = None
) -> Figure:
    """Observed uplift per decile of predicted uplift (held-out, with CIs) and the mean prediction, per arm."""

    def draw(v: ArmView, ax: Axes) -> None:
        tp.plot_uplift_by_decile(um.uplift_by_decile(v.y, v.score, v.treatment), ax=ax)

    return _finish(_per_arm(result, arm, max_arms, draw, outcome), path)


def plot_calibration(
    result: Any, arm: str | None = None, outcome: str = "profit", max_arms: int = 2, path: str | Path | None = None
) -> Figure:
    """Observed against predicted uplift per decile (held-out), with CIs and the diagonal, per arm."""

    def draw(v: ArmView, ax: Axes) -> None:
        tp.plot_uplift_calibration(um.uplift_calibration(v.y, v.score, v.treatment), ax=ax)

    return _finish(_per_arm(result, arm, max_arms, draw, outcome), path)


def _errorbars(ax: Axes, labels: Sequence[str], est: np.ndarray, lo: np.ndarray, hi: np.ndarray, **kw: Any) -> None:
    pos = np.arange(len(labels))[::-1]
    ax.errorbar(est, pos, xerr=[est - lo, hi - est], fmt="o", capsize=3, **kw)
    ax.set_yticks(pos, list(labels))
    ax.axvline(0.0, color=tp.REFERENCE_COLOR, lw=1)


def plot_policy_values(
    table: pd.DataFrame, vs: str = "control", estimator: str = "ips", path: str | Path | None = None
) -> Figure:
    """Incremental profit per unit of each policy (or learner) against a baseline, with CIs.

    ``table``: from ``policy_table`` (rows ``policy``) or ``compare_learners`` (rows ``learner``); ``vs``:
    "control" (no offer to anyone) or "best_arm" (the best single arm for everyone).
    """
    if vs not in ("control", "best_arm"):
        raise ConfigError(f"vs must be 'control' or 'best_arm', got {vs!r}")
    label = "learner" if "learner" in table else "policy"
    t = table[table["estimator"] == estimator] if "estimator" in table else table
    cols = [label, f"vs_{vs}", f"vs_{vs}_ci_low", f"vs_{vs}_ci_high"]
    if t.empty or any(c not in t for c in cols):
        raise DataError(f"the table needs rows for estimator {estimator!r} and columns {cols}")
    fig, (ax,) = _figure(1, width=tp.FIGSIZE[0] * 1.2)
    with mpl.rc_context(tp.STYLE):
        est, lo, hi = (t[c].to_numpy(float) for c in cols[1:])
        names = t[label].astype(str).tolist()
        _errorbars(ax, names, est, lo, hi, color=tp.REFERENCE_COLOR, label=f"{estimator} (95% CI)")
        learned = np.array([not n.startswith("always:") for n in names])
        pos = np.arange(len(names))[::-1]
        ax.plot(est[learned], pos[learned], "D", color=tp.MODEL_COLOR, ms=7, label="learned policy")
        base = "no offer to anyone" if vs == "control" else f"always {t['best_arm'].iloc[0]}"
        ax.set_xlabel(f"incremental profit per unit vs {base}")
        ax.set_title("Policy value (held-out)")
        ax.legend(loc="best")
    return _finish(fig, path)


def plot_uplift_by_arm(table: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Observed uplift of each arm over the control (with CIs) and the mean predicted uplift (``uplift_by_arm``)."""
    t = table if "segment" not in table else table[table["segment"] == table["segment"].iloc[0]]
    fig, (ax,) = _figure(1, width=tp.FIGSIZE[0] * 1.2)
    with mpl.rc_context(tp.STYLE):
        est, lo, hi = (t[c].to_numpy(float) for c in ("uplift", "ci_low", "ci_high"))
        _errorbars(ax, t["arm"].tolist(), est, lo, hi, color=tp.MODEL_COLOR, label="observed (95% CI)")
        if "mean_predicted_uplift" in t:
            pos = np.arange(len(t))[::-1]
            ax.plot(t["mean_predicted_uplift"], pos, "D", color=tp.PREDICTED_COLOR, label="mean predicted")
        ax.set_xlabel(f"uplift of {t['outcome'].iloc[0]} per unit over {t['control_arm'].iloc[0]}")
        ax.set_title("Uplift per arm")
        ax.legend(loc="best")
    return _finish(fig, path)


def plot_budget_curve(
    curve: pd.DataFrame, allocation: Any = None, per_unit: int | None = None, path: str | Path | None = None
) -> Figure:
    """Expected incremental profit against expected spend as the budget shrinks (``budget_curve``).

    ``allocation`` (from ``allocate_budget``) marks the budget and the chosen point; ``per_unit`` divides both
    axes by a number of customers.
    """
    k = float(per_unit or 1)
    c = curve.sort_values("spend")
    fig, (ax,) = _figure(1)
    with mpl.rc_context(tp.STYLE):
        ax.step(c["spend"] / k, c["incremental_profit"] / k, where="post", color=tp.MODEL_COLOR, lw=2)
        if allocation is not None:
            ax.axvline(allocation.budget / k, color=tp.REFERENCE_COLOR, ls="--", lw=1.2, label="budget")
            ax.plot(allocation.spend / k, allocation.value / k, "o", color=tp.PREDICTED_COLOR, label="allocation")
            ax.legend(loc="lower right")
        unit = " per customer" if per_unit else ""
        ax.set_xlabel(f"expected coupon and contact spend{unit}")
        ax.set_ylabel(f"expected incremental profit{unit}")
        ax.set_title("Incremental profit against spend")
    return _finish(fig, path)


def plot_loop(result: dict[str, Any], path: str | Path | None = None) -> Figure:
    """The closed loop per round: exact policy value against no offer, the best single arm, the feature ceiling and
    the oracle; and the A/B lift with CI vs the truth."""
    r = pd.DataFrame(result["rounds"])
    if r.empty:
        raise DataError("the loop result has no rounds")
    fig, (ax1, ax2) = _figure(2)
    with mpl.rc_context(tp.STYLE):
        ax1.plot(r["round"], r["oracle_value"], "s--", color=ORACLE_COLOR, label="oracle")
        ax1.plot(r["round"], r["policy_value"], "o-", color=tp.MODEL_COLOR, lw=2, label="policy served")
        if "greedy_value" in r:
            ax1.plot(r["round"], r["greedy_value"], "^:", color=tp.PREDICTED_COLOR, label="champion, greedy")
        if "ceiling_value" in r:
            ax1.plot(r["round"], r["ceiling_value"], "d--", color=ORACLE_COLOR, alpha=0.6, label="feature ceiling")
        if "best_single_arm_value" in r:
            ax1.plot(r["round"], r["best_single_arm_value"], "v--", color=tp.REFERENCE_COLOR, label="best single arm")
        ax1.axhline(0.0, color=tp.REFERENCE_COLOR, lw=1, label="_no offer")
        for x, y, p in zip(r["round"], r["policy_value"], r.get("promoted", [False] * len(r)), strict=True):
            if p:
                ax1.annotate("promoted", (x, y), textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8)
        ax1.set(title="Value per round (exact)", xlabel="round", ylabel="incremental profit per customer")
        ax1.legend(loc="best")
        lo, hi = np.array([c[0] for c in r["ab_lift_ci"]]), np.array([c[1] for c in r["ab_lift_ci"]])
        est = r["ab_lift"].to_numpy(float)
        ax2.errorbar(
            r["round"], est, yerr=[est - lo, hi - est], fmt="o", capsize=3, color=tp.MODEL_COLOR, label="A/B (95% CI)"
        )
        ax2.plot(r["round"], r["true_lift"], "x", color=ORACLE_COLOR, ms=8, label="true lift")
        ax2.axhline(0.0, color=tp.REFERENCE_COLOR, lw=1)
        ax2.set(title="A/B lift vs holdout", xlabel="round", ylabel="profit lift per treated customer")
        ax2.legend(loc="best")
        for ax in (ax1, ax2):
            ax.set_xticks(list(r["round"]))
    return _finish(fig, path)


def plot_ab_lift(report: dict[str, Any], min_customers: int = 30, path: str | Path | None = None) -> Figure:
    """Profit lift per customer against the holdout, per arm and overall, with CIs (from ``ab_report``)."""
    arms = [a for a in report["per_arm"] if a["customers"] >= min_customers]
    labels = ["all treated"] + [a["arm"] for a in arms]
    lifts = [report["lift"]] + [a["lift_vs_holdout"] for a in arms]
    est, lo, hi = (np.array([x[k] for x in lifts], dtype=float) for k in ("estimate", "ci_low", "ci_high"))
    fig, (ax,) = _figure(1, width=tp.FIGSIZE[0] * 1.2)
    with mpl.rc_context(tp.STYLE):
        _errorbars(ax, labels, est, lo, hi, color=tp.MODEL_COLOR, label="lift (95% CI)")
        ax.axvspan(lo[0], hi[0], color=ORACLE_COLOR, alpha=0.12, label="all treated (CI)")
        if "lift_cuped" in report:
            c = report["lift_cuped"]
            err = [[c["estimate"] - c["ci_low"]], [c["ci_high"] - c["estimate"]]]
            y = len(labels) - 1.25
            ax.errorbar([c["estimate"]], [y], xerr=err, fmt="s", capsize=3, color=tp.PREDICTED_COLOR, label="CUPED")
        ax.set_xlabel("profit lift per customer vs holdout")
        ax.set_title(f"A/B report: {report.get('campaign', '')}")
        ax.legend(loc="best")
    return _finish(fig, path)


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def enable_inline() -> bool:
    """Show Figures inline in IPython/Jupyter (a PNG formatter for Figure); False outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)
    return True
