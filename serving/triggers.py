"""Real-time triggers: event rules over a stream call the decision policy and send through a channel adapter.

A :class:`TriggerRule` arms a timer for a customer on a *start* event and fires it ``wait_hours`` later unless a
*cancel* event (by default a transaction) came first, e.g.

- "active in the app and no order within 5 minutes": start ``app_open``, wait 5/60 h (:data:`ACTIVE_NO_ORDER`);
- "new customer with no first order after 3 days": start ``signup``, wait 72 h, only for customers who never
  bought (:data:`NEW_NO_FIRST_ORDER`; :func:`signup_events` makes the start events from ``customers.signup_time``).

Triggers read the canonical events plus two activity kinds the canonical contract does not have yet: ``app_open``
(the customer is active in the app) and ``signup``. Times are hours, as in the events.

:class:`TriggerEngine` evaluates the rules: `on_event` (one event, for the service's endpoint) fires the timers
due before the event and then applies it; `advance` fires the timers due by a time; :func:`replay` runs a whole
event file or frame. A firing passes, in order: the rule's cooldown per customer, the engine's contact cap per
customer (sent messages in a window), the decision (any ``decide(customer_id, context)``: the service's
`serving.decider.Decider.decide`, or :class:`PolicyDecider` around the pure policy), a channel check (the rule's
channels) and a consent check (the customers' consent flags, when the engine has them) before the channel
adapter sends. Each firing is returned and kept in ``engine.firings`` with its status: ``sent``, ``no_offer``,
``cooldown``, ``capped``, ``blocked_channel``, ``blocked_consent`` or ``failed``.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from features.catalog import Catalog
from features.errors import ConfigError, DataError, SchemaError
from serving.policy import PolicyConfig, decide, holdout_unit
from serving.rules import Rules, allowed_arms

log = logging.getLogger(__name__)

HOUR_S = 3600.0


@dataclass(frozen=True)
class TriggerRule:
    """An event rule (see the module doc).

    Attributes:
        start: event kinds that arm the timer.
        wait_hours: the timer fires this long after the start unless cancelled.
        cancel: event kinds that disarm the customer's timer.
        first_order_only: only customers with no transaction seen so far (the "new customer" rules).
        restart: a start event while armed restarts the wait (default: the first start counts).
        cooldown_hours: at most one firing per customer and rule in this time.
        channels: channels the rule may send on (empty: any); passed to the decision as ``context["channels"]``.
        arms: arms the rule may send (empty: any); passed as ``context["arms"]``.
    """

    name: str
    start: tuple[str, ...]
    wait_hours: float
    cancel: tuple[str, ...] = ("transaction",)
    first_order_only: bool = False
    restart: bool = False
    cooldown_hours: float = 24.0
    channels: tuple[str, ...] = ()
    arms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.start or self.wait_hours < 0 or self.cooldown_hours < 0:
            raise ConfigError(f"trigger {self.name!r}: needs start events, wait_hours >= 0 and cooldown_hours >= 0")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TriggerRule:
        """Build from YAML; ``wait_minutes`` may replace ``wait_hours``; ConfigError names unknown keys."""
        d = dict(d)
        if "wait_minutes" in d:
            d["wait_hours"] = float(d.pop("wait_minutes")) / 60.0
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"trigger: unknown keys {unknown}; known keys are {sorted(cls.__dataclass_fields__)}")
        for key in ("start", "cancel", "channels", "arms"):
            if key in d:
                d[key] = (d[key],) if isinstance(d[key], str) else tuple(d[key] or ())
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"trigger {d!r}: {exc}") from None


ACTIVE_NO_ORDER = TriggerRule("active_no_order", start=("app_open",), wait_hours=5 / 60, channels=("push", "sms"))
NEW_NO_FIRST_ORDER = TriggerRule(
    "new_no_first_order", start=("signup",), wait_hours=72.0, first_order_only=True, cooldown_hours=24.0 * 365
)


def load_trigger_rules(path: str | Path) -> list[TriggerRule]:
    """Rules from a YAML file with a ``triggers:`` list."""
    import yaml

    try:
        spec = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read trigger rules {str(path)!r}: {exc}") from exc
    if not isinstance(spec, Mapping) or not isinstance(spec.get("triggers"), list):
        raise ConfigError(f"trigger rules {str(path)!r}: expected a mapping with a 'triggers' list")
    return [TriggerRule.from_dict(r) for r in spec["triggers"]]


@dataclass(frozen=True)
class Message:
    """What a channel adapter sends."""

    customer_id: str
    channel: str
    arm: str
    offer_id: str | None
    decision_id: str | None
    trigger: str
    time: float


@dataclass(frozen=True)
class SendResult:
    """The adapter's answer: ``sent`` or ``failed`` and a detail."""

    status: str
    detail: str = ""


