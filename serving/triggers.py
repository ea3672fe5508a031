"""Real-time triggers: event rules over a stream call the decision policy and send through a channel adapter.

Rules (:class:`TriggerRule`, `offerlift.serving.trigger_rules`) arm a timer per customer on a start event and fire it
after a wait unless a cancel event came first, e.g. "active in the app and no order within 5 minutes"
(:data:`ACTIVE_NO_ORDER`) or "new customer with no first order after 3 days" (:data:`NEW_NO_FIRST_ORDER`;
:func:`signup_events` makes its start events from ``customers.signup_time``). Events follow the canonical contract
(`offerlift.features.build`); the activity kinds ``app_open`` and ``signup`` are part of it. Times are hours, as in
the events.

:class:`TriggerEngine` evaluates the rules: `on_event` (one event) fires the timers due before the event and
then applies it; `feed` does the same for a batch in time order, in one state transaction (the service's
``POST /events``); `advance` fires the timers due by a time (``POST /events/flush`` and the service's tick);
:func:`replay` runs a whole event file or frame. A firing passes, in order: the rule's cooldown per customer, the
engine's contact cap per customer (sent messages in a window), the decision (any ``decide(customer_id,
context)``: the service's `offerlift.serving.decider.Decider.decide`, or
`offerlift.serving.trigger_decide.PolicyDecider` around the pure policy), a channel check (the rule's channels and
arms) and a consent check (the customers' consent flags, when the engine has them) before the channel adapter
(`offerlift.serving.trigger_channels`) sends. Each firing is returned and kept in ``engine.firings`` (the last `keep`
of them) with its status: ``sent``, ``no_offer``, ``cooldown``, ``capped``, ``blocked_channel``, ``blocked_consent``
or ``failed``.

The state (timers, buyers, last firings, sent messages, the stream's clock) lives in memory by default, or in
SQLite (`offerlift.serving.trigger_state.SqliteState`) when several processes share it. Events older than the stream's
time are refused (``late="reject"``, replays) or applied without moving the clock (``late="apply"``, the
service: a late order still cancels a timer that has not fired yet).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.errors import ConfigError, DataError, SchemaError
from offerlift.features.schema import timed_table
from offerlift.serving.trigger_channels import (
    ChannelAdapter,
    FileAdapter,
    LogAdapter,
    Message,
    RoutingAdapter,
    SendResult,
    make_adapter,
)
from offerlift.serving.trigger_decide import (
    Decide,
    PolicyDecider,
    Scores,
    TriggerDecision,
    as_decision,
    constant_scores,
)
from offerlift.serving.trigger_rules import ACTIVE_NO_ORDER, NEW_NO_FIRST_ORDER, TriggerRule, load_trigger_rules
from offerlift.serving.trigger_state import MemoryState, SqliteState, Timer, TriggerState

__all__ = [
    "ACTIVE_NO_ORDER",
    "NEW_NO_FIRST_ORDER",
    "ChannelAdapter",
    "Decide",
    "FeedResult",
    "FileAdapter",
    "Firing",
    "LogAdapter",
    "MemoryState",
    "Message",
    "PolicyDecider",
    "RoutingAdapter",
    "Scores",
    "SendResult",
    "SqliteState",
    "TriggerDecision",
    "TriggerEngine",
    "TriggerRule",
    "TriggerState",
    "as_decision",
    "constant_scores",
    "firings_frame",
    "load_trigger_rules",
    "make_adapter",
    "read_events",
    "replay",
    "signup_events",
]

log = logging.getLogger(__name__)

HOUR_S = 3600.0
LATE = ("reject", "apply")


@dataclass
class Firing:
    """One timer that came due, and what happened to it."""

    trigger: str
    customer_id: str
    armed_at: float
    time: float
    status: str
    arm: str | None = None
    channel: str | None = None
    offer_id: str | None = None
    decision_id: str | None = None
    detail: str = ""


@dataclass
class FeedResult:
    """What a batch of events did: events applied, how many of them were late, and the firings."""

    accepted: int = 0
    late: int = 0
    firings: list[Firing] = field(default_factory=list)


class TriggerEngine:
    """Evaluates trigger rules over a stream of events (see the module doc). Thread-safe.

    Args:
        rules: the trigger rules (unique names).
        decide: ``decide(customer_id, context)``; the context has ``timestamp`` (unix seconds = hours x 3600),
            ``time`` (hours), ``trigger``, ``channels``, ``arms`` and ``contacts`` (messages sent per channel in
            the cap window).
        adapter: sends the messages (default: :class:`LogAdapter`).
        customers: consent flags per customer (index or column customer_id): a channel whose consent flag
            (``consent_<channel>``) is false is never sent to, whatever the decision says.
        cap_per_customer: most trigger messages per customer in ``cap_window_hours`` (None: no cap).
        cap_window_hours: window of the cap and of ``context["contacts"]``.
        state: where timers and the rest live (default: a new :class:`MemoryState`).
        has_bought: optional ``customer_id -> bool`` for buyers the stream has not shown (e.g. the online store's
            purchase count); ``first_order_only`` rules skip them.
        keep: how many recent firings ``engine.firings`` keeps (None: all).
    """

    def __init__(
        self,
        rules: Sequence[TriggerRule],
        decide: Decide,
        adapter: ChannelAdapter | None = None,
        customers: pd.DataFrame | None = None,
        cap_per_customer: int | None = 2,
        cap_window_hours: float = 24.0,
        state: TriggerState | None = None,
        has_bought: Callable[[str], bool] | None = None,
        keep: int | None = None,
    ):
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ConfigError(f"trigger names must be unique, got {names}")
        self.rules = list(rules)
        self.decide = decide
        self.adapter = adapter or LogAdapter()
        self.consent = _consent_table(customers)
        self.cap_per_customer = cap_per_customer
        self.cap_window_hours = float(cap_window_hours)
        self.state: TriggerState = state if state is not None else MemoryState()
        self.has_bought = has_bought
        self.firings: deque[Firing] = deque(maxlen=keep)
        self._by_name = {r.name: r for r in self.rules}
        self._starts = _by_kind(self.rules, "start")
        self._cancels = _by_kind(self.rules, "cancel")
        self._track_buyers = any(r.first_order_only for r in self.rules)

    def prime(self, events: pd.DataFrame) -> int:
        """Remember the customers who already bought (history before the stream); returns how many were given."""
        tx = events.loc[events["event"] == "transaction", "customer_id"].astype(str).unique()
        with self.state.transaction():
            self.state.add_buyers(tx)
        return len(tx)

    @property
    def pending(self) -> int:
        """Armed timers."""
        with self.state.transaction():
            return self.state.pending()

    @property
    def now(self) -> float:
        """The stream's time (-inf before the first event)."""
        with self.state.transaction():
            return self.state.get_now()

    def on_event(self, event: Mapping[str, Any], late: str = "reject") -> list[Firing]:
        """Fire the timers due before the event's time, then apply the event; returns the firings."""
        return self.feed([event], late).firings

    def feed(self, events: Iterable[Mapping[str, Any]], late: str = "reject") -> FeedResult:
        """Apply events in time order (stable), each after the timers due before it fired, in one transaction.

        `late`: ``reject`` raises DataError for an event older than the stream's time (nothing of the batch is
        applied with a SQLite state; a memory state keeps what came before it); ``apply`` applies it without
        firing anything or moving the clock, and counts it.
        """
        return self._feed_rows(sorted((_parse(e) for e in events), key=lambda r: r[1]), late)

    def _feed_rows(self, rows: list[tuple[str, float, str]], late: str) -> FeedResult:
        """`feed` for (customer id, time, kind) rows already in time order."""
        if late not in LATE:
            raise ConfigError(f"late must be one of {LATE}, got {late!r}")
        out = FeedResult()
        with self.state.transaction():
            s = self.state
            now, next_due = s.get_now(), s.next_due()
            for cid, t, kind in rows:
                if t < now:
                    if late == "reject":
                        raise DataError(f"event at {t} is older than the stream's time {now}; replay in time order")
                    out.late += 1
                elif next_due < t:
                    out.firings += self._fire_until(t, inclusive=False)
                    next_due = s.next_due()
                next_due = min(next_due, self._apply(cid, t, kind))
                now = max(now, t)
                out.accepted += 1
            if rows:
                s.set_now(now)
        return out

    def advance(self, now: float) -> list[Firing]:
        """Fire every timer due at or before `now` (the caller promises no more events at or before `now`)."""
        with self.state.transaction():
            out = self._fire_until(float(now), inclusive=True)
            if float(now) > self.state.get_now():
                self.state.set_now(float(now))
            return out

    def _apply(self, cid: str, t: float, kind: str) -> float:
        """Apply one event; returns the earliest due time it armed (inf when none)."""
        s, first = self.state, math.inf
        for rule in self._cancels.get(kind, ()):
            s.disarm(rule.name, cid)
        starts = self._starts.get(kind, ())
        if starts:
            bought = None
            for rule in starts:
                if rule.first_order_only:
                    bought = self._bought(cid) if bought is None else bought
                    if bought:
                        continue
                s.arm(rule.name, cid, t + rule.wait_hours, t, rule.restart)
                first = min(first, t + rule.wait_hours)
        if kind == "transaction" and self._track_buyers:
            s.add_buyers((cid,))
        return first

    def _bought(self, cid: str) -> bool:
        if self.state.is_buyer(cid):
            return True
        return bool(self.has_bought is not None and self.has_bought(cid))

    def _fire_until(self, t: float, inclusive: bool) -> list[Firing]:
        out = []
        for timer in self.state.pop_due(t, inclusive):
            rule = self._by_name.get(timer.rule)
            if rule is None:  # armed under a configuration that no longer has the rule
                log.info("trigger %r is not configured any more: its due timer is dropped", timer.rule)
                continue
            out.append(self._fire(rule, timer))
        return out

    def _fire(self, rule: TriggerRule, timer: Timer) -> Firing:
        s, cid, due = self.state, timer.customer_id, timer.due
        firing = Firing(rule.name, cid, timer.armed_at, due, "cooldown")
        last = s.last_fired(rule.name, cid)
        if last is not None and due - last < rule.cooldown_hours:
            return self._keep(firing)
        sent = s.sent_since(cid, due - self.cap_window_hours)
        if self.cap_per_customer is not None and len(sent) >= self.cap_per_customer:
            firing.status = "capped"
            return self._keep(firing)
        s.set_fired(rule.name, cid, due)
        contacts: dict[str, int] = {}
        for _, ch in sent:
            contacts[ch] = contacts.get(ch, 0) + 1
        context = {
            "timestamp": due * HOUR_S,
            "time": due,
            "trigger": rule.name,
            "channels": list(rule.channels) or None,
            "arms": list(rule.arms),
            "contacts": contacts,
        }
        try:
            d = as_decision(self.decide(cid, context))
        except Exception as exc:  # one failed decision must not lose the other timers of the batch
            log.warning("trigger %s: the decision failed: %s", rule.name, exc)
            firing.status, firing.detail = "failed", f"decision: {exc}"
            return self._keep(firing)
        firing.arm, firing.channel, firing.offer_id, firing.decision_id = d.arm, d.channel, d.offer_id, d.decision_id
        firing.status = self._check(rule, cid, d)
        if firing.status == "sent":
            result = self.adapter.send(Message(cid, str(d.channel), d.arm, d.offer_id, d.decision_id, rule.name, due))
            firing.status, firing.detail = result.status, result.detail
            if result.status == "sent":
                s.add_sent(cid, due, str(d.channel))
        return self._keep(firing)

    def _check(self, rule: TriggerRule, cid: str, d: TriggerDecision) -> str:
        if d.channel is None or d.offer_id is None:
            return "no_offer"
        if (rule.channels and d.channel not in rule.channels) or (rule.arms and d.arm not in rule.arms):
            return "blocked_channel"
        if self.consent is not None:
            col = f"consent_{d.channel}"
            if col in self.consent.columns and not bool(self.consent[col].get(cid, False)):
                return "blocked_consent"
        return "sent"

    def _keep(self, firing: Firing) -> Firing:
        self.firings.append(firing)
        log.debug("trigger %s fired at %.3f: %s", firing.trigger, firing.time, firing.status)
        return firing


