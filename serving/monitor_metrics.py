"""Early-warning metrics: hourly ratio metrics by dimension value, from the canonical events and the customers.

Metrics (:data:`METRICS`), per hour bin and dimension value, from the canonical events and the customers table:

- ``orders``: transactions per 1,000 customers of the value (its population);
- ``conversion``: customers who bought in the hour per 1,000 *active* customers (a transaction in the 30 days
  before the hour);
- ``basket``: spend per transaction;
- ``redemption``: coupon redemptions per 1,000 offers received in the 7 days before the hour.

Dimensions are customer columns (``city``, ``tier``, or any other, e.g. a segment) and ``channel`` (redemption
only: a redemption counts for the channel of the latest receipt of its offer). ``all`` is the whole population.
Activity events (``app_open``, ``signup``) are not metrics' input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from offerlift.features.errors import ConfigError, SchemaError
from offerlift.features.segments import canonical, offer_channels

ACTIVE_HOURS = 30 * 24.0
RECEIVED_HOURS = 7 * 24.0


@dataclass(frozen=True)
class Metric:
    """A ratio metric: numerator / denominator x scale, per hour bin and dimension value."""

    name: str
    numerator: str  # transactions | buyers | amount | completions
    denominator: str  # population | active | transactions | received
    scale: float = 1.0
    counts: bool = True  # the numerator is a count (Poisson noise); else a mean of `denominator` draws


METRICS = {
    "orders": Metric("orders", "transactions", "population", 1000.0),
    "conversion": Metric("conversion", "buyers", "active", 1000.0),
    "basket": Metric("basket", "amount", "transactions", 1.0, counts=False),
    "redemption": Metric("redemption", "completions", "received", 1000.0),
}


def _metric(name: str) -> Metric:
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}; metrics are {sorted(METRICS)}")
    return METRICS[name]


class _Prepared:
    """The events of a metric table as integer arrays: customer row, hour bin (from the table's start), kind."""

    def __init__(self, events: pd.DataFrame, customers: pd.DataFrame, h0: int, n_h: int, bin_h: float):
        self.events, self.customers, self.h0, self.n_h, self.bin_h = events, customers, h0, n_h, bin_h
        ids = pd.Index(customers["customer_id"].astype(str))
        self.row = ids.get_indexer(events["customer_id"].astype(str))
        self.time = events["time"].to_numpy(dtype=float)
        self.hour = np.floor(self.time / bin_h).astype(np.int64) - h0
        kind = events["event"].to_numpy(dtype=object)
        self.is_ = {k: kind == k for k in ("transaction", "offer_received", "offer_completed")}
        self.amount = pd.to_numeric(events["amount"], errors="coerce").fillna(0.0).to_numpy(dtype=float)
        self._credited: pd.DataFrame | None = None

    def codes(self, dim: str) -> tuple[np.ndarray, list[str]]:
        """Value code of each event (-1 when unknown) and the values of a customer dimension."""
        if dim == "all":
            return np.where(self.row >= 0, 0, -1), ["all"]
        if dim == "channel":  # the channel of offer_received events
            values = sorted(self.events["channel"].dropna().astype(str).unique())
            return pd.Index(values).get_indexer(self.events["channel"].astype(object)), values
        if dim not in self.customers.columns:
            cols = list(self.customers.columns)
            raise SchemaError("customers", dim, f"no such dimension column; columns are {cols}")
        col = self.customers[dim]
        values = sorted(col.dropna().astype(str).unique())
        cust = pd.Index(values).get_indexer(col.astype(str).where(col.notna(), None))
        return np.where(self.row >= 0, cust[np.maximum(self.row, 0)], -1), values

    def population(self, dim: str, values: list[str]) -> np.ndarray:
        if dim == "all":
            return np.array([float(len(self.customers))])
        counts = self.customers[dim].astype(str).value_counts()
        return counts.reindex(values, fill_value=0).to_numpy(dtype=float)

    def credited(self) -> pd.DataFrame:
        """Completions with the channel of their offer's latest receipt (computed once)."""
        if self._credited is None:
            c = offer_channels(self.events)
            self._credited = c.loc[c["event"] == "offer_completed"]
        return self._credited


def _grid(codes: np.ndarray, hours: np.ndarray, weights: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    ok = (codes >= 0) & (hours >= 0) & (hours < shape[1])
    flat = codes[ok] * shape[1] + hours[ok]
    w = None if weights is None else weights[ok]
    return np.bincount(flat, weights=w, minlength=shape[0] * shape[1]).reshape(shape).astype(float)


def _active(p: _Prepared, codes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Customers with a transaction in the ACTIVE_HOURS before the start of each hour bin."""
    tx = np.flatnonzero(p.is_["transaction"] & (codes >= 0))
    tx = tx[np.lexsort((p.time[tx], p.row[tx]))]
    t, row, code = p.time[tx], p.row[tx], codes[tx]
    same = np.append(row[1:] == row[:-1], False)
    end = np.minimum(t + ACTIVE_HOURS, np.where(same, np.append(t[1:], np.inf), np.inf))
    first = np.floor(t / p.bin_h).astype(np.int64) + 1 - p.h0  # active at the bin starts in (t, end]
    last = np.floor(end / p.bin_h).astype(np.int64) - p.h0
    keep = last >= first
    diff = np.zeros((shape[0], shape[1] + 1))
    np.add.at(diff, (code[keep], np.clip(first[keep], 0, shape[1])), 1.0)
    np.add.at(diff, (code[keep], np.clip(last[keep] + 1, 0, shape[1])), -1.0)
    return np.cumsum(diff, axis=1)[:, :-1]


def _trailing(p: _Prepared, codes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Offers received in the RECEIVED_HOURS before each bin (events before the table's start included)."""
    lo = int(min(p.hour.min(initial=0), 0))
    counts = _grid(np.where(p.is_["offer_received"], codes, -1), p.hour - lo, None, (shape[0], shape[1] - lo))
    width = max(round(RECEIVED_HOURS / p.bin_h), 1)
    cum = np.concatenate([np.zeros((shape[0], 1)), np.cumsum(counts, axis=1)], axis=1)
    idx = np.arange(counts.shape[1])
    return (cum[:, idx] - cum[:, np.maximum(idx - width, 0)])[:, -lo:]


def _num_den(m: Metric, dim: str, p: _Prepared) -> tuple[np.ndarray, np.ndarray, list[str]]:
    codes, values = p.codes(dim)
    shape = (len(values), p.n_h)
    tx = p.is_["transaction"]
    if m.numerator == "completions" and dim == "channel":
        c = p.credited()
        hours = np.floor(c["time"].to_numpy(dtype=float) / p.bin_h).astype(np.int64) - p.h0
        num = _grid(pd.Index(values).get_indexer(c["channel"].astype(object)), hours, None, shape)
    elif m.numerator == "completions":
        num = _grid(np.where(p.is_["offer_completed"], codes, -1), p.hour, None, shape)
    elif m.numerator == "buyers":
        idx = np.flatnonzero(tx & (codes >= 0) & (p.hour >= 0) & (p.hour < p.n_h))
        first = idx[np.unique(p.row[idx] * p.n_h + p.hour[idx], return_index=True)[1]]
        num = _grid(codes[first], p.hour[first], None, shape)
    else:
        num = _grid(np.where(tx, codes, -1), p.hour, p.amount if m.numerator == "amount" else None, shape)
    if m.denominator == "population":
        den = np.repeat(p.population(dim, values)[:, None], p.n_h, axis=1)
    elif m.denominator == "transactions":
        den = _grid(np.where(tx, codes, -1), p.hour, None, shape)
    elif m.denominator == "active":
        den = _active(p, codes, shape)
    else:
        den = _trailing(p, codes, shape)
    return num, den, values


def metric_table(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    metrics: Sequence[str] = ("orders",),
    dimensions: Sequence[str] = ("all", "city"),
    start: float | None = None,
    end: float | None = None,
    bin_hours: float = 1.0,
) -> pd.DataFrame:
    """Long table metric, dimension, value, hour (bin index), time (bin start), num, den, rate for [start, end).

    Every (value, hour) appears, with zeros where nothing happened. Events before `start` still count for the
    ``active`` and ``received`` denominators. The channel dimension is for the redemption metric only. By default
    the table spans the bins from the first event's to the last event's (no empty bin after the data).
    """
    events = canonical(events)  # activity kinds such as app_open are not metrics' input
    times = events["time"].to_numpy(dtype=float)
    lo, hi = (float(times.min()), float(times.max())) if times.size else (0.0, 0.0)
    start = math.floor(lo / bin_hours) * bin_hours if start is None else float(start)
    end = (math.floor(hi / bin_hours) + 1) * bin_hours if end is None else float(end)
    h0 = math.floor(start / bin_hours)
    p = _Prepared(events, customers, h0, max(math.ceil(end / bin_hours) - h0, 0), bin_hours)
    frames = []
    for dim in dimensions:
        for m in (_metric(x) for x in metrics):
            if dim == "channel" and m.name != "redemption":
                raise ConfigError("the channel dimension is defined for the redemption metric only")
            num, den, values = _num_den(m, dim, p)
            frames.append(_long(m, dim, values, num, den, h0, bin_hours))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _long(m: Metric, dim: str, values: list[str], num: np.ndarray, den: np.ndarray, h0: int, bin_h: float):
    n_v, n_h = num.shape
    hours = np.tile(np.arange(h0, h0 + n_h), n_v)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(den > 0, num / np.where(den > 0, den, 1.0) * m.scale, np.nan)
    return pd.DataFrame(
        {
            "metric": m.name,
            "dimension": dim,
            "value": np.repeat(np.asarray(values, dtype=object), n_h),
            "hour": hours,
            "time": hours * bin_h,
            "num": num.ravel(),
            "den": den.ravel(),
            "rate": rate.ravel(),
        }
    )