class ChannelAdapter(Protocol):
    """Sends one message on its channel."""

    def send(self, message: Message) -> SendResult: ...


class FileAdapter:
    """Appends each message as one JSON line to a file (the embedded default: an outbox another system reads)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def send(self, message: Message) -> SendResult:
        with self._lock, self.path.open("a") as fh:
            fh.write(json.dumps(asdict(message)) + "\n")
        return SendResult("sent", str(self.path))


class LogAdapter:
    """Logs each message (a dry run)."""

    def send(self, message: Message) -> SendResult:
        log.info("trigger %s -> %s on %s (%s)", message.trigger, message.arm, message.channel, message.decision_id)
        return SendResult("sent", "log")


class RoutingAdapter:
    """Sends each message with the adapter of its channel, else with the default adapter."""

    def __init__(self, by_channel: Mapping[str, ChannelAdapter], default: ChannelAdapter | None = None):
        self.by_channel = dict(by_channel)
        self.default = default or LogAdapter()

    def send(self, message: Message) -> SendResult:
        return self.by_channel.get(message.channel, self.default).send(message)


@dataclass(frozen=True)
class TriggerDecision:
    """The part of a decision a trigger needs."""

    arm: str
    channel: str | None
    offer_id: str | None
    decision_id: str | None = None


def as_decision(d: Any) -> TriggerDecision:
    """A TriggerDecision from the service's Decision, a mapping, or a TriggerDecision."""
    if isinstance(d, TriggerDecision):
        return d
    get = d.get if isinstance(d, Mapping) else lambda k, default=None: getattr(d, k, default)
    return TriggerDecision(str(get("arm")), get("channel"), get("offer_id"), get("decision_id"))


Decide = Callable[[str, Mapping[str, Any]], Any]
Scores = Callable[[list[str], float], tuple[np.ndarray, np.ndarray]]


