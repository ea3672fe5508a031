"""The A/B report of a campaign: what the campaign earned against its holdout, in total and per arm.

Input is the attributed decision table (`offerlift.features.attribution.attribute`): one row per decision with its
arm, group (holdout, explore, exploit), outcomes (buy, spend, redeem, optionally ``orders``), optionally the
customer id (standard errors are clustered by customer: a customer decided twice is one draw, not two), a
pre-period covariate for CUPED, and the policy's probability of every arm (``arm_probs``, see below).
Profit of a decision = margin * spend - redeem cost of its arm * redeemed - contact cost of its arm.

Estimators (all differences of means with normal intervals; standard errors cluster-robust by customer):

- **Lift** (the campaign's effect per treated decision): mean profit of the treated (explore + exploit) minus that
  of the holdout. The holdout is drawn by a stable hash of the customer, independent of everything else, so this
  is unbiased for the effect of the treated policy on the treated.
- **CUPED**: ``Y - theta * (X - mean X)`` with ``theta = cov(X, Y) / var(X)`` pooled over both groups, X fixed
  before the decision (e.g. spend in the 30 days before it): unbiased, with variance shrunk by ``corr(X, Y)^2``.
  When a covariate is given, the headline totals use it (decided before looking at the data, not per report).
- **Per arm** (the effect of arm ``a`` on the decisions that got it): mean profit of the treated decisions that
  got ``a`` minus the mean profit of the holdout decisions weighted by ``pi_j(a)``, the probability that the
  treated policy would have given ``a`` to holdout decision ``j`` (its rules, caps, exploration and greedy choice
  at that moment, logged with the decision). Weighting the holdout by ``pi(a)`` compares each arm with the units
  that could have received it, as likely as they were to receive it: the treated who got ``a`` are a draw of
  the population weighted by ``pi(a)``, and so is the weighted holdout (the hash is independent of ``pi``).
  Comparing an arm with the whole holdout instead mixes in who gets that arm: the ``none`` arm of treated
  customers (those the policy chose to leave alone, or with few reachable channels) showed a "significant"
  effect although giving no offer has none. Without ``arm_probs`` the per-arm effects are not estimated.
- **Many arms**: the per-arm intervals are Bonferroni intervals (each at ``1 - alpha / m`` for the ``m`` arms
  estimated), so all of them hold together with probability at least ``level``; an arm is called significant
  when its interval excludes 0 (the same as a Bonferroni-adjusted p-value below ``alpha``).
- **Totals** a marketing team reads first: incremental buyers, orders, revenue and profit (the per-decision
  differences times the treated decisions, with their intervals), coupon and contact cost (counted, exact: the
  holdout costs nothing), and ROI = incremental profit / (coupon + contact cost), its interval the profit's
  interval over the exact cost.
- **Sample-ratio mismatch**: a chi-square test of the observed holdout share against the configured one.

The per-arm effect is that of one decision given the customer's history; when contact caps bind, treated
customers' histories differ from the holdout's (who is never contacted), so per-arm effects are approximate
there, while the lift, a comparison of whole customers, stays exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from offerlift.features.catalog import Catalog
from offerlift.features.errors import DataError

TREATED = ("explore", "exploit")
MIN_ARM_DECISIONS = 30  # per-arm effects are estimated for arms with at least this many treated decisions


@dataclass(frozen=True)
class Diff:
    """A difference of means with its normal CI."""

    estimate: float
    ci_low: float
    ci_high: float
    se: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready."""
        return {"estimate": self.estimate, "ci_low": self.ci_low, "ci_high": self.ci_high, "se": self.se}

    def scaled(self, k: float) -> Diff:
        """The same difference times ``k`` (k >= 0), e.g. per decision -> for all treated decisions."""
        return Diff(self.estimate * k, self.ci_low * k, self.ci_high * k, self.se * k)


NAN_DIFF = Diff(math.nan, math.nan, math.nan, math.nan)


def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2))


