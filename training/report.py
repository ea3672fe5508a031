"""Evaluation figures of a training run (logged to MLflow as PNG): Qini curves, uplift by decile, calibration.

All figures use held-out predictions only. Per treatment arm against the control (at most `max_arms` arms, the
most frequent first): the Qini curve of a binary outcome with the random line and a bootstrap band, and uplift by
decile and calibration of the predicted incremental profit against the realized profit.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from offerlift.features.experiment import Experiment
from offerlift.training import metrics as um
from offerlift.training import plots
from offerlift.training.evaluate import HeldOut, _is_binary, realized_profit


def evaluation_figures(
    exp: Experiment, held: HeldOut, value_outcome: str = "spend", max_arms: int = 4, n_boot: int = 100
) -> dict[str, Figure]:
    """Figures keyed by file stem (e.g. ``qini_mens_email``, ``calibration_mens_email``)."""
    units = exp.units()
    arms = units["arm"].to_numpy()
    control = exp.catalog.control_arm
    value = value_outcome if value_outcome in units else "reward"
    profit = realized_profit(exp, value)
    binary = next(
        (c for c in (exp.main_outcome, "buy", "visit") if c in units and _is_binary(units[c].to_numpy())), None
    )
    counts = units["arm"].value_counts()
    chosen = [a for a in counts.index if a != control][:max_arms]
    figs: dict[str, Figure] = {}
    for arm in chosen:
        j = exp.catalog.index(arm)
        mask = (arms == arm) | (arms == control)
        t = (arms[mask] == arm).astype(int)
        score = held.incr[mask, j]
        safe = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in arm)
        if binary is not None:
            y = units[binary].to_numpy(dtype=float)[mask]
            fig = plots.plot_qini_curve(y, score, t, n_boot=n_boot, label=f"{arm} ({binary})")
            figs[f"qini_{safe}"] = fig
        deciles = um.uplift_by_decile(profit[mask], score, t)
        figs[f"uplift_by_decile_{safe}"] = plots.plot_uplift_by_decile(deciles)
        calib = um.uplift_calibration(profit[mask], score, t)
        figs[f"calibration_{safe}"] = plots.plot_uplift_calibration(calib)
    return figs