class PolicyDecider:
    """``decide(customer_id, context)`` (and `decide_many`) with the pure policy, the rules and an optional mask.

    Args:
        catalog: the arms.
        customers: attributes per customer (index customer_id): consent/reach flags, city, tier, lifecycle_stage.
        scores: (customer ids, time) -> (incremental profit, expected cost), each (n, K).
        rules: eligibility, consent and caps (caps count ``context["contacts"]``: sent messages per channel).
        policy: holdout and exploration shares (default: none, a pure greedy choice).
        extra_mask: optional (customer ids) -> (n, K) bool, e.g. rows of `features.abuse.abuse_mask`.
        seed: seed of the exploration draws.
    """

    def __init__(
        self,
        catalog: Catalog,
        customers: pd.DataFrame,
        scores: Scores,
        rules: Rules = Rules(),
        policy: PolicyConfig = PolicyConfig(holdout=0.0, explore=0.0),
        extra_mask: Callable[[list[str]], np.ndarray] | None = None,
        seed: int = 0,
    ):
        self.catalog, self.customers, self.scores, self.rules, self.policy = catalog, customers, scores, rules, policy
        self.extra_mask = extra_mask
        self._rng = np.random.default_rng(seed)
        self._n = 0
        self._worst = np.array([0.0 if a.is_control else a.redeem_cost + a.contact_cost for a in catalog.arms])
        self._subset: dict[tuple, np.ndarray] = {}
        self._columns: dict[str, np.ndarray] | None = None
        self._pos: dict[str, int] = {}

    def __call__(self, customer_id: str, context: Mapping[str, Any]) -> TriggerDecision:
        arm_idx, _ = self._decide([str(customer_id)], context)
        arm = self.catalog.arms[int(arm_idx[0])]
        return TriggerDecision(
            arm.id,
            None if arm.channel is None else arm.channel.id,
            None if arm.offer is None else arm.offer.id,
            f"pd-{self._n:08d}",
        )

    def _arm_subset(self, arms: Sequence[str], channels: Sequence[str]) -> np.ndarray:
        key = (tuple(arms), tuple(channels))
        if key not in self._subset:
            ok = [
                a.is_control
                or (
                    (not arms or a.id in arms)
                    and (not channels or (a.channel is not None and a.channel.id in channels))
                )
                for a in self.catalog.arms
            ]
            self._subset[key] = np.array(ok, dtype=bool)
        return self._subset[key]

    def _attributes(self, ids: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Attribute columns of `ids` (None for unknown customers) and which ids are known, without pandas."""
        if self._columns is None:
            self._columns = {str(c): self.customers[c].to_numpy(dtype=object) for c in self.customers.columns}
            self._pos = {str(c): i for i, c in enumerate(self.customers.index)}
        pos = np.array([self._pos.get(c, -1) for c in ids], dtype=np.int64)
        known = pos >= 0
        cols = {k: np.where(known, v[np.maximum(pos, 0)], None) for k, v in self._columns.items()}
        return cols, known

    def _decide(self, ids: list[str], context: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        n = len(ids)
        attrs, known = self._attributes(ids)
        contacts = {ch: np.full(n, c) for ch, c in (context.get("contacts") or {}).items()}
        mask = allowed_arms(self.catalog, attrs, n, self.rules, contacts)
        channels = context.get("channels") or ([context["channel"]] if context.get("channel") else [])
        mask &= self._arm_subset(context.get("arms") or (), channels)[None, :]
        mask[~known, 1:] = False
        if self.extra_mask is not None and n:
            mask &= self.extra_mask(ids)
        incr, cost = self.scores(ids, float(context.get("time", 0.0))) if n else (np.zeros((0, mask.shape[1])),) * 2
        hu = holdout_unit(ids, self.policy.experiment)
        d = decide(incr, cost, mask, hu, self._rng.random((n, 2)), self.policy)
        self._n += n
        return d.arm, d.incr

    def decide_many(self, customer_ids: Sequence[str], context: Mapping[str, Any]) -> pd.DataFrame:
        """One decision per customer: customer_id, arm, channel, offer_id, decision_id, cost (worst case), incr.

        Unknown customers get no offer. ``context`` keys: time, arms, channels (or channel), contacts.
        """
        ids = [str(c) for c in customer_ids]
        first = self._n + 1
        arm_idx, incr = self._decide(ids, context)
        arms = [self.catalog.arms[j] for j in arm_idx]
        return pd.DataFrame(
            {
                "customer_id": ids,
                "arm": [a.id for a in arms],
                "channel": [None if a.channel is None else a.channel.id for a in arms],
                "offer_id": [None if a.offer is None else a.offer.id for a in arms],
                "decision_id": [f"pd-{k:08d}" for k in range(first, first + len(ids))],
                "cost": self._worst[arm_idx],
                "incr": incr,
            }
        )


def constant_scores(catalog: Catalog, values: Mapping[str, float]) -> Scores:
    """Scores that give every customer the same incremental profit per arm (rule-based campaigns): unlisted arms 0."""
    unknown = sorted(set(values) - set(catalog.arm_ids))
    if unknown:
        raise ConfigError(f"constant scores name unknown arms {unknown}")
    row = np.array([float(values.get(a, 0.0)) for a in catalog.arm_ids])
    cost = np.array([a.redeem_cost + a.contact_cost for a in catalog.arms])

    def scores(ids: list[str], time: float) -> tuple[np.ndarray, np.ndarray]:
        return np.tile(row, (len(ids), 1)), np.tile(cost, (len(ids), 1))

    return scores


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
class _State:
    timers: list[tuple[float, int, int, str]] = field(default_factory=list)
    armed: dict[tuple[int, str], tuple[float, float]] = field(default_factory=dict)  # -> (due, armed_at)
    bought: set[str] = field(default_factory=set)
    last_fired: dict[tuple[int, str], float] = field(default_factory=dict)
    sent: dict[str, deque[tuple[float, str]]] = field(default_factory=dict)
    seq: int = 0
    now: float = -np.inf


class TriggerEngine:
    """Evaluates trigger rules over a stream of events (see the module doc). Thread-safe.

    Args:
        rules: the trigger rules.
        decide: ``decide(customer_id, context)``; the context has ``timestamp`` (unix seconds = hours x 3600),
            ``time`` (hours), ``trigger``, ``channels``, ``arms`` and ``contacts`` (messages sent per channel in
            the cap window).
        adapter: sends the messages (default: :class:`LogAdapter`).
        customers: consent flags per customer (index or column customer_id): a channel whose consent flag
            (``consent_<channel>``) is false is never sent to, whatever the decision says.
        cap_per_customer: most trigger messages per customer in ``cap_window_hours`` (None: no cap).
        cap_window_hours: window of the cap and of ``context["contacts"]``.
    """

    def __init__(
        self,
        rules: Sequence[TriggerRule],
        decide: Decide,
        adapter: ChannelAdapter | None = None,
        customers: pd.DataFrame | None = None,
        cap_per_customer: int | None = 2,
        cap_window_hours: float = 24.0,
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
        self.firings: list[Firing] = []
        self._s = _State()
        self._lock = threading.Lock()

    def prime(self, events: pd.DataFrame) -> int:
        """Remember the customers who already bought (history before the stream); returns how many."""
        tx = events.loc[events["event"] == "transaction", "customer_id"].astype(str)
        self._s.bought.update(tx.unique())
        return len(self._s.bought)

    @property
    def pending(self) -> int:
        """Armed timers."""
        return len(self._s.armed)

    def on_event(self, event: Mapping[str, Any]) -> list[Firing]:
        """Fire the timers due before the event's time, then apply the event; returns the firings."""
        try:
            cid, t, kind = str(event["customer_id"]), float(event["time"]), str(event["event"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError("events", None, f"an event needs customer_id, time and event: {exc}") from None
        with self._lock:
            if t < self._s.now:
                raise DataError(f"event at {t} is older than the stream's time {self._s.now}; replay in time order")
            out = self._fire_until(t, inclusive=False)
            self._apply(cid, t, kind)
            self._s.now = t
            return out

    def advance(self, now: float) -> list[Firing]:
        """Fire every timer due at or before `now` (the caller promises no more events at or before `now`)."""
        with self._lock:
            out = self._fire_until(float(now), inclusive=True)
            self._s.now = max(self._s.now, float(now))
            return out

    def _apply(self, cid: str, t: float, kind: str) -> None:
        s = self._s
        for i, rule in enumerate(self.rules):
            key = (i, cid)
            if kind in rule.cancel:
                s.armed.pop(key, None)
            if kind in rule.start and not (rule.first_order_only and cid in s.bought):
                if key in s.armed and not rule.restart:
                    continue
                due = t + rule.wait_hours
                s.armed[key] = (due, t)
                s.seq += 1
                heapq.heappush(s.timers, (due, s.seq, i, cid))
        if kind == "transaction":
            s.bought.add(cid)

    def _fire_until(self, t: float, inclusive: bool) -> list[Firing]:
        s, out = self._s, []
        while s.timers and (s.timers[0][0] < t or (inclusive and s.timers[0][0] <= t)):
            due, _, i, cid = heapq.heappop(s.timers)
            armed = s.armed.get((i, cid))
            if armed is None or armed[0] != due:
                continue  # cancelled or restarted
            del s.armed[(i, cid)]
            out.append(self._fire(self.rules[i], i, cid, due, armed[1]))
        return out

    def _fire(self, rule: TriggerRule, i: int, cid: str, due: float, armed_at: float) -> Firing:
        s = self._s
        firing = Firing(rule.name, cid, armed_at, due, "cooldown")
        last = s.last_fired.get((i, cid))
        if last is not None and due - last < rule.cooldown_hours:
            return self._keep(firing)
        sent = s.sent.setdefault(cid, deque())
        while sent and sent[0][0] <= due - self.cap_window_hours:
            sent.popleft()
        if self.cap_per_customer is not None and len(sent) >= self.cap_per_customer:
            firing.status = "capped"
            return self._keep(firing)
        s.last_fired[(i, cid)] = due
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
        d = as_decision(self.decide(cid, context))
        firing.arm, firing.channel, firing.offer_id, firing.decision_id = d.arm, d.channel, d.offer_id, d.decision_id
        firing.status = self._check(rule, cid, d)
        if firing.status == "sent":
            result = self.adapter.send(Message(cid, str(d.channel), d.arm, d.offer_id, d.decision_id, rule.name, due))
            firing.status, firing.detail = result.status, result.detail
            if result.status == "sent":
                sent.append((due, str(d.channel)))
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
        log.debug("trigger %s for %s at %.3f: %s", firing.trigger, firing.customer_id, firing.time, firing.status)
        return firing


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
    for col in ("customer_id", "time", "event"):
        if col not in frame.columns:
            raise SchemaError("events", col, f"missing column; the table has {list(frame.columns)}")
    frame = frame.sort_values("time", kind="stable")
    before = len(engine.firings)
    for cid, t, kind in zip(frame["customer_id"], frame["time"], frame["event"], strict=True):
        engine.on_event({"customer_id": cid, "time": t, "event": kind})
    last = float(frame["time"].max()) if len(frame) else -np.inf
    engine.advance(last if until is None else float(until))
    return firings_frame(engine.firings[before:])


def firings_frame(firings: Iterable[Firing]) -> pd.DataFrame:
    """Firings as a frame (one row each)."""
    cols = list(Firing.__dataclass_fields__)
    return pd.DataFrame([asdict(f) for f in firings], columns=cols)
