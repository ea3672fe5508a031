"""Two-arm uplift ranking metrics, with the definitions of scikit-uplift (sklift 0.5.1).

Inputs: outcome ``y``, predicted uplift ``uplift`` and ``treatment`` (1 treated, 0 control), all of length n.
Units are ranked by predicted uplift, highest first; units with equal predicted uplift form one group, so
the curves only have a point after each group of ties (the order inside a group does not matter).

- Qini curve at the top m units: ``Y_t - Y_c * N_t / N_c`` (sums of outcomes and counts among the top m).
- Uplift curve at the top m units: ``(Y_t / N_t - Y_c / N_c) * m`` (a rate is 0 where its group is empty).
- ``qini_auc_score`` / ``uplift_auc_score``: area between the curve and the random line (from (0, 0) to the
  end point), divided by the same area for the perfect ranking: 0 for random, 1 for perfect. These need a
  binary outcome (the perfect ranking is defined for 0/1 outcomes only); the curves and tables accept any
  real outcome.

Where a number comes from a given definition, say so: "Qini AUC (sklift definition, negative_effect=True)".
"""

from __future__ import annotations

import logging
from statistics import NormalDist

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from offerlift.features.errors import ConfigError, DataError
from offerlift.training.policy_value import bootstrap_counts

log = logging.getLogger(__name__)


STRATEGIES = ("overall", "by_group")


