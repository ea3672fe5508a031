"""Outcomes into the decision log, the attribution join kept in the log, and the joined decisions read back.

Three steps, each safe to repeat (a second run changes nothing):

- `ingest_outcomes`: outcome events (a validated frame, e.g. from `offerlift.features.outcome_file`) go into the
  log's ``outcomes`` table through `DecisionLog.add_outcomes` (idempotent by ``event_id``). An event that names a
  decision the log does not have, or a decision of another customer, refuses the whole batch (nothing is stored)
  with an error naming the source, the column and the rows. Counts: ``new``, ``duplicate`` (already stored, or
  repeated in the batch), ``unattributed`` (new events inside no decision's window, kept but joined to nothing) and
  ``late`` (new events for a decision that was already joined: the next join adds them).
- `join`: the attribution join (`offerlift.features.attribution.attribute`: last touch inside ``window``; each
  event belongs to at most one decision) of every decision whose window has closed at ``as_of``, kept in the
  ``attributions`` table, one row per decision. A decision is inserted once; a later join changes its row only
  when its outcomes changed (late events, or another window), so running it again with the same data touches
  nothing.
- `joined_decisions`: the decisions of a campaign and period with their attributed outcomes, for the A/B report,
  off-policy evaluation and retraining.

Times are unix seconds, as in the decision log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from offerlift.features.attribution import attribute, owners
from offerlift.features.errors import ConfigError, SchemaError
from offerlift.serving.decision_log import DecisionLog
from offerlift.serving.decision_log import decisions as decision_table
from offerlift.serving.decision_log import outcomes as outcome_table

log = logging.getLogger(__name__)

HOUR = 3600.0
OUTCOMES = ("visit", "buy", "spend", "redeem", "orders", "events")

metadata = sa.MetaData()

attributions = sa.Table(
    "attributions",
    metadata,
    sa.Column("decision_id", sa.String(36), primary_key=True),
    sa.Column("window_s", sa.Float, nullable=False),
    sa.Column("visit", sa.Float, nullable=False),
    sa.Column("buy", sa.Float, nullable=False),
    sa.Column("spend", sa.Float, nullable=False),
    sa.Column("redeem", sa.Float, nullable=False),
    sa.Column("orders", sa.Float, nullable=False),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("joined_ts", sa.Float, nullable=False),
)


def ensure_tables(dlog: DecisionLog) -> None:
    """Create the ``attributions`` table next to the decision log's tables (no-op when it exists)."""
    metadata.create_all(dlog.engine)


@dataclass(frozen=True)
class IngestCounts:
    """What `ingest_outcomes` did with a batch of events."""

    source: str
    received: int
    new: int
    duplicate: int
    unattributed: int
    late: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass(frozen=True)
class JoinCounts:
    """What `join` did: decisions joined for the first time, changed, unchanged, still open, and events."""

    window_hours: float
    as_of: float
    joined: int
    updated: int
    unchanged: int
    open: int
    events_attributed: int
    events_unattributed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _check_window(window_s: float) -> float:
    if not (np.isfinite(window_s) and window_s > 0):
        raise ConfigError(f"the attribution window must be a positive number of hours, got {window_s / HOUR!r}")
    return float(window_s)


def _in_chunks(conn: sa.Connection, query: Any, column: Any, values: list[str], chunk: int = 500) -> pd.DataFrame:
    parts = [pd.read_sql(query.where(column.in_(values[i : i + chunk])), conn) for i in range(0, len(values), chunk)]
    return pd.concat(parts, ignore_index=True) if parts else pd.read_sql(query.where(sa.false()), conn)


def _decisions_of(conn: sa.Connection, customer_ids: Iterable[str]) -> pd.DataFrame:
    t = decision_table
    q = sa.select(t.c.decision_id, t.c.customer_id, t.c.ts)
    return _in_chunks(conn, q, t.c.customer_id, sorted(set(customer_ids)))


