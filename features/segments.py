"""Segments and tags: RFM scores, lifecycle stages, price sensitivity and channel affinity, from events.

:func:`build_segments` returns one row per customer (index ``customer_id``), computed only from the canonical
events strictly before ``at`` (point in time, like :mod:`offerlift.features.build`, whose builder it reuses):

- ``recency_hours``, ``frequency``, ``monetary``, ``lifecycle``: as in :mod:`offerlift.features.build`.
- ``r_score``, ``f_score``, ``m_score``: 1 (worst) to 5 (best) quintile scores among customers who bought at
  least once (ties share the average rank; a smaller recency scores higher); 0 for customers who never bought.
  ``rfm_score`` is the three digits as text, e.g. ``"545"``.
- ``rfm_segment``: from R and FM = (F + M) / 2 (first match wins)::

      never_bought   no transaction
      champions      R >= 4 and FM >= 4
      loyal          R >= 3 and FM >= 3
      promising      R >= 4 (and FM < 3): recent, not yet frequent
      need_attention R == 3 (and FM < 3)
      at_risk        R <= 2 and FM >= 3: used to buy a lot, not lately
      hibernating    R == 2 (and FM < 3)
      lost           R == 1 (and FM < 3)

- ``price_sensitivity``: the customer's redemptions per viewed offer, shrunk toward the population's rate with a
  Beta prior worth ``prior_strength`` views: ``(completed + k * p) / (viewed + k)``. ``price_band`` is
  ``unknown`` without any viewed offer, else ``low`` (below the population rate p), ``mid`` (p to 2p) or
  ``high`` (2p and more): fixed cut-offs, because the sparse counts tie too much for quantiles. It measures how
  readily a customer uses coupons, not their uplift: a coupon farmer scores high (see :mod:`offerlift.features.abuse`).
- ``affinity_<channel>``: share of the offers received on that channel that the customer viewed, shrunk toward
  the channel's population view rate (same Beta prior); 0 where the customer is not reachable on the channel or
  has not opted in (flags ``reach_<channel>`` and the channel's consent flag in ``customers``, when present).
  A view is credited to the channel of the latest receipt of the same offer before it. ``best_channel`` is the
  usable channel with the highest affinity (``"none"`` when no channel is usable).
- ``tags``: a tuple of ``"rfm:<segment>"``, ``"lifecycle:<stage>"``, ``"price:<band>"``, ``"channel:<best>"``
  (plus any extra tags given), for reports and targeting.

:func:`select` turns a targeting spec such as ``{"rfm_segment": ["at_risk"], "price_band": "high",
"affinity_push": {"min": 0.3}, "tags": ["channel:push"]}`` into a boolean mask, usable in eligibility rules and
campaign targeting. :func:`segment_report` counts customers and their average value by segment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.build import FEATURE_KINDS, check_events, latest_features
from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError, SchemaError

log = logging.getLogger(__name__)

RFM_SEGMENTS = (
    "never_bought",
    "champions",
    "loyal",
    "promising",
    "need_attention",
    "at_risk",
    "hibernating",
    "lost",
)
PRICE_BANDS = ("unknown", "low", "mid", "high")
PRIOR_STRENGTH = 2.0  # views worth of prior in the shrunk rates


def rfm_scores(features: pd.DataFrame, bins: int = 5) -> pd.DataFrame:
    """R, F and M scores (1..bins, 0 for never bought), the score text and the segment of each row.

    `features` needs ``recency_hours``, ``frequency`` and ``monetary`` (as made by :mod:`offerlift.features.build`).
    """
    missing = [c for c in ("recency_hours", "frequency", "monetary") if c not in features.columns]
    if missing:
        raise SchemaError("features", missing[0], f"missing column; the table has {list(features.columns)}")
    if bins < 2:
        raise ConfigError(f"rfm bins must be at least 2, got {bins!r}")
    bought = features["frequency"].to_numpy(dtype=float) > 0
    out = pd.DataFrame(index=features.index)
    for name, col, sign in (
        ("r_score", "recency_hours", -1.0),
        ("f_score", "frequency", 1.0),
        ("m_score", "monetary", 1.0),
    ):
        out[name] = _quantile_score(sign * features[col].to_numpy(dtype=float), bought, bins)
    out["rfm_score"] = out["r_score"].astype(str) + out["f_score"].astype(str) + out["m_score"].astype(str)
    out["rfm_segment"] = rfm_segment(out["r_score"], out["f_score"], out["m_score"], bins)
    return out


def _quantile_score(values: np.ndarray, mask: np.ndarray, bins: int) -> np.ndarray:
    """1..bins by the average-rank percentile among `mask` rows; 0 elsewhere."""
    score = np.zeros(values.size, dtype=np.int64)
    if mask.any():
        pct = pd.Series(values[mask]).rank(method="average", pct=True).to_numpy()
        score[mask] = np.clip(np.ceil(pct * bins), 1, bins).astype(np.int64)
    return score


def rfm_segment(r: Iterable[int], f: Iterable[int], m: Iterable[int], bins: int = 5) -> pd.Categorical:
    """The segment of each (R, F, M) score triple (rules in the module doc, scaled to `bins`)."""
    r, f, m = (np.asarray(list(x), dtype=float) for x in (r, f, m))
    s = 5.0 / bins  # the rules are written for 5 bins
    r5, fm5 = np.ceil(r * s), (f + m) / 2.0 * s
    seg = np.select(
        [r == 0, (r5 >= 4) & (fm5 >= 4), (r5 >= 3) & (fm5 >= 3), r5 >= 4, r5 == 3, fm5 >= 3, r5 == 2],
        list(RFM_SEGMENTS[:7]),
        default=RFM_SEGMENTS[7],
    )
    return pd.Categorical(seg, categories=list(RFM_SEGMENTS))


def offer_channels(events: pd.DataFrame) -> pd.DataFrame:
    """Viewed and completed offer events with the channel of the latest receipt of the same offer before them.

    Returns columns customer_id, time, event, offer_id, reward, channel (None when no receipt precedes the event).
    """
    events = canonical(events)
    kind = events["event"].to_numpy(dtype=object)
    rec = events.loc[kind == "offer_received", ["customer_id", "offer_id", "time", "channel"]]
    rest = events.loc[np.isin(kind, ("offer_viewed", "offer_completed"))]
    rest = rest[["customer_id", "time", "event", "offer_id", "reward"]]
    if rest.empty:
        return rest.assign(channel=pd.Series(dtype=object))
    key = lambda df: df["customer_id"].astype(str) + "\x1f" + df["offer_id"].astype(str)  # noqa: E731
    left = rest.assign(_key=key(rest), _t=rest["time"].astype(float)).sort_values("_t", kind="stable")
    right = rec.assign(_key=key(rec), _t=rec["time"].astype(float), _ch=rec["channel"]).sort_values("_t")
    joined = pd.merge_asof(
        left, right[["_key", "_t", "_ch"]], on="_t", by="_key", direction="backward", allow_exact_matches=True
    )
    joined.index = left.index
    out = rest.copy()
    out["channel"] = joined["_ch"].reindex(rest.index).astype(object).where(joined["_ch"].notna(), None)
    return out


def _shrunk(num: np.ndarray, den: np.ndarray, prior: float, strength: float) -> np.ndarray:
    return (num + strength * prior) / (den + strength)


def _counts(events: pd.DataFrame, kind: str, ids: pd.Index) -> np.ndarray:
    sub = events.loc[events["event"].to_numpy(dtype=object) == kind, "customer_id"].astype(str)
    return sub.value_counts().reindex(ids, fill_value=0).to_numpy(dtype=float)


def price_sensitivity(
    events: pd.DataFrame, customer_ids: Iterable[str], at: float | None = None, prior_strength: float = PRIOR_STRENGTH
) -> pd.DataFrame:
    """Shrunk redemptions per viewed offer and its band, per customer (index ``customer_id``); see module doc."""
    ids = pd.Index([str(c) for c in customer_ids], name="customer_id")
    ev = _before(events, at)
    viewed, done = _counts(ev, "offer_viewed", ids), _counts(ev, "offer_completed", ids)
    total_v = viewed.sum()
    prior = float(min(done.sum() / total_v, 1.0)) if total_v > 0 else 0.0
    score = np.clip(_shrunk(done, viewed, prior, prior_strength), 0.0, 1.0)
    band = np.where(score >= 2.0 * prior, "high", np.where(score >= prior, "mid", "low")).astype(object)
    band[viewed == 0] = "unknown"
    return pd.DataFrame(
        {"offers_viewed": viewed, "offers_redeemed": done, "price_sensitivity": score, "price_band": band}, index=ids
    ).assign(price_band=lambda d: pd.Categorical(d["price_band"], categories=list(PRICE_BANDS)))


def channel_affinity(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    channels: Sequence[str] | Catalog,
    at: float | None = None,
    prior_strength: float = PRIOR_STRENGTH,
) -> pd.DataFrame:
    """``affinity_<channel>`` per channel and ``best_channel`` per customer (index ``customer_id``)."""
    consent_of = {}
    if isinstance(channels, Catalog):
        consent_of = {c.id: c.consent for c in channels.channels}
        channels = [c.id for c in channels.channels]
    ids = pd.Index(customers["customer_id"].astype(str), name="customer_id")
    ev = _before(events, at)
    kind = ev["event"].to_numpy(dtype=object)
    rec = ev.loc[kind == "offer_received", ["customer_id", "channel"]]
    views = offer_channels(ev)
    views = views.loc[views["event"] == "offer_viewed", ["customer_id", "channel"]]
    out = pd.DataFrame(index=ids)
    usable = np.zeros((ids.size, len(channels)), dtype=bool)
    for j, ch in enumerate(channels):
        r = rec.loc[rec["channel"] == ch, "customer_id"].astype(str).value_counts().reindex(ids, fill_value=0)
        v = views.loc[views["channel"] == ch, "customer_id"].astype(str).value_counts().reindex(ids, fill_value=0)
        r, v = r.to_numpy(dtype=float), np.minimum(v.to_numpy(dtype=float), r.to_numpy(dtype=float))
        prior = float(v.sum() / r.sum()) if r.sum() > 0 else 0.0
        usable[:, j] = _usable(customers, ch, consent_of.get(ch, f"consent_{ch}"))
        out[f"affinity_{ch}"] = np.where(usable[:, j], _shrunk(v, r, prior, prior_strength), 0.0)
    aff = out.to_numpy(dtype=float) if channels else np.zeros((ids.size, 0))
    best = np.argmax(np.where(usable, aff, -1.0), axis=1) if channels else np.zeros(ids.size, dtype=int)
    names = np.asarray([*channels, "none"], dtype=object)
    out["best_channel"] = np.where(usable.any(axis=1), names[best], "none") if channels else "none"
    return out


def _usable(customers: pd.DataFrame, channel: str, consent: str | None) -> np.ndarray:
    ok = np.ones(len(customers), dtype=bool)
    for col in (f"reach_{channel}", consent):
        if col and col in customers.columns:
            ok &= customers[col].fillna(False).astype(bool).to_numpy()
    return ok


def canonical(events: pd.DataFrame) -> pd.DataFrame:
    """The events the features read, validated: activity kinds of the contract (``app_open``, ``signup``, see
    `offerlift.features.build.ACTIVITY_KINDS`) are dropped; an unknown kind is a SchemaError."""
    check_events(events)
    known = events["event"].isin(FEATURE_KINDS).to_numpy()
    if not known.all():
        log.debug("ignoring %d activity events", int((~known).sum()))
        events = events.loc[known]
    return events


def _before(events: pd.DataFrame, at: float | None) -> pd.DataFrame:
    events = canonical(events)
    if at is None:
        return events
    return events.loc[pd.to_numeric(events["time"]).to_numpy(dtype=float) < float(at)]


def build_segments(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    at: float | None = None,
    channels: Sequence[str] | Catalog | None = None,
    extra_tags: Mapping[str, pd.Series] | None = None,
    prior_strength: float = PRIOR_STRENGTH,
) -> pd.DataFrame:
    """Every segment column and the tags of every customer of `customers` at time `at` (see the module doc).

    `at` None means just after the last event. `channels` (ids or a catalog) default to the channels seen in
    offer_received events. `extra_tags` maps a tag prefix to a Series (index customer_id) of tag values, e.g.
    ``{"abuse": risk_band}`` adds ``"abuse:<value>"``.
    """
    events = canonical(events)
    if at is None:
        at = float(np.nextafter(float(events["time"].max()), np.inf)) if len(events) else 0.0
    feats = latest_features(events, customers, at=at)
    feats.index = feats.index.astype(str).rename("customer_id")
    base = feats[["recency_hours", "frequency", "monetary", "lifecycle"]].copy()
    out = base.join(rfm_scores(base))
    out = out.join(price_sensitivity(events, out.index, at, prior_strength)[["price_sensitivity", "price_band"]])
    if channels is None:
        seen = events.loc[events["event"] == "offer_received", "channel"].dropna()
        channels = sorted(seen.astype(str).unique())
    out = out.join(channel_affinity(events, customers, channels, at, prior_strength))
    out["tags"] = make_tags(out, extra_tags)
    return out


def make_tags(segments: pd.DataFrame, extra: Mapping[str, pd.Series] | None = None) -> pd.Series:
    """A tuple of tags per row from the segment columns present (and extra prefix -> values)."""
    parts: list[pd.Series] = []
    for prefix, col in (("rfm", "rfm_segment"), ("lifecycle", "lifecycle"), ("price", "price_band")):
        if col in segments.columns:
            parts.append(prefix + ":" + segments[col].astype(str))
    if "best_channel" in segments.columns:
        parts.append("channel:" + segments["best_channel"].astype(str))
    for prefix, values in (extra or {}).items():
        v = pd.Series(values).reindex(segments.index)
        parts.append((prefix + ":" + v.astype(str)).where(v.notna(), ""))
    if not parts:
        return pd.Series([()] * len(segments), index=segments.index, dtype=object)
    rows = zip(*(p.to_numpy(dtype=object) for p in parts), strict=True)
    return pd.Series([tuple(t for t in row if t) for row in rows], index=segments.index, dtype=object)


def has_tags(tags: pd.Series, wanted: Iterable[str]) -> np.ndarray:
    """(n,) bool: rows whose tags include every wanted tag."""
    need = set(wanted)
    return np.array([need.issubset(t) for t in tags], dtype=bool)


Condition = tuple[str, str, Any]  # (column, "in" | "range" | "tags", values / (lo, hi) / tags)
ALIASES = {
    "lifecycle": "lifecycle_stage",
    "lifecycle_stage": "lifecycle",
}  # offerlift.features.build vs the rules' name


def compile_where(where: Mapping[str, Any] | None) -> list[Condition]:
    """Validated conditions of a targeting spec (see :func:`select`); ConfigError names a bad bound."""
    out: list[Condition] = []
    for col, cond in (where or {}).items():
        if col == "tags":
            out.append((col, "tags", frozenset([cond] if isinstance(cond, str) else cond)))
        elif isinstance(cond, Mapping):
            unknown = sorted(set(cond) - {"min", "max"})
            if unknown:
                raise ConfigError(f"segment filter on {col!r}: unknown bounds {unknown}; use min and max")
            try:
                lo, hi = float(cond.get("min", -np.inf)), float(cond.get("max", np.inf))
            except (TypeError, ValueError):
                raise ConfigError(f"segment filter on {col!r}: bounds must be numbers, got {dict(cond)}") from None
            out.append((str(col), "range", (lo, hi)))
        else:
            wanted = [cond] if isinstance(cond, str) or not isinstance(cond, Iterable) else list(cond)
            out.append((str(col), "in", tuple(wanted)))
    return out


def _get(row: Mapping[str, Any], col: str) -> Any:
    value = row.get(col)
    return row.get(ALIASES[col]) if value is None and col in ALIASES else value


def row_matches(row: Mapping[str, Any], conditions: Sequence[Condition]) -> bool:
    """Whether one customer's attributes (a dict, e.g. the online store's row) meet every condition.

    A missing or unusable value (None, NaN, text under a numeric bound) fails its condition. ``lifecycle`` and
    ``lifecycle_stage`` stand for each other. Same result as :func:`columns_match` (property-tested).
    """
    for col, op, arg in conditions:
        value = _get(row, col)
        if op == "tags":
            if not isinstance(value, Iterable) or isinstance(value, str) or not arg <= set(value):
                return False
        elif op == "range":
            try:
                x = float(value)
            except (TypeError, ValueError):
                return False
            if not arg[0] <= x <= arg[1]:  # NaN fails
                return False
        elif value is None or value != value or value not in arg:
            return False
    return True


def columns_match(columns: Mapping[str, Sequence[Any]], n: int, conditions: Sequence[Condition]) -> np.ndarray:
    """(n,) bool: :func:`row_matches` for columns of n customers (a missing column fails its condition)."""
    ok = np.ones(n, dtype=bool)
    for col, op, arg in conditions:
        values = columns.get(col)
        if values is None and col in ALIASES:
            values = columns.get(ALIASES[col])
        if values is None:
            return np.zeros(n, dtype=bool)
        if op == "tags":
            ok &= np.array([row_matches({col: v}, [(col, op, arg)]) for v in values], dtype=bool)
        elif op == "range":
            x = pd.to_numeric(pd.Series(np.asarray(values, dtype=object)), errors="coerce").to_numpy(dtype=float)
            ok &= (x >= arg[0]) & (x <= arg[1])
        else:
            series = pd.Series(np.asarray(values, dtype=object))
            ok &= series.isin(arg).to_numpy() & series.notna().to_numpy()
    return ok


def select(segments: pd.DataFrame, where: Mapping[str, Any] | None) -> np.ndarray:
    """(n,) bool mask of the rows matching a targeting spec (all conditions must hold).

    A condition is ``column: value``, ``column: [values]`` (membership), ``column: {"min": x, "max": y}``
    (inclusive bounds) or ``tags: [tags]`` (all present). ConfigError names an unknown column. The same specs
    work per customer (:func:`row_matches`, the service's segment rules) and on columns (:func:`columns_match`).
    """
    conditions = compile_where(where)
    for col, _, _ in conditions:
        if col not in segments.columns:
            raise ConfigError(f"segment filter: unknown column {col!r}; columns are {list(segments.columns)}")
    columns = {col: segments[col].astype(object).to_numpy() for col, _, _ in conditions}
    return columns_match(columns, len(segments), conditions)


def segment_report(segments: pd.DataFrame, by: str = "rfm_segment", value: str = "monetary") -> pd.DataFrame:
    """Customers, share and mean `value` per value of `by` (every category, also the empty ones)."""
    if by not in segments.columns or value not in segments.columns:
        raise ConfigError(f"segment report: need columns {by!r} and {value!r}; have {list(segments.columns)}")
    g = segments.groupby(by, observed=False)[value]
    out = pd.DataFrame({"customers": g.size(), f"mean_{value}": g.mean()})
    out["share"] = out["customers"] / max(len(segments), 1)
    return out


def tag_counts(segments: pd.DataFrame) -> pd.Series:
    """How many customers carry each tag, most common first."""
    return pd.Series([t for tags in segments["tags"] for t in tags], dtype=object).value_counts()