def _arrays(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, binary_y: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert the three inputs to float arrays (treatment must hold both 0 and 1)."""
    yy, uu, tt = (np.asarray(a, dtype=float).ravel() for a in (y, uplift, treatment))
    if not (yy.size == uu.size == tt.size):
        raise DataError(f"length mismatch: y has {yy.size}, uplift has {uu.size}, treatment has {tt.size}")
    for name, arr in (("y", yy), ("uplift", uu), ("treatment", tt)):
        if not np.isfinite(arr).all():
            raise DataError(f"{name} must be finite; bad rows {np.flatnonzero(~np.isfinite(arr))[:5].tolist()}")
    if set(np.unique(tt).tolist()) != {0.0, 1.0}:
        raise DataError(f"treatment must hold both 0 and 1 and nothing else; got values {np.unique(tt)[:10]}")
    if binary_y and set(np.unique(yy).tolist()) != {0.0, 1.0}:
        raise DataError(f"y must be binary with both 0 and 1 for this score; got values {np.unique(yy)[:10]}")
    return yy, uu, tt


def descending_order(uplift: np.ndarray) -> np.ndarray:
    """Indices from highest to lowest predicted uplift; among ties the later unit comes first (as sklift)."""
    return np.argsort(uplift, kind="stable")[::-1]


def _group_sums(
    y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    """Cumulative (N, N_t, N_c, Y_t, Y_c) after each group of tied scores, highest scores first.

    ``weights`` (``(b, n)`` resample counts, in the original unit order) give ``b`` rows of each.
    """
    order = descending_order(uplift)
    u, y, t = uplift[order], y[order], treatment[order]
    ends = np.r_[np.flatnonzero(np.diff(u) != 0), u.size - 1]
    w = np.ones((1, u.size)) if weights is None else weights[:, order]
    n_all = np.cumsum(w, axis=1)[:, ends]
    n_t = np.cumsum(w * t, axis=1)[:, ends]
    y_t = np.cumsum(w * y * t, axis=1)[:, ends]
    y_c = np.cumsum(w * y * (1 - t), axis=1)[:, ends]
    return n_all, n_t, n_all - n_t, y_t, y_c


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den != 0)


def _start_at_origin(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.r_[0.0, x], np.r_[0.0, v]


def qini_curve(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Qini curve: (number of units targeted, incremental outcomes ``Y_t - Y_c N_t / N_c``), from (0, 0)."""
    n_all, n_t, n_c, y_t, y_c = _group_sums(*_arrays(y, uplift, treatment))
    return _start_at_origin(n_all[0], (y_t - y_c * _ratio(n_t, n_c))[0])


def uplift_curve(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Uplift curve: (number of units targeted, ``(Y_t / N_t - Y_c / N_c) * N``), from (0, 0)."""
    n_all, n_t, n_c, y_t, y_c = _group_sums(*_arrays(y, uplift, treatment))
    return _start_at_origin(n_all[0], ((_ratio(y_t, n_t) - _ratio(y_c, n_c)) * n_all)[0])


def perfect_qini_curve(
    y: ArrayLike, treatment: ArrayLike, negative_effect: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The Qini curve of the perfect ranking (binary y).

    With ``negative_effect`` the ranking puts treated responders first and control responders last (so the
    curve falls again at the end); without it, sklift's three-point curve (0, 0), (R, R), (n, R) where R is
    the total incremental outcome (the x of the middle point is R, as in sklift, which fails for R < 0).
    """
    if not isinstance(negative_effect, bool):
        raise ConfigError(f"negative_effect must be a bool, got {negative_effect!r}")
    yy, _, tt = _arrays(y, np.zeros(np.size(y)), treatment, binary_y=True)
    if negative_effect:
        return qini_curve(yy, yy * tt - yy * (1 - tt), tt)
    treated, control = tt == 1, tt == 0
    total = yy[treated].sum() - treated.sum() * yy[control].sum() / control.sum()
    if total < 0:
        raise DataError(f"negative_effect=False needs a total incremental outcome >= 0, got {total:.4g}")
    return np.array([0.0, total, float(yy.size)]), np.array([0.0, total, total])


def perfect_uplift_curve(y: ArrayLike, treatment: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The uplift curve of sklift's perfect ranking (binary y).

    Score ``2 * (y == treatment)`` plus ``y`` when control responders outnumber treated non-responders,
    else plus ``treatment``: treated responders and control non-responders first, in that order or the other.
    """
    yy, _, tt = _arrays(y, np.zeros(np.size(y)), treatment, binary_y=True)
    control_responders = np.sum((yy == 1) & (tt == 0))
    treated_non_responders = np.sum((yy == 0) & (tt == 1))
    extra = yy if control_responders > treated_non_responders else tt
    return uplift_curve(yy, 2.0 * (yy == tt) + extra, tt)


def _normalised_area(curve: tuple[np.ndarray, np.ndarray], perfect: tuple[np.ndarray, np.ndarray]) -> float:
    """(area(curve) - random) / (area(perfect) - random); random is the line from (0, 0) to perfect's end."""
    random_area = perfect[0][-1] * perfect[1][-1] / 2.0
    best = np.trapezoid(perfect[1], perfect[0]) - random_area
    if best == 0:
        log.warning("perfect curve has the same area as random: normalised AUC undefined, returning nan")
        return float("nan")
    return float((np.trapezoid(curve[1], curve[0]) - random_area) / best)


def qini_auc_score(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, negative_effect: bool = True) -> float:
    """Normalised area under the Qini curve (sklift's ``qini_auc_score``): 0 random, 1 perfect; binary y."""
    yy, uu, tt = _arrays(y, uplift, treatment, binary_y=True)
    return _normalised_area(qini_curve(yy, uu, tt), perfect_qini_curve(yy, tt, negative_effect))


def uplift_auc_score(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> float:
    """Normalised area under the uplift curve (sklift's ``uplift_auc_score``): 0 random, 1 perfect; binary y."""
    yy, uu, tt = _arrays(y, uplift, treatment, binary_y=True)
    return _normalised_area(uplift_curve(yy, uu, tt), perfect_uplift_curve(yy, tt))


def _mean_or_nan(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else float("nan")


def uplift_at_k(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, k: float | int = 0.3, strategy: str = "overall"
) -> float:
    """Treated minus control mean outcome among the top ``k`` units by predicted uplift (sklift's definition).

    ``k`` is a share in (0, 1) or a count in [1, n). "overall": the top ``int(n * k)`` of all units;
    "by_group": the top ``int(n_t * k)`` treated and top ``int(n_c * k)`` control units (or ``k`` of each).
    nan when a group has no unit among the top ones.
    """
    yy, uu, tt = _arrays(y, uplift, treatment)
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    n = yy.size
    is_int = isinstance(k, int | np.integer) and not isinstance(k, bool)
    if not (is_int or isinstance(k, float | np.floating)):
        raise ConfigError(f"k must be an int or a float, got {k!r}")
    if (is_int and not 0 < k < n) or (not is_int and not 0 < k < 1):
        raise ConfigError(f"k={k!r} must be a float in (0, 1) or an int in [1, {n})")
    order = descending_order(uu)
    ys, ts = yy[order], tt[order]
    if strategy == "overall":
        top = int(k) if is_int else int(n * k)
        return _mean_or_nan(ys[:top][ts[:top] == 1]) - _mean_or_nan(ys[:top][ts[:top] == 0])
    y_t, y_c = ys[ts == 1], ys[ts == 0]
    top_t, top_c = (int(k), int(k)) if is_int else (int(y_t.size * k), int(y_c.size * k))
    if top_t > y_t.size or top_c > y_c.size:
        raise ConfigError(f"k={k} exceeds a group: {y_t.size} treated, {y_c.size} control")
    return _mean_or_nan(y_t[:top_t]) - _mean_or_nan(y_c[:top_c])


def _rate_and_var(y: np.ndarray) -> tuple[float, float]:
    """Mean and variance of the mean (population variance / n, i.e. p(1-p)/n for 0/1 outcomes)."""
    if y.size == 0:
        return float("nan"), float("nan")
    return float(y.mean()), float(y.var() / y.size)


def uplift_by_decile(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, bins: int = 10, strategy: str = "overall"
) -> pd.DataFrame:
    """Per bin of predicted uplift (bin 1 = highest): sizes, response rates, observed and predicted uplift.

    Bins as sklift's ``uplift_by_percentile``: the ranked units split into ``bins`` nearly equal parts
    (``numpy.array_split``); "by_group" splits the treated and the control units separately. Columns:
    decile, n_treated, n_control, response_rate_treated, response_rate_control, uplift (observed),
    uplift_se (sqrt of the summed variances of the two means), mean_predicted_uplift.
    """
    yy, uu, tt = _arrays(y, uplift, treatment)
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not isinstance(bins, int | np.integer) or not 0 < bins < yy.size:
        raise ConfigError(f"bins must be an int in [1, {yy.size}), got {bins!r}")
    order = descending_order(uu)
    ys, us, ts = yy[order], uu[order], tt[order]
    if strategy == "overall":
        parts = [(y_b[t_b == 1], y_b[t_b == 0], u_b) for y_b, u_b, t_b in _split(bins, ys, us, ts)]
    else:
        treated = _split(bins, ys[ts == 1], us[ts == 1])
        control = _split(bins, ys[ts == 0], us[ts == 0])
        parts = [(yt, yc, np.r_[ut, uc]) for (yt, ut), (yc, uc) in zip(treated, control, strict=True)]
    rows = []
    for b, (y_t, y_c, u_b) in enumerate(parts, start=1):
        (r_t, v_t), (r_c, v_c) = _rate_and_var(y_t), _rate_and_var(y_c)
        rows.append(
            {
                "decile": b,
                "n_treated": int(y_t.size),
                "n_control": int(y_c.size),
                "response_rate_treated": r_t,
                "response_rate_control": r_c,
                "uplift": r_t - r_c,
                "uplift_se": float(np.sqrt(v_t + v_c)),
                "mean_predicted_uplift": _mean_or_nan(u_b),
            }
        )
    return pd.DataFrame(rows)


def _split(bins: int, *arrays: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    return list(zip(*(np.array_split(a, bins) for a in arrays), strict=True))


def uplift_calibration(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, bins: int = 10, level: float = 0.95
) -> pd.DataFrame:
    """Predicted against observed uplift per bin of predicted uplift, with a normal CI of the observed one.

    Columns: decile, n, mean_predicted_uplift, observed_uplift, se, ci_low, ci_high, covered (whether the
    CI holds the mean prediction). A calibrated model has the predictions on the diagonal within the CIs.
    """
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    table = uplift_by_decile(y, uplift, treatment, bins=bins, strategy="overall")
    z = NormalDist().inv_cdf((1 + level) / 2)
    out = pd.DataFrame(
        {
            "decile": table["decile"],
            "n": table["n_treated"] + table["n_control"],
            "mean_predicted_uplift": table["mean_predicted_uplift"],
            "observed_uplift": table["uplift"],
            "se": table["uplift_se"],
        }
    )
    out["ci_low"] = out["observed_uplift"] - z * out["se"]
    out["ci_high"] = out["observed_uplift"] + z * out["se"]
    out["covered"] = (out["ci_low"] <= out["mean_predicted_uplift"]) & (out["mean_predicted_uplift"] <= out["ci_high"])
    return out


def qini_curve_band(
    y: ArrayLike,
    uplift: ArrayLike,
    treatment: ArrayLike,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int | None = 0,
    n_grid: int = 101,
) -> pd.DataFrame:
    """Qini curve on a grid of shares targeted, with a percentile bootstrap band (units resampled).

    Returns columns share (0..1), qini (the curve on the full data, linearly interpolated), low, high,
    in the curve's units (incremental outcomes). Each resample has n units, so its curve is on the same scale.
    """
    if not isinstance(n_boot, int | np.integer) or n_boot < 2:
        raise ConfigError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    yy, uu, tt = _arrays(y, uplift, treatment)
    n = yy.size
    share = np.linspace(0.0, 1.0, n_grid)
    x, v = qini_curve(yy, uu, tt)
    boot = []
    for counts in bootstrap_counts(n, n_boot, seed):
        n_all, n_t, n_c, y_t, y_c = _group_sums(yy, uu, tt, counts)
        values = y_t - y_c * _ratio(n_t, n_c)
        boot.extend(np.interp(share * n, np.r_[0.0, xs], np.r_[0.0, vs]) for xs, vs in zip(n_all, values, strict=True))
    low, high = np.quantile(np.array(boot), [(1 - level) / 2, (1 + level) / 2], axis=0)
    return pd.DataFrame({"share": share, "qini": np.interp(share * n, x, v), "low": low, "high": high})
