"""The A/B report of a campaign: treated groups against the holdout, per arm and overall.

Input is the attributed decision table (`offerlift.features.attribution.attribute`): one row per decision with its arm,
group (holdout, explore, exploit), outcomes (buy, spend, redeem) and optionally a pre-period covariate for CUPED.
Profit of a decision = margin * spend - redeem cost of its arm * redeemed - contact cost of its arm.

- Lift: mean profit per customer of the treated (explore + exploit) minus that of the holdout, with a Welch
  normal CI; the same per arm (customers who got that arm against the whole holdout).
- CUPED: ``Y - theta * (X - mean X)`` with ``theta = cov(X, Y) / var(X)`` pooled over both groups, X the
  pre-period covariate (e.g. spend in the 30 days before the decision). Unbiased because X is fixed before
  assignment; the variance shrinks by ``corr(X, Y)^2``.
- Sample-ratio mismatch: a chi-square test of the observed holdout share against the configured one.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from offerlift.features.catalog import Catalog
from offerlift.features.errors import DataError

TREATED = ("explore", "exploit")


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


def welch(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> Diff:
    """mean(a) - mean(b) with a Welch (unpooled) normal CI."""
    if len(a) < 2 or len(b) < 2:
        return Diff(float("nan"), float("nan"), float("nan"), float("nan"))
    d = float(a.mean() - b.mean())
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    z = float(stats.norm.ppf(0.5 + level / 2))
    return Diff(d, d - z * se, d + z * se, se)


def decision_profit(table: pd.DataFrame, catalog: Catalog) -> np.ndarray:
    """Realized profit of each decision."""
    redeem_cost = table["arm"].map({a.id: a.redeem_cost for a in catalog.arms}).to_numpy(dtype=float)
    contact = table["arm"].map({a.id: a.contact_cost for a in catalog.arms}).to_numpy(dtype=float)
    if np.isnan(redeem_cost).any():
        bad = table["arm"][np.isnan(redeem_cost)].iloc[0]
        raise DataError(f"decision with arm {bad!r}, which is not in the catalog {catalog.name!r}")
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
    cost = t["arm"].map({a.id: a.redeem_cost for a in catalog.arms}).to_numpy(float) * t["redeem"].to_numpy(float)
    return {
        "customers": len(t),
        "buyers": int(t["buy"].sum()),
        "buy_rate": float(t["buy"].mean()) if len(t) else float("nan"),
        "spend": float(t["spend"].sum()),
        "redemptions": int(t["redeem"].sum()),
        "coupon_cost": float(cost.sum()),
        "profit_per_customer": float(profit.mean()) if len(t) else float("nan"),
    }


def ab_report(
    table: pd.DataFrame,
    catalog: Catalog,
    holdout_share: float,
    campaign: str = "default",
    covariate: str | None = None,
    level: float = 0.95,
) -> dict[str, Any]:
    """The report as a JSON-ready dict (see the module doc)."""
    for col in ("arm", "grp", "buy", "spend", "redeem"):
        if col not in table.columns:
            raise DataError(f"A/B report: column {col!r} is missing from the decision table")
    profit = decision_profit(table, catalog)
    hold = (table["grp"] == "holdout").to_numpy()
    treated = table["grp"].isin(TREATED).to_numpy()
    report: dict[str, Any] = {
        "campaign": campaign,
        "customers": len(table),
        "groups": {
            "holdout": _group_stats(table[hold], profit[hold], catalog),
            "treated": _group_stats(table[treated], profit[treated], catalog),
        },
        "srm": srm_check(int(hold.sum()), int((hold | treated).sum()), holdout_share),
        "lift": welch(profit[treated], profit[hold], level).to_dict(),
    }
    if covariate is not None and covariate in table.columns:
        keep = hold | treated
        adj, theta, red = cuped(profit[keep], table[covariate].to_numpy(float)[keep])
        h = hold[keep]
        report["lift_cuped"] = {
            **welch(adj[~h], adj[h], level).to_dict(),
            "theta": theta,
            "variance_reduction": red,
            "covariate": covariate,
        }
    per_arm = []
    for arm in catalog.arm_ids:
        rows = treated & (table["arm"] == arm).to_numpy()
        if not rows.any():
            continue
        entry = {"arm": arm, **_group_stats(table[rows], profit[rows], catalog)}
        entry["lift_vs_holdout"] = welch(profit[rows], profit[hold], level).to_dict()
        per_arm.append(entry)
    report["per_arm"] = per_arm
    n_t = int(treated.sum())
    report["incremental_profit_total"] = report["lift"]["estimate"] * n_t if n_t else 0.0
    return report


def _figure_png(report: dict[str, Any]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    arms = [a for a in report["per_arm"] if a["customers"] >= 30][:20]
    est = [a["lift_vs_holdout"]["estimate"] for a in arms]
    err = [
        [e - a["lift_vs_holdout"]["ci_low"] for e, a in zip(est, arms, strict=True)],
        [a["lift_vs_holdout"]["ci_high"] - e for e, a in zip(est, arms, strict=True)],
    ]
    ax.errorbar(range(len(arms)), est, yerr=err, fmt="o", capsize=3)
    ax.axhline(0, color="grey", lw=1)
    overall = report["lift"]
    ax.axhspan(overall["ci_low"], overall["ci_high"], color="tab:green", alpha=0.15, label="all treated (CI)")
    ax.set_xticks(range(len(arms)), [a["arm"] for a in arms], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("profit lift per customer vs holdout")
    ax.set_title(f"A/B lift by arm, campaign {report['campaign']}")
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def write_report(report: dict[str, Any], directory: str | Path) -> dict[str, Path]:
    """Write ``ab_report.json`` and ``ab_report.html`` (tables and a plot) into a folder."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "ab_report.json"
    json_path.write_text(json.dumps(report, indent=2, default=float))
    lift, srm = report["lift"], report["srm"]
    rows = "".join(
        f"<tr><td>{a['arm']}</td><td>{a['customers']}</td><td>{a['buy_rate']:.3f}</td><td>{a['redemptions']}</td>"
        f"<td>{a['coupon_cost']:.2f}</td><td>{a['profit_per_customer']:.3f}</td>"
        f"<td>{a['lift_vs_holdout']['estimate']:+.3f} [{a['lift_vs_holdout']['ci_low']:+.3f}, "
        f"{a['lift_vs_holdout']['ci_high']:+.3f}]</td></tr>"
        for a in report["per_arm"]
    )
    cuped_txt = ""
    if "lift_cuped" in report:
        c = report["lift_cuped"]
        cuped_txt = (
            f"<p>CUPED on {c['covariate']}: {c['estimate']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
            f", variance reduced by {c['variance_reduction']:.1%}</p>"
        )
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>A/B report {report["campaign"]}</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}
th{{background:#eee}}</style></head><body>
<h1>A/B report: {report["campaign"]}</h1>
<p>{report["customers"]:,} decisions. Profit lift per customer, treated vs holdout:
<b>{lift["estimate"]:+.4f}</b> (95% CI {lift["ci_low"]:+.4f} to {lift["ci_high"]:+.4f}).</p>{cuped_txt}
<p>Sample ratio: holdout share {srm["observed_holdout_share"]:.4f} (expected {srm["expected_holdout_share"]:.4f}),
p = {srm["p_value"]:.3g}: {"OK" if srm["ok"] else "MISMATCH: check the assignment before trusting this report"}.</p>
<img src="data:image/png;base64,{_figure_png(report)}" alt="lift by arm">
<table><tr><th>arm</th><th>customers</th><th>buy rate</th><th>redemptions</th><th>coupon cost</th>
<th>profit/customer</th><th>lift vs holdout [95% CI]</th></tr>{rows}</table></body></html>"""
    html_path = out / "ab_report.html"
    html_path.write_text(html)
    return {"json": json_path, "html": html_path}
