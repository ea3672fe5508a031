"""The A/B report as one self-contained HTML page (no script, no external resource): the verdict and the totals a
marketing team reads first, data checks, then the per-arm effects (chart and table) and how they were estimated.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Mapping
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2430;
  max-width:1040px;margin:28px auto;padding:0 20px;line-height:1.45;background:#fff}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:18px;margin:30px 0 10px;border-bottom:1px solid #e3e7ee;padding-bottom:4px}
.sub{color:#5b6575;margin:0 0 18px}
.verdict{font-size:17px;padding:12px 16px;border-radius:8px;margin:14px 0 18px}
.good{background:#e7f6ec;border-left:5px solid #1f8a4c}.bad{background:#fdecec;border-left:5px solid #c0392b}
.unclear{background:#f3f4f7;border-left:5px solid #8a94a6}
.tiles{display:grid;grid-template-columns:repeat(4,1fr);gap:12px}
.tile{border:1px solid #e3e7ee;border-radius:8px;padding:10px 12px}
.tile .k{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#5b6575}
.tile .v{font-size:22px;font-weight:600;margin:2px 0}.tile .ci{font-size:12px;color:#5b6575}
.checks{list-style:none;padding:0;margin:0}.checks li{margin:4px 0}
.ok{color:#1f8a4c;font-weight:600}.warn{color:#c0392b;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13px;margin-top:6px}
th{background:#f3f5f9;text-align:right;padding:6px 8px;font-weight:600;border-bottom:1px solid #d8dde6}
td{text-align:right;padding:5px 8px;border-bottom:1px solid #eef0f4;font-variant-numeric:tabular-nums}
th:first-child,td:first-child{text-align:left}
tr.sig-pos td:first-child{border-left:4px solid #1f8a4c}tr.sig-neg td:first-child{border-left:4px solid #c0392b}
.note{color:#5b6575;font-size:13px}.chart svg{width:100%;height:auto}
"""


