"""Early warning: hourly metrics by dimension, a robust seasonal detector, explanations, and campaigns that start
on an alert and stop when the metric has recovered. Every alert, start and stop is logged with its evidence.

The metrics (:data:`METRICS`, :func:`metric_table`) live in `offerlift.serving.monitor_metrics`; the campaign rules, the
executors and the log in `offerlift.serving.monitor_campaigns`. This module has the detector and the :class:`Monitor`
that steps through the hours, and re-exports the rest.

Detector (:class:`Detector`): the baseline of hour h is the median of the same hour of the previous ``lookback``
periods (``period`` hours, a day by default). The spread is, with ``scale="same_hour"``, 1.4826 x the median
absolute deviation of those same-hour values; with ``scale="pooled"`` (default, steadier: a week of residuals
instead of 7 values) the hour's expected noise unit (Poisson for counts: sqrt(baseline x scale / denominator);
baseline / sqrt(denominator) for means) times the robust scale (1.4826 x MAD, at least 1 for counts) of the
series' standardized residuals over the lookback. Both are floored by ``rel_floor`` x baseline and, for counts,
by the Poisson unit. z = (value - baseline) / spread; hours whose expected count is below ``min_expected`` are
not scored. A series opens an episode when z <= -``threshold`` for ``confirm`` hours in a row, or when its
one-sided CUSUM ``S = min(0, S + z + cusum_k)`` reaches -``cusum_h`` (moderate drops that last); it recovers
when z >= -``recover_z`` for ``recover_hours`` hours in a row.

An alert (one per metric and hour with newly opened series) is explained over the last ``explain_hours``: for
each dimension, the values are ranked by their deficit (expected minus observed numerator, e.g. missing orders);
the top values (at most ``max_values``, each with a mean z below -threshold/2) up to ``explain_share`` of the
dimension's deficit are chosen, and the dimension whose chosen values are the most significant together
(Stouffer's combination of their mean z) explains the drop. A city shock drops every tier a little and one city
a lot, so the city wins; the evidence lists, per dimension, each chosen value's deficit, share of the deficit
and share of the volume ("city = chengdu: 93% of the missing orders, 15% of the volume").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from offerlift.features.errors import ConfigError, SchemaError
from offerlift.serving.monitor_campaigns import (
    BatchDecide,
    Campaign,
    CampaignRule,
    Executor,
    JsonlLog,
    LogOnlyExecutor,
    PolicyExecutor,
)
from offerlift.serving.monitor_metrics import METRICS, Metric, metric_table

__all__ = [
    "METRICS",
    "BatchDecide",
    "Campaign",
    "CampaignRule",
    "Detector",
    "Executor",
    "JsonlLog",
    "LogOnlyExecutor",
    "Metric",
    "Monitor",
    "PolicyExecutor",
    "load_monitor_config",
    "metric_table",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detector:
    """Seasonal median/MAD detector settings (see the module doc)."""

    period: int = 24
    lookback: int = 7
    threshold: float = 3.0
    confirm: int = 2
    cusum_k: float = 1.0
    cusum_h: float = 6.0
    explain_hours: int = 3
    recover_z: float = 1.0
    recover_hours: int = 2
    rel_floor: float = 0.03
    min_expected: float = 5.0
    explain_share: float = 0.67
    max_values: int = 3
    scale: str = "pooled"

    def __post_init__(self) -> None:
        if self.period < 1 or self.lookback < 3 or min(self.confirm, self.recover_hours, self.explain_hours) < 1:
            raise ConfigError(f"detector: need period >= 1, lookback >= 3, confirm/recover/explain hours >= 1: {self}")
        if self.threshold <= 0 or self.recover_z < 0 or not 0 < self.explain_share <= 1:
            raise ConfigError(f"detector: bad threshold, recover_z or explain_share: {self}")
        if self.scale not in ("pooled", "same_hour"):
            raise ConfigError(f"detector: scale must be 'pooled' or 'same_hour', got {self.scale!r}")

    def unit(self, base: float, den: float, metric: Metric) -> float:
        """The noise scale expected of one hour: Poisson for counts, 1/sqrt(n) of the baseline for means."""
        if not den > 0 or not np.isfinite(base):
            return math.nan
        return math.sqrt(max(base, 0.0) * metric.scale / den) if metric.counts else abs(base) / math.sqrt(den)

    def score(
        self, rates: np.ndarray, rate: float, den: float, metric: Metric, residuals: np.ndarray | None = None
    ) -> tuple[float, float, float]:
        """(baseline, spread, z) of `rate` from the same-hour `rates` of the previous periods (NaN if unusable).

        With ``scale="pooled"`` the spread is the unit noise times the robust scale (MAD x 1.4826, at least 1 for
        counts) of `residuals`, the standardized residuals of the series' recent hours (not scored before two
        periods of them); with ``"same_hour"`` it is the MAD of the same-hour values. Both are floored by
        ``rel_floor`` x baseline and, for counts, by the Poisson noise.
        """
        past = rates[np.isfinite(rates)]
        if past.size < max(3, math.ceil(0.7 * self.lookback)) or not np.isfinite(rate):
            return math.nan, math.nan, math.nan
        base = float(np.median(past))
        unit = self.unit(base, den, metric)
        if metric.counts and (not np.isfinite(unit) or base * den / metric.scale < self.min_expected):
            return base, math.nan, math.nan
        spread = 1.4826 * float(np.median(np.abs(past - base)))
        if self.scale == "pooled":
            res = residuals[np.isfinite(residuals)] if residuals is not None else np.zeros(0)
            if res.size < 2 * self.period or not np.isfinite(unit):
                return base, math.nan, math.nan  # warming up
            phi = 1.4826 * float(np.median(np.abs(res)))
            spread = unit * (max(phi, 1.0) if metric.counts else phi)
        spread = max(spread, self.rel_floor * abs(base), unit if metric.counts else 0.0)
        if not spread > 0:
            return base, math.nan, math.nan
        return base, spread, (rate - base) / spread


def load_monitor_config(path: str | Path) -> tuple[Detector, list[CampaignRule]]:
    """Read ``detector:`` (Detector fields) and ``campaigns:`` (a list of rules) from a YAML file."""
    try:
        spec = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read monitor config {str(path)!r}: {exc}") from exc
    unknown = sorted(set(spec) - {"detector", "campaigns"})
    if unknown:
        raise ConfigError(f"monitor config: unknown sections {unknown}; expected detector and campaigns")
    try:
        detector = Detector(**(spec.get("detector") or {}))
    except TypeError as exc:
        raise ConfigError(f"monitor config: detector: {exc}") from None
    return detector, [CampaignRule.from_dict(r) for r in spec.get("campaigns") or []]


@dataclass
class _Series:
    """One (metric, dimension, value) series: its history by hour bin and its episode state."""

    rate: dict[int, float] = field(default_factory=dict)
    num: dict[int, float] = field(default_factory=dict)
    den: dict[int, float] = field(default_factory=dict)
    base: dict[int, float] = field(default_factory=dict)
    z: dict[int, float] = field(default_factory=dict)
    resid: dict[int, float] = field(default_factory=dict)
    low_run: int = 0
    cusum: float = 0.0
    ok_run: int = 0
    open_since: float | None = None


class Monitor:
    """Steps through hourly metric rows, raises explained alerts, starts and stops campaigns, logs everything.

    Args:
        detector: detector settings.
        rules: campaign rules.
        executor: serves the campaigns (default: a dry run).
        sink: where the records go (default: in memory).
        bin_hours: length of one hour bin of the metric table.
    """

    def __init__(
        self,
        detector: Detector = Detector(),
        rules: Iterable[CampaignRule] = (),
        executor: Executor | None = None,
        sink: JsonlLog | None = None,
        bin_hours: float = 1.0,
    ):
        self.detector = detector
        self.rules = list(rules)
        self.executor = executor or LogOnlyExecutor()
        self.sink = sink or JsonlLog()
        self.bin_hours = float(bin_hours)
        self.series: dict[tuple[str, str, str], _Series] = {}
        self.campaigns: list[Campaign] = []

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every alert, recovery, start and stop so far."""
        return self.sink.records

    def run(self, table: pd.DataFrame) -> list[dict[str, Any]]:
        """Step through every hour of a metric table in order; returns the records written."""
        before = len(self.records)
        for _, rows in table.groupby("hour", sort=True):
            self.step(rows)
        return self.records[before:]

    def step(self, rows: pd.DataFrame) -> list[dict[str, Any]]:
        """Take the metric rows of one hour bin; returns the records this hour produced."""
        hours = rows["hour"].unique()
        if hours.size != 1:
            raise SchemaError("metric rows", "hour", f"step takes one hour bin at a time, got {sorted(hours)[:5]}")
        h = int(hours[0])
        now = (h + 1) * self.bin_hours
        before = len(self.records)
        confirmed, recovered = self._update(rows, h)
        for key in recovered:
            self._write("recover", now, key[0], key[1], [key[2]], self._recovery_evidence(key, h))
        for metric in sorted({k[0] for k in confirmed}):
            self._alert(metric, [k for k in confirmed if k[0] == metric], h, now)
        self._tend_campaigns(h, now)
        return self.records[before:]

    def _update(self, rows: pd.DataFrame, h: int) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
        det = self.detector
        confirmed, recovered = [], []
        cols = zip(
            rows["metric"], rows["dimension"], rows["value"], rows["num"], rows["den"], rows["rate"], strict=True
        )
        for metric, dim, value, num, den, rate in cols:
            key = (str(metric), str(dim), str(value))
            s = self.series.setdefault(key, _Series())
            m = METRICS[key[0]]
            past = np.array([s.rate.get(h - k * det.period, np.nan) for k in range(1, det.lookback + 1)])
            base, _, z = det.score(past, float(rate), float(den), m, np.fromiter(s.resid.values(), float))
            s.rate[h], s.num[h], s.den[h], s.base[h], s.z[h] = float(rate), float(num), float(den), base, z
            u = det.unit(base, float(den), m)
            s.resid[h] = (float(rate) - base) / u if u > 0 else math.nan  # NaN compares False
            s.resid.pop(h - det.lookback * det.period, None)
            for d in (s.rate, s.num, s.den, s.base, s.z):
                d.pop(h - (det.lookback + 1) * det.period, None)
            if s.open_since is None:
                s.low_run = s.low_run + 1 if z <= -det.threshold else 0
                s.cusum = min(0.0, s.cusum + z + det.cusum_k) if np.isfinite(z) else s.cusum
                if s.low_run >= det.confirm or (det.cusum_h > 0 and s.cusum <= -det.cusum_h):
                    confirmed.append(key)
            else:
                s.ok_run = s.ok_run + 1 if not z < -det.recover_z else 0  # NaN (no data) counts as recovered
                if s.ok_run >= det.recover_hours:
                    s.open_since, s.low_run, s.ok_run, s.cusum = None, 0, 0, 0.0
                    recovered.append(key)
        return confirmed, recovered

    def explain(self, metric: str, h: int) -> dict[str, Any]:
        """The dimension and values that explain the drop of `metric` over the last explain_hours up to bin `h`."""
        det, m = self.detector, METRICS[metric]
        hours = self._hours(h)
        best: dict[str, Any] = {"dimension": None, "values": [], "score": -math.inf, "dimensions": {}}
        for dim in sorted({k[1] for k in self.series if k[0] == metric and k[1] != "all"}):
            rows = []
            for (mm, dd, value), s in self.series.items():
                if mm != metric or dd != dim:
                    continue
                obs = sum(s.num.get(t, 0.0) for t in hours)
                exp = sum(s.base.get(t, math.nan) * s.den.get(t, 0.0) / m.scale for t in hours)
                if np.isfinite(exp):
                    rows.append((value, obs, exp, float(np.nanmean([s.z.get(t, math.nan) for t in hours]))))
            if not rows:
                continue
            frame = pd.DataFrame(rows, columns=["value", "observed", "expected", "z"])
            frame["deficit"] = frame["expected"] - frame["observed"]
            total_def = frame["deficit"].clip(lower=0).sum()
            frame["deficit_share"] = frame["deficit"].clip(lower=0) / total_def if total_def > 0 else 0.0
            frame["volume_share"] = frame["expected"] / max(frame["expected"].sum(), 1e-12)
            frame = frame.sort_values("deficit", ascending=False)
            chosen = []
            for row in frame.itertuples(index=False):
                if sum(r.deficit_share for r in chosen) >= det.explain_share or len(chosen) >= det.max_values:
                    break
                if row.deficit > 0 and row.z <= -det.threshold / 2:  # big but normal values are noise: skip
                    chosen.append(row)
            score = sum(-r.z for r in chosen) / math.sqrt(len(chosen)) if chosen else -math.inf  # Stouffer
            best["dimensions"][dim] = {
                "score": round(score, 4) if chosen else None,
                "values": [_evidence_row(r) for r in chosen] or [_evidence_row(next(frame.itertuples(index=False)))],
            }
            if score > best["score"]:
                best.update(dimension=dim, values=[r.value for r in chosen], score=score)
        return best

    def _alert(self, metric: str, keys: list[tuple[str, str, str]], h: int, now: float) -> None:
        expl = self.explain(metric, h)
        named = [self.series.get((metric, str(expl["dimension"]), str(v))) for v in expl["values"]]
        already = bool(named) and all(x is not None and x.open_since is not None for x in named)
        for dim, value in [(k[1], k[2]) for k in keys] + [(expl["dimension"], v) for v in expl["values"]]:
            s = self.series.get((metric, str(dim), str(value)))
            if s is not None and s.open_since is None:
                s.open_since, s.ok_run = now, 0
        confirmed = [
            {"dimension": d, "value": v, "z": [_r(self.series[(metric, d, v)].z.get(t)) for t in self._hours(h)]}
            for _, d, v in keys
        ]
        dims = [expl["dimension"]] if expl["dimension"] else sorted({k[1] for k in keys})
        values = expl["values"] if expl["dimension"] else sorted({k[2] for k in keys})
        evidence = {"confirmed": confirmed, "explanation": expl["dimensions"], "hours": list(self._hours(h))}
        if already:  # the same incident, already alerted and explained the same way
            log.debug("monitor: %s drop of %s is already open for %s", metric, keys, values)
            return
        self._write("alert", now, metric, dims[0], values, evidence)
        for rule in self.rules:
            if rule.metric != metric:
                continue
            named = expl["values"] if rule.dimension == expl["dimension"] else []
            named += [k[2] for k in keys if rule.dimension == "all" and k[1] == "all"]
            for value in named:
                self._maybe_start(rule, str(value), now, evidence)

    def _hours(self, h: int) -> range:
        return range(h - self.detector.explain_hours + 1, h + 1)

    def _maybe_start(self, rule: CampaignRule, value: str, now: float, evidence: dict[str, Any]) -> None:
        for c in self.campaigns:
            if c.rule.name != rule.name or c.value != value:
                continue
            if c.stopped_at is None or now - c.stopped_at < rule.cooldown_hours:
                return
        campaign = Campaign(rule=rule, value=value, started_at=now)
        self.campaigns.append(campaign)
        served = self.executor.start(campaign, now)
        self._write("start", now, rule.metric, rule.dimension, [value], {"rule": asdict(rule), "served": served})

    def _tend_campaigns(self, h: int, now: float) -> None:
        for c in self.campaigns:
            if c.stopped_at is not None:
                continue
            s = self.series.get((c.rule.metric, c.rule.dimension, c.value))
            reason = None
            if s is not None and s.open_since is None and now > c.started_at:
                reason = "recovered"
            elif c.spent >= c.rule.budget - 1e-9 and c.rule.budget > 0 and now > c.started_at:
                reason = "budget"
            elif now - c.started_at >= c.rule.max_hours:
                reason = "max_hours"
            if reason is None:
                self.executor.hour(c, now)
                continue
            c.stopped_at, c.stop_reason = now, reason
            served = self.executor.stop(c, now)
            evidence = {"reason": reason, "ran_hours": now - c.started_at, "served": served}
            if s is not None:
                evidence["z"] = [_r(s.z.get(t)) for t in range(h - self.detector.recover_hours + 1, h + 1)]
            self._write("stop", now, c.rule.metric, c.rule.dimension, [c.value], evidence)

    def _recovery_evidence(self, key: tuple[str, str, str], h: int) -> dict[str, Any]:
        s = self.series[key]
        hours = range(h - self.detector.recover_hours + 1, h + 1)
        return {"z": [_r(s.z.get(t)) for t in hours], "rate": [_r(s.rate.get(t)) for t in hours]}

    def _write(self, kind: str, now: float, metric: str, dim: str, values: list[str], evidence: dict) -> None:
        self.sink.write(
            {"kind": kind, "time": now, "metric": metric, "dimension": dim, "values": values, "evidence": evidence}
        )


def _r(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def _evidence_row(r: Any) -> dict[str, Any]:
    return {
        "value": r.value,
        "observed": _r(r.observed),
        "expected": _r(r.expected),
        "deficit": _r(r.deficit),
        "deficit_share": _r(r.deficit_share),
        "volume_share": _r(r.volume_share),
        "z": _r(r.z),
    }