def _by_kind(rules: Sequence[TriggerRule], attr: str) -> dict[str, tuple[TriggerRule, ...]]:
    out: dict[str, list[TriggerRule]] = {}
    for rule in rules:
        for kind in getattr(rule, attr):
            out.setdefault(kind, []).append(rule)
    return {k: tuple(v) for k, v in out.items()}


def _parse(event: Mapping[str, Any]) -> tuple[str, float, str]:
    try:
        cid, t, kind = str(event["customer_id"]), float(event["time"]), str(event["event"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError("events", None, f"an event needs customer_id, time and event: {exc}") from None
    if not math.isfinite(t):
        raise SchemaError("events", "time", f"time must be finite, got {t}")
    return cid, t, kind


def _consent_table(customers: pd.DataFrame | None) -> pd.DataFrame | None:
    if customers is None:
        return None
    table = customers.set_index("customer_id") if "customer_id" in customers.columns else customers
    cols = [c for c in table.columns if str(c).startswith("consent_")]
    table = table[cols].fillna(False).astype(bool)
    table.index = table.index.astype(str)
    return table


def signup_events(customers: pd.DataFrame, start: float = -np.inf, end: float = np.inf) -> pd.DataFrame:
    """``signup`` events at ``customers.signup_time`` in [start, end), in the events' columns."""
    if "signup_time" not in customers.columns:
        raise SchemaError("customers", "signup_time", "needed to make signup events")
    t = pd.to_numeric(customers["signup_time"], errors="coerce")
    sel = customers.loc[(t >= start) & (t < end)]
    return pd.DataFrame(
        {
            "customer_id": sel["customer_id"].astype(str).to_numpy(),
            "time": t[sel.index].to_numpy(dtype=float),
            "event": "signup",
            "amount": 0.0,
            "offer_id": None,
            "reward": 0.0,
            "channel": None,
        }
    )


def read_events(path: str | Path) -> pd.DataFrame:
    """An event file: .parquet, .csv or .jsonl (one JSON object per line)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"event file {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix in (".jsonl", ".ndjson", ".json"):
        return pd.read_json(path, lines=True)
    raise DataError(f"event file {str(path)!r}: use .parquet, .csv or .jsonl")


def replay(events: pd.DataFrame | str | Path, engine: TriggerEngine, until: float | None = None) -> pd.DataFrame:
    """Feed events in time order (stable) to the engine, then advance to `until` (default: the last event).

    Returns the firings of this replay as a frame.
    """
    frame = read_events(events) if isinstance(events, str | Path) else events
    time = timed_table(frame, "events", ("customer_id", "time", "event"))
    order = np.argsort(time, kind="stable")
    ids = frame["customer_id"].astype(str).to_numpy(dtype=object)[order]
    kinds = frame["event"].astype(str).to_numpy(dtype=object)[order]
    fired = engine._feed_rows(list(zip(ids.tolist(), time[order].tolist(), kinds.tolist(), strict=True)), "reject")
    last = float(time.max()) if time.size else -np.inf
    fired.firings += engine.advance(last if until is None else float(until))
    return firings_frame(fired.firings)


def firings_frame(firings: Iterable[Firing]) -> pd.DataFrame:
    """Firings as a frame (one row each)."""
    cols = list(Firing.__dataclass_fields__)
    return pd.DataFrame([asdict(f) for f in firings], columns=cols)