def _num(x: Any, digits: int = 0, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    fmt = f"{{:{'+' if sign else ''},.{digits}f}}"
    return fmt.format(float(x))


def _ci(d: Mapping[str, Any], digits: int = 0) -> str:
    if not math.isfinite(float(d.get("ci_low", math.nan))):
        return "interval n/a"
    return f"{_num(d['ci_low'], digits, True)} to {_num(d['ci_high'], digits, True)}"


def _tile(label: str, value: str, note: str) -> str:
    return (
        f'<div class="tile"><div class="k">{html.escape(label)}</div><div class="v">{value}</div>'
        f'<div class="ci">{html.escape(note)}</div></div>'
    )


def _verdict(report: Mapping[str, Any]) -> str:
    t, level = report["totals"], report.get("level", 0.95)
    p = t["profit"]
    lo, hi = float(p.get("ci_low", math.nan)), float(p.get("ci_high", math.nan))
    roi = t["roi"]
    roi_txt = f", a return of {_num(roi['estimate'], 2)} per unit spent" if math.isfinite(roi["estimate"]) else ""
    body = (
        f"incremental profit of <b>{_num(p['estimate'], 0, True)}</b> ({level:.0%} CI {_ci(p)}) over "
        f"{t['treated_decisions']:,} treated decisions{roi_txt}"
    )
    if math.isfinite(lo) and lo > 0:
        return f'<div class="verdict good">The campaign paid: {body}.</div>'
    if math.isfinite(hi) and hi < 0:
        return f'<div class="verdict bad">The campaign lost money: {body}.</div>'
    return f'<div class="verdict unclear">No clear effect yet: {body}; the interval includes zero.</div>'


def _tiles(report: Mapping[str, Any]) -> str:
    t, level = report["totals"], report.get("level", 0.95)
    lv = f"{level:.0%} CI"
    cost = t["coupon_cost"] + t["contact_cost"]
    return (
        '<div class="tiles">'
        + "".join(
            [
                _tile("Incremental profit", _num(t["profit"]["estimate"], 0, True), f"{lv} {_ci(t['profit'])}"),
                _tile("ROI", _num(t["roi"]["estimate"], 2, True), f"{lv} {_ci(t['roi'], 2)}; profit / spend"),
                _tile("Incremental buyers", _num(t["buyers"]["estimate"], 0, True), f"{lv} {_ci(t['buyers'])}"),
                _tile("Incremental orders", _num(t["orders"]["estimate"], 0, True), f"{lv} {_ci(t['orders'])}"),
                _tile("Incremental revenue", _num(t["revenue"]["estimate"], 0, True), f"{lv} {_ci(t['revenue'])}"),
                _tile("Coupon cost", _num(t["coupon_cost"], 0), "redeemed coupons, counted exactly"),
                _tile("Contact cost", _num(t["contact_cost"], 0), f"counted exactly; spend {_num(cost, 0)}"),
            ]
        )
        + "</div>"
    )


def _checks(report: Mapping[str, Any]) -> str:
    srm, data = report["srm"], report.get("data", {})
    items = []
    srm_ok = (
        '<span class="ok">OK</span>'
        if srm["ok"]
        else '<span class="warn">MISMATCH: check the assignment before trusting this report</span>'
    )
    items.append(
        f"<li>Holdout share {srm['observed_holdout_share']:.2%} against {srm['expected_holdout_share']:.2%} "
        f"configured (sample-ratio test p = {srm['p_value']:.3g}): {srm_ok}</li>"
    )
    if "lift_cuped" in report:
        c = report["lift_cuped"]
        items.append(
            f"<li>Variance reduction (CUPED on <code>{html.escape(str(c['covariate']))}</code>, measured before each "
            f"decision): {c['variance_reduction']:.1%}; the totals use it.</li>"
        )
    if data:
        window = data.get("window_hours")
        if window is not None:
            items.append(f"<li>Attribution window {_num(window, 0)} h after each decision (last touch).</li>")
        if data.get("open_decisions"):
            items.append(
                f"<li class='warn'>{data['open_decisions']:,} decisions of the period are left out: their window has "
                "not closed or they are not joined yet (run <code>offerlift join</code>).</li>"
            )
        if data.get("decisions_without_probs"):
            items.append(
                f"<li>{data['decisions_without_probs']:,} decisions were logged without the policy's arm "
                "probabilities and count only in the totals.</li>"
            )
    return '<ul class="checks">' + "".join(items) + "</ul>"


def _chart_svg(report: Mapping[str, Any]) -> str:
    from matplotlib.figure import Figure

    arms = [a for a in report["per_arm"] if a.get("estimated")]
    if not arms:
        return ""
    arms = sorted(arms, key=lambda a: a["lift_vs_holdout"]["estimate"])
    est = [a["lift_vs_holdout"]["estimate"] for a in arms]
    lo = [e - a["lift_vs_holdout"]["ci_low"] for e, a in zip(est, arms, strict=True)]
    hi = [a["lift_vs_holdout"]["ci_high"] - e for e, a in zip(est, arms, strict=True)]
    colors = [
        "#1f8a4c" if a["significant"] and e > 0 else "#c0392b" if a["significant"] else "#6b7a90"
        for e, a in zip(est, arms, strict=True)
    ]
    fig = Figure(figsize=(9.5, 0.6 + 0.28 * len(arms)))
    ax = fig.subplots()
    for y, (e, lo_e, hi_e, c) in enumerate(zip(est, lo, hi, colors, strict=True)):
        ax.errorbar([e], [y], xerr=[[lo_e], [hi_e]], fmt="o", color=c, capsize=3, ms=5, lw=1.4)
    ax.axvline(0, color="#8a94a6", lw=1)
    overall = report["lift"]
    ax.axvspan(overall["ci_low"], overall["ci_high"], color="#1f6fb4", alpha=0.12, label="all treated (CI)")
    ax.set_yticks(range(len(arms)), [a["arm"] for a in arms], fontsize=9)
    ax.set_xlabel("incremental profit per decision (simultaneous CIs, Bonferroni)")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return '<div class="chart">' + svg[svg.index("<svg") :] + "</div>"


def _arm_rows(report: Mapping[str, Any]) -> str:
    rows = []
    for a in sorted(report["per_arm"], key=lambda a: -_finite(a["lift_vs_holdout"]["estimate"])):
        d = a["lift_vs_holdout"]
        cls = ""
        if a.get("significant"):
            cls = ' class="sig-pos"' if d["estimate"] > 0 else ' class="sig-neg"'
        effect = f"{_num(d['estimate'], 3, True)} [{_ci(d, 3)}]" if a.get("estimated") else "too few decisions"
        total = _num(a.get("incremental_profit_total"), 0, True) if a.get("estimated") else ""
        rows.append(
            f"<tr{cls}><td>{html.escape(a['arm'])}</td><td>{a['customers']:,}</td><td>{a['buy_rate']:.3f}</td>"
            f"<td>{a['redemptions']:,}</td><td>{_num(a['coupon_cost'], 0)}</td>"
            f"<td>{_num(a['profit_per_customer'], 3, True)}</td><td>{effect}</td><td>{total}</td>"
            f"<td>{'yes' if a.get('significant') else ''}</td></tr>"
        )
    return "".join(rows)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _groups(report: Mapping[str, Any]) -> str:
    rows = []
    for label, g in (("Holdout", report["groups"]["holdout"]), ("Treated", report["groups"]["treated"])):
        rows.append(
            f"<tr><td>{label}</td><td>{g['customers']:,}</td><td>{g['buy_rate']:.4f}</td><td>{_num(g['orders'])}</td>"
            f"<td>{_num(g['spend'])}</td><td>{_num(g['coupon_cost'])}</td><td>{_num(g['contact_cost'])}</td>"
            f"<td>{_num(g['profit_per_customer'], 3, True)}</td></tr>"
        )
    lift = report["lift"]
    return (
        "<table><tr><th>group</th><th>decisions</th><th>buy rate</th><th>orders</th><th>revenue</th>"
        "<th>coupon cost</th><th>contact cost</th><th>profit / decision</th></tr>" + "".join(rows) + "</table>"
        f"<p class='note'>Profit per treated decision over the holdout: {_num(lift['estimate'], 4, True)} "
        f"({report.get('level', 0.95):.0%} CI {_ci(lift, 4)}), standard errors clustered by customer.</p>"
    )


def _period(report: Mapping[str, Any]) -> str:
    p = report.get("period") or {}
    if p.get("start_iso") or p.get("end_iso"):
        return f"{html.escape(str(p.get('start_iso', '')))} to {html.escape(str(p.get('end_iso', '')))}"
    if p:
        return html.escape(", ".join(f"{k} {v}" for k, v in p.items()))
    return "all logged decisions"


def render_html(report: Mapping[str, Any]) -> str:
    """The page (see the module doc)."""
    mc = report["multiple_comparisons"]
    name = html.escape(str(report["campaign"]))
    level = report.get("level", 0.95)
    arms_txt = (
        f"{mc['arms']} arms with at least {mc['min_decisions']} treated decisions are estimated; the intervals are "
        f"Bonferroni intervals (each at {mc['per_arm_level']:.2%}), so all of them hold together with probability at "
        f"least {level:.0%}. Green: significantly positive, red: significantly negative."
        if mc["arms"]
        else html.escape(mc["estimator"])
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>A/B report: {name}</title>
<style>{CSS}</style></head><body>
<h1>A/B report: {name}</h1>
<p class="sub">{_period(report)} &middot; {report["decisions"]:,} decisions of {report["customers_distinct"]:,}
customers &middot; holdout {report["groups"]["holdout"]["customers"]:,},
treated {report["groups"]["treated"]["customers"]:,}</p>
{_verdict(report)}
{_tiles(report)}
<h2>Data checks</h2>{_checks(report)}
<h2>Effect of each arm on the decisions that got it</h2>
<p class="note">Each arm is compared with the holdout decisions that could have received it, weighted by the
policy's probability of giving it to them. {arms_txt}</p>
{_chart_svg(report)}
<table><tr><th>arm</th><th>decisions</th><th>buy rate</th><th>redemptions</th><th>coupon cost</th>
<th>profit / decision</th><th>effect / decision [simultaneous CI]</th><th>incremental profit</th>
<th>significant</th></tr>{_arm_rows(report)}</table>
<h2>Holdout and treated</h2>{_groups(report)}
<h2>How these numbers are made</h2>
<p class="note">Profit of a decision = margin &times; revenue &minus; coupon cost if redeemed &minus; contact cost.
The holdout is chosen by a stable hash of the customer, so treated and holdout are comparable groups; totals are the
per-decision differences times the treated decisions ({report["totals"]["treated_decisions"]:,}), profit by
{html.escape(str(report["totals"]["profit_estimator"]))}. Costs are counted exactly (the holdout costs nothing);
ROI is incremental profit divided by coupon and contact cost. Per-arm effects are those of one decision given the
customer's history: where contact caps bind they are approximate, the totals are not.</p>
</body></html>"""