def _outcomes_of(conn: sa.Connection, customer_ids: Iterable[str]) -> pd.DataFrame:
    t = outcome_table
    q = sa.select(t.c.event_id, t.c.customer_id, t.c.ts, t.c.visit, t.c.buy, t.c.spend, t.c.redeem, t.c.decision_id)
    return _in_chunks(conn, q, t.c.customer_id, sorted(set(customer_ids)))


def _named_decisions(conn: sa.Connection, ids: list[str]) -> pd.DataFrame:
    t = decision_table
    return _in_chunks(conn, sa.select(t.c.decision_id, t.c.customer_id), t.c.decision_id, ids)


def _check_named(events: pd.DataFrame, known: pd.DataFrame, source: str) -> None:
    """SchemaError when an event names a decision the log does not have, or a decision of another customer."""
    named = events["decision_id"].notna().to_numpy()
    if not named.any():
        return
    owner = pd.Series(known["customer_id"].to_numpy(), index=known["decision_id"].to_numpy())
    who = owner.reindex(events["decision_id"].where(named, None)).to_numpy()
    unknown = named & pd.isna(who)
    if unknown.any():
        first = events["decision_id"][unknown].iloc[0]
        raise SchemaError(
            source,
            "decision_id",
            f"{int(unknown.sum())} events name decisions that are not in the decision log (e.g. {first!r}); "
            "nothing was stored",
            (np.flatnonzero(unknown)[:5] + 1).tolist(),
        )
    other = named & (who != events["customer_id"].to_numpy())
    if other.any():
        raise SchemaError(
            source,
            "customer_id",
            f"{int(other.sum())} events name a decision of another customer; nothing was stored",
            (np.flatnonzero(other)[:5] + 1).tolist(),
        )


def ingest_outcomes(dlog: DecisionLog, events: pd.DataFrame, source: str, window_s: float) -> IngestCounts:
    """Store a batch of outcome events (see the module doc); `source` names the batch in errors (e.g. the file)."""
    window_s = _check_window(window_s)
    ensure_tables(dlog)
    received = len(events)
    if received == 0:
        return IngestCounts(source, 0, 0, 0, 0, 0)
    events = events.reset_index(drop=True)
    if "decision_id" not in events:
        events = events.assign(decision_id=None)
    with dlog.engine.connect() as conn:
        named = sorted(set(events["decision_id"].dropna().astype(str)))
        _check_named(events, _named_decisions(conn, named), source)
        ids = sorted(set(events["event_id"]))
        known = set(_in_chunks(conn, sa.select(outcome_table.c.event_id), outcome_table.c.event_id, ids)["event_id"])
        fresh = events[~events["event_id"].isin(known)].drop_duplicates("event_id", keep="first")
        decisions = _decisions_of(conn, fresh["customer_id"])
        owner = owners(decisions, fresh, window_s) if len(fresh) else np.zeros(0, dtype=np.int64)
        owner_ids = decisions["decision_id"].to_numpy()[np.maximum(owner, 0)] if len(decisions) else owner
        attributed = owner >= 0
        joined = set()
        if attributed.any():
            a = attributions.c.decision_id
            wanted = sorted(set(owner_ids[attributed].tolist()))
            joined = set(_in_chunks(conn, sa.select(a), a, wanted)["decision_id"])
    late = int(sum(1 for ok, d in zip(attributed, owner_ids, strict=True) if ok and d in joined))
    new = dlog.add_outcomes(fresh.to_dict(orient="records")) if len(fresh) else 0
    counts = IngestCounts(source, received, new, received - len(fresh), int((~attributed).sum()), late)
    log.info("outcomes from %s: %s", source, counts)
    return counts