def welch(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> Diff:
    """mean(a) - mean(b) with a Welch (unpooled) normal CI."""
    if len(a) < 2 or len(b) < 2:
        return NAN_DIFF
    d = float(a.mean() - b.mean())
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    z = _z(level)
    return Diff(d, d - z * se, d + z * se, se)


def weighted_mean(y: np.ndarray, w: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """``sum(w y) / sum(w)`` and its cluster-robust (linearized) standard error.

    The ratio's influence of cluster c is ``sum_{i in c} w_i (y_i - mean) / sum(w)``; the variance is the sum of
    their squares times ``g / (g - 1)`` for ``g`` clusters with positive weight. With one unit per cluster and
    unit weights this is the usual ``s / sqrt(n)``. NaN when fewer than two clusters carry weight.
    """
    total = float(w.sum())
    if total <= 0:
        return math.nan, math.nan
    m = float((w * y).sum() / total)
    codes = pd.factorize(clusters)[0]
    infl = np.bincount(codes, weights=w * (y - m)) / total
    g = int(np.count_nonzero(np.bincount(codes, weights=w) > 0))
    if g < 2:
        return m, math.nan
    return m, float(np.sqrt((infl**2).sum() * g / (g - 1)))


def diff_of_means(
    y1: np.ndarray, w1: np.ndarray, c1: np.ndarray, y0: np.ndarray, w0: np.ndarray, c0: np.ndarray, z: float
) -> Diff:
    """Weighted mean of group 1 minus that of group 0 (disjoint customers: independent), normal CI ``+- z se``."""
    m1, s1 = weighted_mean(y1, w1, c1)
    m0, s0 = weighted_mean(y0, w0, c0)
    d, se = m1 - m0, math.hypot(s1, s0)
    if not np.isfinite(se):
        return Diff(d, math.nan, math.nan, math.nan)
    return Diff(d, d - z * se, d + z * se, se)


def _arm_map(table: pd.DataFrame, catalog: Catalog, attr: str) -> np.ndarray:
    values = table["arm"].map({a.id: getattr(a, attr) for a in catalog.arms}).to_numpy(dtype=float)
    if np.isnan(values).any():
        bad = table["arm"][np.isnan(values)].iloc[0]
        raise DataError(f"decision with arm {bad!r}, which is not in the catalog {catalog.name!r}")
    return values


def decision_profit(table: pd.DataFrame, catalog: Catalog) -> np.ndarray:
    """Realized profit of each decision."""
    redeem_cost = _arm_map(table, catalog, "redeem_cost")
    contact = _arm_map(table, catalog, "contact_cost")
    return catalog.margin * table["spend"].to_numpy(float) - redeem_cost * table["redeem"].to_numpy(float) - contact


def cuped(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """CUPED-adjusted outcome, theta, and the share of variance removed."""
    x = np.nan_to_num(x.astype(float))
    vx = x.var()
    if vx <= 0:
        return y, 0.0, 0.0
    theta = float(np.cov(x, y, ddof=0)[0, 1] / vx)
    adj = y - theta * (x - x.mean())
    reduction = 1.0 - adj.var() / y.var() if y.var() > 0 else 0.0
    return adj, theta, float(reduction)


def srm_check(n_holdout: int, n_total: int, expected_share: float, alpha: float = 0.001) -> dict[str, Any]:
    """Chi-square test of the holdout share; `ok` is False when the split is off beyond chance (p < alpha)."""
    expected = np.array([expected_share, 1 - expected_share]) * n_total
    observed = np.array([n_holdout, n_total - n_holdout])
    chi2 = float(((observed - expected) ** 2 / np.maximum(expected, 1e-12)).sum())
    p = float(stats.chi2.sf(chi2, df=1))
    return {
        "expected_holdout_share": expected_share,
        "observed_holdout_share": n_holdout / max(n_total, 1),
        "chi2": chi2,
        "p_value": p,
        "ok": bool(p >= alpha),
    }


def _group_stats(t: pd.DataFrame, profit: np.ndarray, catalog: Catalog) -> dict[str, Any]:
    cost = _arm_map(t, catalog, "redeem_cost") * t["redeem"].to_numpy(float)
    return {
        "customers": len(t),
        "buyers": int(t["buy"].sum()),
        "buy_rate": float(t["buy"].mean()) if len(t) else float("nan"),
        "orders": float(t["orders"].sum()) if "orders" in t else float(t["buy"].sum()),
        "spend": float(t["spend"].sum()),
        "redemptions": int(t["redeem"].sum()),
        "coupon_cost": float(cost.sum()),
        "contact_cost": float(_arm_map(t, catalog, "contact_cost").sum()),
        "profit_per_customer": float(profit.mean()) if len(t) else float("nan"),
    }


def _check(table: pd.DataFrame, catalog: Catalog, arm_probs: np.ndarray | None) -> np.ndarray | None:
    for col in ("arm", "grp", "buy", "spend", "redeem"):
        if col not in table.columns:
            raise DataError(f"A/B report: column {col!r} is missing from the decision table")
    if arm_probs is None:
        return None
    p = np.asarray(arm_probs, dtype=float)
    if p.shape != (len(table), len(catalog.arms)):
        raise DataError(f"A/B report: arm_probs must have shape ({len(table)}, {len(catalog.arms)}), got {p.shape}")
    bad = ~np.isfinite(p).all(axis=1) | (p < -1e-12).any(axis=1) | (np.abs(p.sum(axis=1) - 1) > 1e-6)
    if bad.any():
        raise DataError(
            f"A/B report: arm_probs rows must be probabilities; bad rows {np.flatnonzero(bad)[:5].tolist()}"
        )
    return p


def ab_report(
    table: pd.DataFrame,
    catalog: Catalog,
    holdout_share: float,
    campaign: str = "default",
    covariate: str | None = None,
    level: float = 0.95,
    arm_probs: np.ndarray | None = None,
    period: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report as a JSON-ready dict (see the module doc).

    Args:
        table: one row per decision (arm, grp, buy, spend, redeem; optional customer_id, orders, `covariate`).
        catalog: the arms' costs and the margin.
        holdout_share: the configured holdout share (for the sample-ratio check).
        campaign: the campaign's name, shown on the report.
        covariate: a pre-decision column for CUPED.
        level: confidence of every interval (per-arm ones simultaneously, by Bonferroni).
        arm_probs: (n, K) probability of each catalog arm under the treated policy for every decision, holdout
            decisions included (what the policy would have done had the customer not been held out).
        period: shown on the report (e.g. ``{"start": ..., "end": ...}``).
    """
    probs = _check(table, catalog, arm_probs)
    profit = decision_profit(table, catalog)
    hold = (table["grp"] == "holdout").to_numpy()
    treated = table["grp"].isin(TREATED).to_numpy()
    clusters = (
        table["customer_id"].astype(str).to_numpy() if "customer_id" in table else np.arange(len(table)).astype(str)
    )
    z = _z(level)
    ones = np.ones(len(table))

    def lift_of(y: np.ndarray) -> Diff:
        return diff_of_means(y[treated], ones[treated], clusters[treated], y[hold], ones[hold], clusters[hold], z)

    report: dict[str, Any] = {
        "campaign": campaign,
        "period": dict(period or {}),
        "customers": len(table),
        "decisions": len(table),
        "customers_distinct": int(pd.unique(clusters).size),
        "level": level,
        "groups": {
            "holdout": _group_stats(table[hold], profit[hold], catalog),
            "treated": _group_stats(table[treated], profit[treated], catalog),
        },
        "srm": srm_check(int(hold.sum()), int((hold | treated).sum()), holdout_share),
        "lift": lift_of(profit).to_dict(),
    }
    headline, estimator = lift_of(profit), "plain"
    if covariate is not None and covariate in table.columns:
        keep = hold | treated
        adj_all = profit.copy()
        adj, theta, red = cuped(profit[keep], table[covariate].to_numpy(float)[keep])
        adj_all[keep] = adj
        cup = lift_of(adj_all)
        report["lift_cuped"] = {**cup.to_dict(), "theta": theta, "variance_reduction": red, "covariate": covariate}
        if np.isfinite(cup.se):
            headline, estimator = cup, f"cuped on {covariate}"
    report["totals"] = _totals(table, treated, lift_of, headline, estimator, report["groups"]["treated"])
    report["per_arm"], report["multiple_comparisons"] = _per_arm(
        table, catalog, profit, treated, hold, clusters, probs, level
    )
    report["incremental_profit_total"] = report["totals"]["profit"]["estimate"]
    return report


def _totals(
    table: pd.DataFrame,
    treated: np.ndarray,
    lift_of: Any,
    headline: Diff,
    estimator: str,
    treated_stats: Mapping[str, Any],
) -> dict[str, Any]:
    """Incremental buyers, orders, revenue and profit with CIs, exact costs, ROI."""
    n_t = int(treated.sum())
    orders = table["orders"].to_numpy(float) if "orders" in table else table["buy"].to_numpy(float)
    cost = float(treated_stats["coupon_cost"] + treated_stats["contact_cost"])
    profit = headline.scaled(n_t) if n_t else NAN_DIFF
    roi = profit.scaled(1.0 / cost) if cost > 0 else NAN_DIFF
    return {
        "treated_decisions": n_t,
        "buyers": lift_of(table["buy"].to_numpy(float)).scaled(n_t).to_dict(),
        "orders": lift_of(orders).scaled(n_t).to_dict(),
        "revenue": lift_of(table["spend"].to_numpy(float)).scaled(n_t).to_dict(),
        "coupon_cost": float(treated_stats["coupon_cost"]),
        "contact_cost": float(treated_stats["contact_cost"]),
        "profit": profit.to_dict(),
        "profit_estimator": estimator,
        "roi": roi.to_dict(),
    }


def _per_arm(
    table: pd.DataFrame,
    catalog: Catalog,
    profit: np.ndarray,
    treated: np.ndarray,
    hold: np.ndarray,
    clusters: np.ndarray,
    probs: np.ndarray | None,
    level: float,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    arms = table["arm"].to_numpy()
    chosen = [
        (j, arm) for j, arm in enumerate(catalog.arm_ids) if int((treated & (arms == arm)).sum()) >= MIN_ARM_DECISIONS
    ]
    m = len(chosen) if probs is not None else 0
    alpha = 1.0 - level
    z = float(stats.norm.ppf(1.0 - alpha / (2 * max(m, 1))))
    out = []
    for j, arm in catalog_arms_with_decisions(catalog, arms, treated):
        rows = treated & (arms == arm)
        entry: dict[str, Any] = {"arm": arm, **_group_stats(table[rows], profit[rows], catalog)}
        estimated = probs is not None and any(arm == a for _, a in chosen)
        if estimated:
            w0 = probs[hold, j]
            d = diff_of_means(
                profit[rows], np.ones(int(rows.sum())), clusters[rows], profit[hold], w0, clusters[hold], z
            )
            p = float(2 * stats.norm.sf(abs(d.estimate / d.se))) if d.se > 0 else math.nan
            entry["lift_vs_holdout"] = d.to_dict()
            entry["holdout_weight"] = float(w0.sum())
            entry["holdout_effective_n"] = float(w0.sum() ** 2 / (w0**2).sum()) if (w0**2).sum() > 0 else 0.0
            entry["p_value"] = p
            entry["p_adjusted"] = min(1.0, p * m) if np.isfinite(p) else math.nan
            entry["significant"] = bool(np.isfinite(d.ci_low) and (d.ci_low > 0 or d.ci_high < 0))
            entry["incremental_profit_total"] = d.estimate * int(rows.sum())
        else:
            entry["lift_vs_holdout"] = NAN_DIFF.to_dict()
            entry["significant"] = False
        entry["estimated"] = bool(estimated)
        out.append(entry)
    method = {
        "method": "bonferroni",
        "arms": m,
        "family_level": level,
        "per_arm_level": 1.0 - alpha / max(m, 1),
        "min_decisions": MIN_ARM_DECISIONS,
        "estimator": "treated with the arm vs holdout weighted by the policy's probability of the arm"
        if probs is not None
        else "not estimated: the policy's arm probabilities are missing",
    }
    return out, method


def catalog_arms_with_decisions(catalog: Catalog, arms: np.ndarray, treated: np.ndarray) -> list[tuple[int, str]]:
    """(index, id) of the catalog arms that some treated decision got, in catalog order."""
    present = set(pd.unique(arms[treated]).tolist())
    return [(j, a) for j, a in enumerate(catalog.arm_ids) if a in present]


def treated_policy_probs(allowed: np.ndarray, greedy: np.ndarray, explore: float | np.ndarray) -> np.ndarray:
    """(n, K) probability of each arm under the treated policy of `offerlift.serving.policy.decide`: ``explore``
    spread uniformly over the allowed arms (column 0, the control, always allowed) plus ``1 - explore`` on the
    greedy arm."""
    allowed = np.array(allowed, dtype=bool)
    allowed[:, 0] = True
    e = np.broadcast_to(np.asarray(explore, dtype=float), (allowed.shape[0],))[:, None]
    probs = e * allowed / allowed.sum(axis=1, keepdims=True)
    probs[np.arange(len(greedy)), np.asarray(greedy, dtype=np.intp)] += 1.0 - e[:, 0]
    return probs


def write_report(report: Mapping[str, Any], directory: str | Path) -> dict[str, Path]:
    """Write ``ab_report.json`` and ``ab_report.html`` (`offerlift.training.ab_report_html`) into a folder."""
    import json

    from offerlift.training.ab_report_html import render_html

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "ab_report.json"
    json_path.write_text(json.dumps(report, indent=2, default=_plain, allow_nan=True))
    html_path = out / "ab_report.html"
    html_path.write_text(render_html(report))
    return {"json": json_path, "html": html_path}


def _plain(o: Any) -> Any:
    return o.item() if hasattr(o, "item") else str(o)
