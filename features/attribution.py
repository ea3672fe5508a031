"""Joining outcomes to decisions inside an attribution window, exactly once.

Rule (last touch): an outcome event of customer c at time ts belongs to the latest decision of c with
``decision.ts <= ts < decision.ts + window``. An event that names its decision (``decision_id``) belongs to that
decision when it falls inside its window. Events are deduplicated by ``event_id`` first, so an event delivered twice
counts once, and the join is a pure function of all decisions and events: running it again gives the same table, and
an event that arrives late (after an earlier join) is counted by the next join as long as its time falls inside the
window. Events outside every window are counted in the result's ``unattributed`` figure, never silently dropped.

Per decision the outcomes are: visit, buy and redeem (1 if any attributed event has them), spend (the sum), orders
(the attributed events with a purchase) and the number of attributed events. Decisions whose window has not closed
yet at ``as_of`` are marked ``open``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from offerlift.features.errors import SchemaError

DECISION_COLUMNS = ("decision_id", "customer_id", "ts")
EVENT_COLUMNS = ("event_id", "customer_id", "ts", "visit", "buy", "spend", "redeem")


@dataclass(frozen=True)
class Attribution:
    """The joined table (one row per decision, decisions' columns plus outcomes) and what could not be joined."""

    joined: pd.DataFrame
    unattributed: int
    duplicates: int


def _require(df: pd.DataFrame, table: str, columns: tuple[str, ...]) -> None:
    for col in columns:
        if col not in df.columns:
            raise SchemaError(table, col, f"missing column; the table has {list(df.columns)}")


def attribute(decisions: pd.DataFrame, events: pd.DataFrame, window: float, as_of: float | None = None) -> Attribution:
    """Join outcome events to decisions (times in the same unit as `window`, e.g. seconds)."""
    _require(decisions, "decisions", DECISION_COLUMNS)
    _require(events, "outcome events", EVENT_COLUMNS)
    n_raw = len(events)
    events = events.drop_duplicates("event_id", keep="first")
    duplicates = n_raw - len(events)
    d = decisions.sort_values(["customer_id", "ts"], kind="stable").reset_index(drop=True)
    e = events.sort_values(["customer_id", "ts"], kind="stable").reset_index(drop=True)
    owner = _owners(d, e, window)
    hit = owner >= 0
    agg = (
        e.loc[hit, ["visit", "buy", "spend", "redeem"]]
        .astype(float)
        .assign(_owner=owner[hit], _order=lambda f: (f["buy"] > 0).astype(float))
        .groupby("_owner")
        .agg(
            visit=("visit", "max"),
            buy=("buy", "max"),
            spend=("spend", "sum"),
            redeem=("redeem", "max"),
            orders=("_order", "sum"),
            events=("visit", "size"),
        )
    )
    joined = d.copy()
    cols = ["visit", "buy", "spend", "redeem", "orders", "events"]
    for col in cols:
        joined[col] = 0.0
    joined.loc[agg.index, cols] = agg[cols].to_numpy()
    joined["events"] = joined["events"].astype(np.int64)
    joined["open"] = False if as_of is None else (joined["ts"].to_numpy(dtype=float) + window > float(as_of))
    order = pd.Index(d["decision_id"]).get_indexer(decisions["decision_id"])
    joined = joined.iloc[order].reset_index(drop=True)
    return Attribution(joined=joined, unattributed=int((~hit).sum()), duplicates=int(duplicates))


def owners(decisions: pd.DataFrame, events: pd.DataFrame, window: float) -> np.ndarray:
    """For each event (row of `events`, in its order), the row of `decisions` it is attributed to, or -1: the
    decision it names when the event falls inside that decision's window, else the last touch (see the module
    doc). No deduplication: an event id listed twice gets the same owner twice."""
    _require(decisions, "decisions", DECISION_COLUMNS)
    _require(events, "outcome events", ("customer_id", "ts"))
    d = decisions.reset_index(drop=True)
    e = events.reset_index(drop=True)
    return _owners(d, e, window)


def _owners(d: pd.DataFrame, e: pd.DataFrame, window: float) -> np.ndarray:
    owner = _last_touch(d, e, window)
    if "decision_id" in e.columns:
        named = e["decision_id"].notna().to_numpy()
        pos = pd.Index(d["decision_id"]).get_indexer(e["decision_id"].where(named, None))
        ok = named & (pos >= 0)
        if ok.any():
            ts = e["ts"].to_numpy(dtype=float)
            start = d["ts"].to_numpy(dtype=float)[np.maximum(pos, 0)]
            inside = ok & (ts >= start) & (ts < start + window)
            owner = np.where(inside, pos, owner)
    return owner


def _last_touch(d: pd.DataFrame, e: pd.DataFrame, window: float) -> np.ndarray:
    """For each event (row of `e`), the row of `d` holding the latest decision of its customer at or before it and
    within the window, or -1."""
    if len(d) == 0 or len(e) == 0:
        return np.full(len(e), -1, dtype=np.int64)
    left = pd.DataFrame(
        {"customer_id": e["customer_id"].astype(str), "ts": e["ts"].astype(float), "_event": np.arange(len(e))}
    ).sort_values("ts", kind="stable")
    right = pd.DataFrame(
        {"customer_id": d["customer_id"].astype(str), "dts": d["ts"].astype(float), "_decision": np.arange(len(d))}
    ).sort_values("dts", kind="stable")
    m = pd.merge_asof(left, right, left_on="ts", right_on="dts", by="customer_id", direction="backward")
    owner = np.full(len(e), -1, dtype=np.int64)
    ok = m["_decision"].notna().to_numpy() & (m["ts"].to_numpy() < m["dts"].to_numpy() + window)
    owner[m["_event"].to_numpy()[ok]] = m["_decision"].to_numpy()[ok].astype(np.int64)
    return owner