def join(dlog: DecisionLog, window_s: float, as_of: float | None = None) -> JoinCounts:
    """Join every decision whose window closed by `as_of` (default now) and keep the result (module doc)."""
    window_s = _check_window(window_s)
    ensure_tables(dlog)
    as_of = time.time() if as_of is None else float(as_of)
    d, o = decision_table, outcome_table
    with dlog.engine.connect() as conn:
        decisions = pd.read_sql(sa.select(d.c.decision_id, d.c.customer_id, d.c.ts).where(d.c.ts <= as_of), conn)
        q = sa.select(o.c.event_id, o.c.customer_id, o.c.ts, o.c.visit, o.c.buy, o.c.spend, o.c.redeem, o.c.decision_id)
        events = pd.read_sql(q, conn)
        stored = pd.read_sql(sa.select(attributions), conn).set_index("decision_id")
    att = attribute(decisions, events, window_s, as_of=as_of)
    rows = att.joined
    closed = rows[~rows["open"].to_numpy(dtype=bool)].set_index("decision_id")
    closed = closed.assign(window_s=window_s)
    cols = ["window_s", *OUTCOMES]
    present = closed.index.isin(stored.index)
    new = closed[~present]
    old = closed[present]
    if len(old):
        before = stored.loc[old.index, cols].to_numpy(dtype=float)
        changed = ~np.isclose(old[cols].to_numpy(dtype=float), before, rtol=1e-12, atol=1e-9).all(axis=1)
        old = old[changed]
    now = time.time()
    with dlog.engine.begin() as conn:
        if len(new):
            conn.execute(attributions.insert(), _records(new, cols, now))
        if len(old):
            upd = (
                attributions.update()
                .where(attributions.c.decision_id == sa.bindparam("b_decision_id"))
                .values({c: sa.bindparam(f"b_{c}") for c in (*cols, "joined_ts")})
            )
            conn.execute(upd, [{f"b_{k}": v for k, v in r.items()} for r in _records(old, cols, now)])
    hit = int(rows["events"].sum())
    counts = JoinCounts(
        window_hours=window_s / HOUR,
        as_of=as_of,
        joined=len(new),
        updated=len(old),
        unchanged=int(present.sum()) - len(old),
        open=int(rows["open"].sum()),
        events_attributed=hit,
        events_unattributed=att.unattributed,
    )
    log.info("attribution join: %s", counts)
    return counts


def _records(frame: pd.DataFrame, cols: list[str], now: float) -> list[dict[str, Any]]:
    out = []
    values = frame[cols].to_numpy(dtype=float)
    for did, row in zip(frame.index, values, strict=True):
        rec: dict[str, Any] = {"decision_id": str(did), "joined_ts": now}
        rec.update({c: float(v) for c, v in zip(cols, row, strict=True)})
        rec["events"] = int(rec["events"])
        out.append(rec)
    return out


def joined_decisions(
    dlog: DecisionLog,
    campaign: str | None = None,
    start: float | None = None,
    end: float | None = None,
) -> tuple[pd.DataFrame, int]:
    """(the joined decisions of a campaign in ``[start, end)``, the number of that period's decisions not yet
    joined). The frame has every column of the decision log plus the attributed outcomes and ``window_s``."""
    ensure_tables(dlog)
    d, a = decision_table, attributions
    cond = []
    if campaign is not None:
        cond.append(d.c.campaign == campaign)
    if start is not None:
        cond.append(d.c.ts >= float(start))
    if end is not None:
        cond.append(d.c.ts < float(end))
    where = sa.and_(sa.true(), *cond)
    q = (
        sa.select(d, *[a.c[c] for c in ("window_s", *OUTCOMES)])
        .select_from(d.join(a, a.c.decision_id == d.c.decision_id))
        .where(where)
        .order_by(d.c.ts, d.c.decision_id)
    )
    total = sa.select(sa.func.count()).select_from(d).where(where)
    with dlog.engine.connect() as conn:
        frame = pd.read_sql(q, conn)
        n_all = int(conn.execute(total).scalar_one())
    return frame, n_all - len(frame)


def campaigns(dlog: DecisionLog) -> pd.DataFrame:
    """Every campaign in the log with its decisions and first and last decision time."""
    d = decision_table
    q = sa.select(
        d.c.campaign, sa.func.count().label("decisions"), sa.func.min(d.c.ts).label("first_ts"),
        sa.func.max(d.c.ts).label("last_ts"),
    ).group_by(d.c.campaign)  # fmt: skip
    with dlog.engine.connect() as conn:
        return pd.read_sql(q, conn)
