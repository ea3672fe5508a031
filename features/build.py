"""Point-in-time features: ONE builder for training and serving, so the two cannot drift.

:func:`build_features` turns the canonical event stream (see the events contract: customer_id, time, event,
amount, offer_id, reward, channel) and the customers table into one row of features per unit, using only the
events strictly before the unit's time. :func:`latest_features` (the online store) calls the same code.

Features (hours are the data set's hours; "before t" always means ``time < t``):

- ``recency_hours``: hours since the last transaction; NaN when there was none.
- ``frequency`` / ``monetary``: number and total amount of transactions; ``avg_basket`` = monetary / frequency
  (NaN when frequency is 0).
- ``tx_7d``, ``spend_7d``, ``tx_30d``, ``spend_30d``: transactions and spend in ``[t - 7d, t)`` and ``[t - 30d, t)``.
- ``tenure_days``: ``(t - signup_time) / 24`` (only when customers has ``signup_time``; NaN where it is missing).
- ``lifecycle``: pandas Categorical with the fixed categories of :data:`LIFECYCLE_STAGES`:
  never_bought (no transaction), potential (exactly one), regular (2 to 4), repeat (5 or more, not loyal),
  loyal (5 or more and at least 3 in the last 30 days). Thresholds are the module constants below.
- ``offers_received``, ``offers_viewed``, ``offers_completed``, ``rewards_earned`` (reward paid on completions),
  ``view_rate`` = viewed / received and ``completion_rate`` = completed / received (NaN when nothing was
  received), ``hours_since_offer`` (since the last offer received; NaN when none).
- demographics passed through from customers when present: numeric columns (age, income, ...) as float,
  text columns (gender, city, tier, ...) as pandas Categorical. The categories come from the WHOLE customers
  table (or its own Categorical dtype), never from the units asked for, so training and serving agree.
- ``reach_<channel>`` / ``consent_<channel>`` flags passed through as float (1.0, 0.0 or NaN).
- ``accounts_per_device`` / ``accounts_per_payment``: accounts sharing the customer's ``device_id`` /
  ``payment_id`` (only when customers has those columns; a coupon-abuse signal).

Everything is vectorized: events are sorted once by (customer, time) and every unit is located with
``np.searchsorted``; per-customer running sums make each feature depend on that customer's earlier events only.

Event kinds (:data:`EVENT_KINDS`): the four the features read (:data:`FEATURE_KINDS`: transaction,
offer_received, offer_viewed, offer_completed) and the activity kinds :data:`ACTIVITY_KINDS` (``app_open``: the
customer is active in the app; ``signup``: the account was created), which the real-time triggers read
(`offerlift.serving.triggers`) and every feature ignores. Activity events carry ``amount`` 0.0, ``reward`` 0.0 and no
offer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from offerlift.features.errors import SchemaError
from offerlift.features.schema import timed_table

log = logging.getLogger(__name__)

FEATURE_KINDS = ("transaction", "offer_received", "offer_viewed", "offer_completed")  # what the features read
ACTIVITY_KINDS = ("app_open", "signup")  # activity for the real-time triggers; no feature reads them
EVENT_KINDS = FEATURE_KINDS + ACTIVITY_KINDS  # every valid ``event`` value of the canonical stream
EVENT_COLUMNS = ("customer_id", "time", "event", "amount", "offer_id", "reward")
LIFECYCLE_STAGES = ("never_bought", "potential", "regular", "repeat", "loyal")
REGULAR_MIN_TX = 2  # transactions needed to be "regular"
REPEAT_MIN_TX = 5  # transactions needed to be "repeat" (or "loyal")
LOYAL_MIN_TX_30D = 3  # transactions in the last 30 days that make a "repeat" customer "loyal"
DEMOGRAPHICS = ("age", "income", "gender", "city", "tier")
FLAG_PREFIXES = ("reach_", "consent_")
HOURS_7D = 7 * 24.0
HOURS_30D = 30 * 24.0


class EventIndex:
    """Events of one kind, sorted by (entity, time), answering "how many / how much before time t" in bulk.

    An entity is any string key (a customer id, or customer and offer joined). Times are compared exactly:
    each event time is replaced by its rank among the distinct event times, so no float tricks are involved.
    """

    def __init__(self, entity: Iterable[str], time: np.ndarray, values: Mapping[str, np.ndarray] | None = None):
        entity = np.asarray(entity, dtype=object)
        time = np.asarray(time, dtype=float)
        codes, uniques = pd.factorize(entity)
        self.entities_ = pd.Index(uniques)
        self.times_ = np.unique(time)
        self._stride = np.int64(len(self.times_) + 1)
        keys = codes.astype(np.int64) * self._stride + np.searchsorted(self.times_, time)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._time = time[order]
        self._start = np.searchsorted(self._keys, np.arange(len(uniques), dtype=np.int64) * self._stride)
        grouped = pd.Series(codes[order])
        self._cum = {
            name: pd.Series(np.asarray(v, dtype=float)[order]).groupby(grouped, sort=False).cumsum().to_numpy()
            for name, v in (values or {}).items()
        }

    def codes(self, entity: Iterable[str]) -> np.ndarray:
        """Entity codes for a query (-1 for an entity with no events)."""
        return self.entities_.get_indexer(pd.Index(np.asarray(entity, dtype=object)))

    def _locate(self, codes: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(number of the entity's events before `time`, position after the last of them)."""
        known = codes >= 0
        safe = np.where(known, codes, 0).astype(np.int64)
        rank = np.searchsorted(self.times_, np.asarray(time, dtype=float), side="left")
        pos = np.searchsorted(self._keys, safe * self._stride + rank, side="left")
        count = np.where(known, pos - self._start[safe] if len(self._start) else 0, 0)
        return count.astype(np.int64), pos

    def count_before(self, codes: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Number of each entity's events with time < `time`."""
        return self._locate(codes, time)[0]

    def sum_before(self, name: str, codes: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Sum of value `name` over each entity's events with time < `time`."""
        count, pos = self._locate(codes, time)
        cum = self._cum[name]
        return np.where(count > 0, cum[np.maximum(pos - 1, 0)] if len(cum) else 0.0, 0.0)

    def last_before(self, codes: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Time of each entity's last event before `time` (NaN when none)."""
        count, pos = self._locate(codes, time)
        last = self._time[np.maximum(pos - 1, 0)] if len(self._time) else np.zeros(len(count))
        return np.where(count > 0, last, np.nan)

    def count_between(self, codes: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Number of each entity's events with lo <= time < hi."""
        return self.count_before(codes, hi) - self.count_before(codes, lo)

    def sum_between(self, name: str, codes: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Sum of value `name` over each entity's events with lo <= time < hi (never below 0 by rounding)."""
        out = self.sum_before(name, codes, hi) - self.sum_before(name, codes, lo)
        return np.where(self.count_between(codes, lo, hi) > 0, out, 0.0)


def check_events(events: pd.DataFrame) -> pd.DataFrame:
    """Validate the canonical event stream; SchemaError names the column and the first bad rows."""
    timed_table(events, "events", EVENT_COLUMNS)
    bad = ~events["event"].isin(EVENT_KINDS).to_numpy()
    if bad.any():
        raise SchemaError("events", "event", f"unknown event; expected one of {EVENT_KINDS}", list(events.index[bad]))
    bad = events["customer_id"].isna().to_numpy()
    if bad.any():
        raise SchemaError("events", "customer_id", "missing customer id", list(events.index[bad]))
    return events


def _check_as_of(as_of: pd.DataFrame) -> pd.DataFrame:
    timed_table(as_of, "as_of", ("unit_id", "customer_id", "time"))
    dup = as_of["unit_id"].duplicated().to_numpy()
    if dup.any():
        raise SchemaError("as_of", "unit_id", "duplicate unit ids", list(as_of.index[dup]))
    return as_of


def event_indexes(events: pd.DataFrame) -> dict[str, EventIndex]:
    """One :class:`EventIndex` per kind the features read (:data:`FEATURE_KINDS`), keyed by customer, with the
    amount and reward running sums. Activity events (``app_open``, ``signup``) are valid and ignored."""
    check_events(events)
    out: dict[str, EventIndex] = {}
    kind = events["event"].to_numpy(dtype=object)
    for k in FEATURE_KINDS:
        sub = events.loc[kind == k]
        values = {
            "amount": pd.to_numeric(sub["amount"], errors="coerce").fillna(0.0).to_numpy(dtype=float),
            "reward": pd.to_numeric(sub["reward"], errors="coerce").fillna(0.0).to_numpy(dtype=float),
        }
        out[k] = EventIndex(sub["customer_id"].astype(str).to_numpy(dtype=object), sub["time"].to_numpy(float), values)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def lifecycle_stage(frequency: np.ndarray, tx_30d: np.ndarray) -> pd.Categorical:
    """Lifecycle stage from the number of transactions ever and in the last 30 days (rules in the module doc)."""
    frequency = np.asarray(frequency)
    stage = np.select(
        [
            frequency == 0,
            frequency < REGULAR_MIN_TX,
            frequency < REPEAT_MIN_TX,
            np.asarray(tx_30d) < LOYAL_MIN_TX_30D,
        ],
        list(LIFECYCLE_STAGES[:4]),
        default=LIFECYCLE_STAGES[4],
    )
    return pd.Categorical(stage, categories=list(LIFECYCLE_STAGES))


def _behaviour(idx: Mapping[str, EventIndex], customer_id: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    tx, rec = idx["transaction"], idx["offer_received"]
    c_tx = tx.codes(customer_id)
    freq = tx.count_before(c_tx, t)
    money = tx.sum_before("amount", c_tx, t)
    tx_30d = tx.count_between(c_tx, t - HOURS_30D, t)
    c_rec = rec.codes(customer_id)
    received = rec.count_before(c_rec, t)
    c_view, c_done = idx["offer_viewed"].codes(customer_id), idx["offer_completed"].codes(customer_id)
    viewed = idx["offer_viewed"].count_before(c_view, t)
    completed = idx["offer_completed"].count_before(c_done, t)
    return {
        "recency_hours": t - tx.last_before(c_tx, t),
        "frequency": freq,
        "monetary": money,
        "avg_basket": _ratio(money, freq),
        "tx_7d": tx.count_between(c_tx, t - HOURS_7D, t),
        "spend_7d": tx.sum_between("amount", c_tx, t - HOURS_7D, t),
        "tx_30d": tx_30d,
        "spend_30d": tx.sum_between("amount", c_tx, t - HOURS_30D, t),
        "lifecycle": lifecycle_stage(freq, tx_30d),
        "offers_received": received,
        "offers_viewed": viewed,
        "offers_completed": completed,
        "rewards_earned": idx["offer_completed"].sum_before("reward", c_done, t),
        "view_rate": _ratio(viewed, received),
        "completion_rate": _ratio(completed, received),
        "hours_since_offer": t - rec.last_before(c_rec, t),
    }


def _customer_columns(customers: pd.DataFrame, customer_id: np.ndarray, t: np.ndarray) -> dict[str, object]:
    if "customer_id" not in customers.columns:
        raise SchemaError("customers", "customer_id", f"missing column; the table has {list(customers.columns)}")
    dup = customers["customer_id"].duplicated().to_numpy()
    if dup.any():
        raise SchemaError("customers", "customer_id", "duplicate ids", list(customers.index[dup]))
    row = pd.Index(customers["customer_id"].astype(str).to_numpy(dtype=object)).get_indexer(customer_id)
    found = row >= 0
    if not found.all():
        log.debug("%d units have a customer missing from the customers table", int((~found).sum()))

    def take(col: str) -> pd.Series:
        return customers[col].iloc[np.where(found, row, 0)].where(found).reset_index(drop=True)

    out: dict[str, object] = {}
    for col, name in (("device_id", "accounts_per_device"), ("payment_id", "accounts_per_payment")):
        if col in customers.columns:
            shared = customers.groupby(col, dropna=False)[col].transform("size").astype(float)
            out[name] = shared.iloc[np.where(found, row, 0)].where(found).to_numpy(dtype=float)
    if "signup_time" in customers.columns:
        signup = pd.to_numeric(take("signup_time"), errors="coerce").to_numpy(dtype=float)
        out["tenure_days"] = (t - signup) / 24.0
    cols = [c for c in DEMOGRAPHICS if c in customers.columns]
    cols += [c for c in customers.columns if str(c).startswith(FLAG_PREFIXES)]
    for col in cols:
        s = customers[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            out[col] = pd.Categorical(take(col), categories=s.cat.categories)
            continue
        if pd.api.types.is_numeric_dtype(s) or str(col).startswith(FLAG_PREFIXES):
            out[col] = pd.to_numeric(take(col), errors="coerce").to_numpy(dtype=float)
            continue
        cats = sorted(s.dropna().astype(str).unique())
        values = take(col)
        values = values.where(values.isna(), values.astype(str))
        out[col] = pd.Categorical(values, categories=cats)
    return out


def build_features(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    as_of: pd.DataFrame,
    indexes: Mapping[str, EventIndex] | None = None,
) -> pd.DataFrame:
    """One row of point-in-time features per unit (index ``unit_id``, in the order of `as_of`).

    `as_of` has columns unit_id, customer_id, time; only events with ``time < as_of.time`` are used.
    `indexes` (from :func:`event_indexes` on the same events) may be passed to skip re-sorting the events.
    """
    _check_as_of(as_of)
    idx = indexes if indexes is not None else event_indexes(events)
    customer_id = as_of["customer_id"].astype(str).to_numpy(dtype=object)
    t = pd.to_numeric(as_of["time"]).to_numpy(dtype=float)
    cols: dict[str, object] = _behaviour(idx, customer_id, t)
    cols.update(_customer_columns(customers, customer_id, t))
    out = pd.DataFrame(cols, index=pd.Index(as_of["unit_id"].to_numpy(), name="unit_id"))
    for col in ("frequency", "tx_7d", "tx_30d", "offers_received", "offers_viewed", "offers_completed"):
        out[col] = out[col].astype(np.int64)
    return out


def latest_features(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    customer_ids: Iterable[str] | None = None,
    at: float | None = None,
    indexes: Mapping[str, EventIndex] | None = None,
) -> pd.DataFrame:
    """Features of a set of customers at one time `at` (index = customer id), for the online store.

    Calls :func:`build_features` (the same code path as training). By default every customer of `customers`
    and `at` just after the last event, so every known event counts.
    """
    ids = customers["customer_id"] if customer_ids is None else pd.Series(list(customer_ids), dtype=object)
    if at is None:
        last = float(pd.to_numeric(events["time"]).max()) if len(events) else 0.0
        at = float(np.nextafter(last, np.inf))
    as_of = pd.DataFrame({"unit_id": ids.astype(str).to_numpy(), "customer_id": ids.astype(str).to_numpy()})
    as_of["time"] = float(at)
    return build_features(events, customers, as_of, indexes=indexes)
