"""The in-process decision engine (no HTTP): champion model, online features, rules, policy, pacing and the log.

One `Decider` per worker process. `decide(customer_id, context)`:

1. takes one reference to the current champion (a swap never changes a request half-way);
2. reads the customer's latest features from the online store (an unknown customer is decided from the context
   alone: a cold start), applies the context (city, feature overrides) and scores every arm without pandas;
3. masks the arms that break a customer rule (eligibility, consent, reach, the channels available);
4. inside the decision log's write transaction (`DecisionLog.commit`), with the budget and the customer's recent
   contacts as of that transaction: applies the caps and the budget, updates the pacing price, runs the pure
   policy (`offerlift.serving.policy.decide`) and logs the decision, which is durable before `decide` returns.

A background thread looks for a new champion every ``registry.reload_interval_s`` seconds, loads and warms it up
next to the old one, then swaps a single reference: requests in flight finish with the model they started with.

Champion and challenger: with ``policy.challenger_share`` > 0 the model behind the registry alias ``challenger``
(when it is another version with the same arms) is loaded next to the champion and decides for its share of the
customers (`challenger_serves`); every decision logs which model decided (``policy``) and both models' greedy
arms (``champion_arm``, ``challenger_arm``), which the promotion gate needs.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import sqlalchemy as sa

from offerlift.features.errors import ModelError
from offerlift.features.store import OnlineStore
from offerlift.models.model_io import load_model
from offerlift.models.registry import CHALLENGER, alias_version, require_alias
from offerlift.models.scoring import ArmScorer
from offerlift.serving.decision_log import DecisionLog, LedgerState
from offerlift.serving.pacing import PacingState, update_price
from offerlift.serving.policy import ChallengerScores, PolicyConfig, decide, explain, holdout_unit
from offerlift.serving.rules import Rules, eligible_customers
from offerlift.serving.settings import ServeSettings
from offerlift.serving.snapshot import arm_probs_json, features_json

log = logging.getLogger(__name__)

Loader = Callable[[str], ArmScorer]


def hash_id(customer_id: str) -> str:
    """A short stable digest of a customer id, for logs (ids never appear in plain text)."""
    return hashlib.blake2b(customer_id.encode(), digest_size=6).hexdigest()


def expected_cost(scorer: ArmScorer, preds: Mapping[str, np.ndarray]) -> np.ndarray:
    """(n, K) expected cost of each arm: redeem cost times P(redeem) (else P(buy), else 1) plus contact cost."""
    prob_name = "redeem" if "redeem" in preds else "buy" if "buy" in preds else None
    if prob_name is None:
        return np.broadcast_to(scorer.redeem_cost + scorer.contact_cost, preds[scorer.value_outcome].shape).copy()
    prob = np.clip(preds[prob_name], 0.0, 1.0)
    return scorer.redeem_cost[None, :] * prob + scorer.contact_cost[None, :]


@dataclass(frozen=True)
class Champion:
    """A loaded model with everything a decision needs precomputed."""

    scorer: ArmScorer
    version: str
    policy: PolicyConfig
    arm_ids: list[str]
    offer_ids: list[str | None]
    channels: list[str | None]
    coupon_values: list[float]
    worst_cost: list[float]
    consent_flags: frozenset[str]
    worst_cost_array: np.ndarray
    arms_of_channel: dict[str, np.ndarray]
    consent_of_channel: dict[str, str | None]
    coupon_value_array: np.ndarray
    protected: frozenset[str]
    subsets: dict[tuple[str, ...] | float, np.ndarray] = field(default_factory=dict)  # masks cached by their key

    @classmethod
    def build(cls, scorer: ArmScorer, version: str, settings: ServeSettings) -> Champion:
        """Precompute arm metadata and the policy config (the fallback arm id becomes this model's index)."""
        policy = policy_config(settings, scorer)
        arms = [scorer.catalog.arm(a) for a in scorer.arms]
        consent = frozenset(c.consent for c in scorer.catalog.channels if c.consent)
        abuse = settings.rules_config().abuse
        return cls(
            scorer=scorer,
            version=str(version),
            policy=policy,
            arm_ids=list(scorer.arms),
            offer_ids=[None if a.offer is None else a.offer.id for a in arms],
            channels=[None if a.channel is None else a.channel.id for a in arms],
            coupon_values=[a.coupon_value for a in arms],
            worst_cost=[0.0 if a.is_control else a.redeem_cost + a.contact_cost for a in arms],
            consent_flags=consent,
            worst_cost_array=np.array([0.0 if a.is_control else a.redeem_cost + a.contact_cost for a in arms]),
            arms_of_channel={
                ch: np.array([j for j, a in enumerate(arms) if a.channel is not None and a.channel.id == ch])
                for ch in {a.channel.id for a in arms if a.channel is not None}
            },
            consent_of_channel={c.id: c.consent for c in scorer.catalog.channels},
            coupon_value_array=np.array([a.coupon_value for a in arms], dtype=float),
            protected=consent | ({abuse.column} if abuse is not None else frozenset()),
        )

    def rule_mask(self, rules: Rules, attrs: Mapping[str, Any], channels: Iterable[str] | None) -> np.ndarray:
        """(1, K) arms the customer rules allow: `allowed_arms` without caps and budget (same result, checked by
        a property test), restricted to the channels available; one pass per channel instead of per arm."""
        mask = np.ones((1, len(self.arm_ids)), dtype=bool)
        if rules.new_customers_only or rules.cities or rules.min_tier is not None:
            lifecycle = attrs.get("lifecycle_stage", attrs.get("lifecycle"))
            row = {"lifecycle_stage": [lifecycle], "city": [attrs.get("city")], "tier": [attrs.get("tier")]}
            if not eligible_customers(row, 1, rules)[0]:
                mask[0, 1:] = False
                return mask
        if rules.conditions and not rules.segment_ok(attrs):
            mask[0, 1:] = False
            return mask
        available = None if channels is None else set(channels)
        for ch, idx in self.arms_of_channel.items():
            consent = self.consent_of_channel.get(ch)
            ok = available is None or ch in available
            ok = ok and not (rules.require_consent and consent and not _truthy(attrs.get(consent)))
            reach = f"reach_{ch}"
            ok = ok and (reach not in attrs or _truthy(attrs[reach]))
            if not ok:
                mask[0, idx] = False
        if rules.abuse is not None:
            risk, policy = rules.abuse.risk(attrs.get(rules.abuse.column)), rules.abuse.policy
            if risk >= policy.exclude_at:
                mask[0, 1:] = False
            elif risk >= policy.cap_at:
                mask &= self.value_cap(policy.cap_value)
        return mask

    def value_cap(self, cap_value: float) -> np.ndarray:
        """(1, K) arms whose coupon is worth at most `cap_value`, and the control arm; cached."""
        mask = self.subsets.get(cap_value)
        if mask is None:
            mask = (self.coupon_value_array <= cap_value)[None, :]
            mask[0, 0] = True
            self.subsets[cap_value] = mask
        return mask

    def arm_subset(self, arms: Iterable[str]) -> np.ndarray:
        """(1, K) the named arms and the control arm (``context["arms"]`` of a trigger or campaign); cached."""
        key = tuple(arms)
        mask = self.subsets.get(key)
        if mask is None:
            wanted = set(key)
            mask = np.array([[j == 0 or a in wanted for j, a in enumerate(self.arm_ids)]], dtype=bool)
            if len(self.subsets) < 256:
                self.subsets[key] = mask
        return mask

    def cap_mask(self, rules: Rules, contacts: Mapping[str, int], budget_left: float | None) -> np.ndarray:
        """(1, K) arms that the contact caps and the budget allow (the caps and budget part of `allowed_arms`)."""
        mask = np.ones((1, len(self.arm_ids)), dtype=bool)
        if rules.cap_per_customer is not None and sum(contacts.values()) >= rules.cap_per_customer:
            mask[0, 1:] = False
        for ch, cap in rules.cap_per_channel.items():
            if contacts.get(ch, 0) >= cap and ch in self.arms_of_channel:
                mask[0, self.arms_of_channel[ch]] = False
        if budget_left is not None:
            mask[0] &= self.worst_cost_array <= budget_left + 1e-12
        mask[0, 0] = True
        return mask

    def scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(incremental profit, expected cost), each (n, K)."""
        preds = self.scorer.predict(X)
        profit = self.scorer.profit(preds)
        return profit - profit[:, [0]], expected_cost(self.scorer, preds)


@dataclass(frozen=True)
class Decision:
    """One logged decision, as the service returns it."""

    decision_id: str
    arm: str
    offer_id: str | None
    coupon_value: float
    channel: str | None
    propensity: float
    group_propensity: float
    group: str
    model_version: str
    expected_incremental_profit: float
    expected_cost: float
    committed_cost: float
    price: float
    cold_start: bool
    explanation: list[dict[str, Any]] = field(default_factory=list)


def policy_config(settings: ServeSettings, scorer: ArmScorer) -> PolicyConfig:
    """The pure policy's configuration from the service settings (the fallback arm id becomes an index).

    A model whose metadata says ``explore_all`` (a model that knows nothing yet, such as the closed loop's starting
    random policy) explores every decision."""
    p = settings.policy
    return PolicyConfig(
        holdout=p.holdout,
        explore=1.0 if scorer.metadata.get("explore_all") else p.explore,
        experiment=p.experiment,
        fallback_arm=0 if p.fallback_arm is None else scorer.catalog.index(p.fallback_arm),
        explore_scheme=p.explore_scheme,
        temperature=p.temperature,
        explore_floor=p.explore_floor,
    )


def challenger_serves(
    customer_ids: list[str], settings: ServeSettings, challenger_version: str, now: float
) -> np.ndarray:
    """(n,) bool: the customers the challenger decides for at time `now` (unix seconds): a stable hash of customer,
    experiment, challenger version and period below ``policy.challenger_share`` (the holdout is applied after)."""
    p = settings.policy
    period = int(np.floor(now / (p.challenger_period_hours * 3600.0)))
    return holdout_unit(customer_ids, f"{p.experiment}:challenger:{challenger_version}:{period}") < p.challenger_share


def decision_columns(champ: Champion, challenger: Champion | None, d: Any, i: int) -> dict[str, Any]:
    """The decision log's model columns of row ``i`` of the policy's `Decisions`: the version of the model that
    decided, which one it was, and both models' greedy arms."""
    by_challenger = challenger is not None and bool(d.challenger[i])
    return {
        "model_version": challenger.version if by_challenger else champ.version,
        "policy": "challenger" if by_challenger else "champion",
        "champion_arm": champ.arm_ids[int(d.champion_greedy[i])],
        "challenger_arm": None if challenger is None else champ.arm_ids[int(d.challenger_greedy[i])],
    }


def registry_loader(settings: ServeSettings) -> Loader:
    """Load a registered model version from the settings' MLflow registry."""
    reg = settings.registry_settings()

    def load(version: str) -> ArmScorer:
        import mlflow

        mlflow.set_tracking_uri(reg.tracking_uri)
        return load_model(f"models:/{reg.model_name}/{version}")

    return load


class WriterLock:
    """Serializes the decision-log writes of every thread and process on one host (SQLite only).

    SQLite's busy handler makes a blocked writer sleep 1, 2, 5, 10, ... ms before it tries again, which turns
    two workers' lock contention into tens of milliseconds of tail latency. A blocking ``flock`` on a file next
    to the database queues the writers instead and the kernel wakes the next one at once; a thread lock orders
    the threads of one process (an flock is held by the process, not the thread).
    """

    def __init__(self, url: str):
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self.database: str | None = None
        if url.startswith("sqlite"):
            database = sa.engine.make_url(url).database
            if database and database != ":memory:":
                self.database = database
                path = Path(database).with_name(Path(database).name + ".lock")
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> WriterLock:
        self._thread_lock.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()

    def close(self) -> None:
        """Close the lock file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Checkpointer:
    """Runs the SQLite WAL checkpoints in a background thread instead of inside a request.

    SQLite checkpoints automatically every 1000 WAL pages, inside the COMMIT that crosses the mark: about every
    200 decisions one request copies the pages and fsyncs twice while it holds the writer lock (5-50 ms here).
    Instead, the decision log's connections get a high automatic threshold (a safety net) and this thread runs a
    PASSIVE checkpoint every `interval_s`, which never blocks the writers. Such checkpoints rarely catch up
    with a busy writer, and the WAL only starts over after a complete one, so when it holds more than
    `restart_frames` frames the thread finishes one while holding the writer lock (a few ms every few seconds).
    """

    SAFETY_PAGES = 50_000  # automatic checkpoint threshold left on the request connections (about 200 MB)

    def __init__(self, writer: WriterLock, synchronous: str, interval_s: float = 0.2, restart_frames: int = 8000):
        if writer.database is None:
            raise ModelError("the background checkpointer needs a SQLite database file")
        self.writer, self.synchronous = writer, synchronous
        self.interval_s, self.restart_frames = interval_s, restart_frames
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    @staticmethod
    def tune(engine: sa.Engine) -> None:
        """Raise the automatic checkpoint threshold of every (new) connection of the decision log."""

        def on_connect(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={Checkpointer.SAFETY_PAGES}")

        sa.event.listen(engine, "connect", on_connect)
        engine.dispose()  # connections made before the listener are replaced

    def step(self) -> tuple[int, int]:
        """One round: a PASSIVE checkpoint, then a complete one under the writer lock if the WAL is long.
        Returns (frames in the WAL, frames checkpointed) after the round."""
        if self._conn is None:
            self._conn = sqlite3.connect(
                self.writer.database, timeout=60, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA synchronous={self.synchronous}")
        _, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > self.restart_frames:
            with self.writer:
                _, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return frames, done

    def start(self) -> None:
        """Run `step` every `interval_s` seconds in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="wal-checkpoint", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.step()
            except sqlite3.Error as exc:
                log.warning("background WAL checkpoint failed (SQLite will checkpoint by itself): %s", exc)

    def stop(self) -> None:
        """Stop the thread and close its connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Decider:
    """Decisions for one worker process.

    Args:
        settings: validated service settings.
        loader: loads a model version (default: from the registry in the settings).
        version_of_champion: returns the version behind the champion alias, or None (default: the registry).
        decision_log: the decision log (default: from the settings).
        store: the online feature store (default: from the settings).
        version_of_challenger: returns the version behind the challenger alias, or None (default: the registry;
            asked only with ``policy.challenger_share`` > 0).
    """

    def __init__(
        self,
        settings: ServeSettings,
        loader: Loader | None = None,
        version_of_champion: Callable[[], str | None] | None = None,
        decision_log: DecisionLog | None = None,
        store: OnlineStore | None = None,
        version_of_challenger: Callable[[], str | None] | None = None,
    ):
        self.settings = settings
        self.rules: Rules = settings.rules_config()
        self._registry = settings.registry_settings()
        self._loader = loader or registry_loader(settings)
        self._version_of = version_of_champion or (lambda: alias_version(self._registry, settings.registry.alias))
        self._uses_registry = version_of_champion is None
        self.log = decision_log or DecisionLog(settings.decision_log_url, synchronous=settings.sqlite_synchronous)
        self._writer = WriterLock(self.log.url)
        self._checkpointer: Checkpointer | None = None
        if settings.tuning.background_checkpoint and self._writer.database is not None:
            Checkpointer.tune(self.log.engine)
            self._checkpointer = Checkpointer(self._writer, settings.sqlite_synchronous)
        if store is None:
            settings.online_store_path.parent.mkdir(parents=True, exist_ok=True)
            store = OnlineStore(settings.online_store_path)
        self.store = store
        self._champion: Champion | None = None
        self._challenger: Champion | None = None
        self._version_of_challenger = version_of_challenger or (
            (lambda: alias_version(self._registry, CHALLENGER)) if self._uses_registry else (lambda: None)
        )
        self._swap_lock = threading.Lock()
        self._pacing = PacingState()
        self._pacing_lock = threading.Lock()
        self._local = threading.local()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ensure_budget()

    # -- the model -------------------------------------------------------------------------------------------

    @property
    def champion(self) -> Champion | None:
        """The model decisions use now (None before `load_champion`)."""
        return self._champion

    @property
    def challenger(self) -> Champion | None:
        """The challenger that decides for its share of the traffic (None without one)."""
        return self._challenger

    @property
    def ready(self) -> bool:
        """True once a champion is loaded."""
        return self._champion is not None

    def load_champion(self) -> Champion:
        """Load the version behind the champion alias; ModelError says how to make one when there is none."""
        version = self._version_of()
        if version is None:
            if self._uses_registry:
                require_alias(self._registry, self.settings.registry.alias)  # raises with how to fix it
            raise ModelError(f"no model has the alias {self.settings.registry.alias!r}; train and promote one first")
        champion = self._install(version)
        self._refresh_challenger()
        return champion

    def _refresh_challenger(self) -> bool:
        """Load, keep or drop the challenger (alias ``challenger``, with ``policy.challenger_share`` > 0);
        True when it changed."""
        champion = self._champion
        version = self._version_of_challenger() if self.settings.policy.challenger_share > 0 else None
        current = self._challenger
        if version is None or champion is None or str(version) == champion.version:
            self._challenger = None
            return current is not None
        if current is not None and current.version == str(version):
            return False
        candidate = Champion.build(self._loader(str(version)), str(version), self.settings)
        if candidate.arm_ids != champion.arm_ids:
            log.warning("challenger version %s has other arms than the champion; it gets no traffic", version)
            self._challenger = None
            return current is not None
        candidate.scores(np.full((1, len(candidate.scorer.features.columns)), np.nan))  # warm up
        self._challenger = candidate
        log.info("challenger version %s decides for %.0f%% of the traffic", version,
                 100 * self.settings.policy.challenger_share)  # fmt: skip
        return True

    def refresh(self) -> bool:
        """Swap in the champion if the alias moved; True when a new model is in use. Errors keep the old model."""
        try:
            version = self._version_of()
            current = self._champion
            changed = False
            if version is not None and (current is None or version != current.version):
                self._install(version)
                changed = True
            return self._refresh_challenger() or changed
        except Exception as exc:  # the service keeps answering with the model it has
            log.warning("could not refresh the champion, keeping the current one: %s", exc)
            return False

    def _install(self, version: str) -> Champion:
        with self._swap_lock:
            current = self._champion
            if current is not None and current.version == str(version):
                return current
            t0 = time.perf_counter()
            champion = Champion.build(self._loader(str(version)), str(version), self.settings)
            champion.scores(np.full((1, len(champion.scorer.features.columns)), np.nan))  # warm up
            self._champion = champion  # one reference swap: atomic for the readers
            log.info("champion version %s in use (loaded in %.2fs)", version, time.perf_counter() - t0)
            return champion

    def start_background(self) -> None:
        """Start the daemon threads: the champion reload (every ``registry.reload_interval_s`` seconds, if > 0)
        and the WAL checkpointer (SQLite with ``tuning.background_checkpoint``)."""
        if self._checkpointer is not None:
            self._checkpointer.start()
        interval = self.settings.registry.reload_interval_s
        if interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._reload_loop, args=(interval,), name="champion-reload", daemon=True)
        self._thread.start()

    def _reload_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.refresh()

    def close(self) -> None:
        """Stop the background threads and release the databases."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.log.dispose()
        self.store.close()
        self._writer.close()

    # -- the budget ------------------------------------------------------------------------------------------

    def ensure_budget(self) -> None:
        """Create the campaign's budget, or resize it, keeping its start unless the settings give one."""
        c = self.settings.campaign
        if c.budget is None:
            return
        row = self.log.budget(c.name)
        start = c.start if c.start is not None else (row["start_ts"] if row else time.time())
        end = start + c.duration_hours * 3600.0
        if row is None or (row["total"], row["start_ts"], row["end_ts"]) != (c.budget, start, end):
            self.log.set_budget(c.name, c.budget, start, end)

    def _price(self, state: LedgerState, now: float) -> float:
        if not self.settings.pacing.enabled or state.budget_total is None:
            return 0.0
        committed = state.budget_total - (state.budget_left or 0.0)
        with self._pacing_lock:
            self._pacing = update_price(
                self._pacing, committed, state.budget_total, state.budget_elapsed, now, self.settings.pacing.config()
            )
            return self._pacing.price

    # -- decisions -------------------------------------------------------------------------------------------

    def _rng(self) -> np.random.Generator:
        rng = getattr(self._local, "rng", None)
        if rng is None:
            rng = self._local.rng = np.random.default_rng()
        return rng

    def _now(self, context: Mapping[str, Any]) -> float:
        ts = context.get("timestamp")
        if not self.settings.use_context_time or ts is None:
            return time.time()
        return ts.timestamp() if isinstance(ts, datetime) else float(ts)

    def decide(self, customer_id: str, context: Mapping[str, Any] | None = None) -> Decision:
        """Decide and log one customer's arm (see the module docstring).

        Context keys (all optional): ``city``, ``timestamp`` (unix seconds or datetime; used for caps and pacing
        only with ``use_context_time``), ``channels`` (the channels available now), ``features`` (overrides),
        ``arms`` (the arms allowed, e.g. a trigger's; the control arm always is) and ``trigger`` (logged).
        """
        champ, chall = self._champion, self._challenger
        if champ is None:
            raise ModelError("no champion model is loaded")
        ctx = dict(context or {})
        stored = self.store.get(customer_id)
        attrs = attributes(stored, ctx, champ.protected)
        X = champ.scorer.features.encode_records([attrs])
        incr, cost = champ.scores(X)
        rule_mask = champ.rule_mask(self.rules, attrs, ctx.get("channels"))
        if ctx.get("arms"):
            rule_mask &= champ.arm_subset(ctx["arms"])
        hu = holdout_unit([customer_id], champ.policy.experiment)
        u = self._rng().random((1, 2))
        now = self._now(ctx)
        out: dict[str, Any] = {"incr": incr}
        versus = None
        if chall is not None:
            c_incr, c_cost = chall.scores(chall.scorer.features.encode_records([attrs]))
            serves = challenger_serves([customer_id], self.settings, chall.version, now)
            versus = (c_incr, c_cost, serves, chall.policy.explore)
            if serves[0]:
                out["incr"] = c_incr

        def choose(state: LedgerState) -> dict[str, Any]:
            price = self._price(state, now)
            mask = rule_mask & champ.cap_mask(self.rules, state.contacts, state.budget_left)
            scores = None if versus is None else ChallengerScores(*versus)
            d = decide(incr, cost, mask, hu, u, champ.policy, price, scores)
            j = int(d.arm[0])
            out.update(price=price, mask=mask)
            return {
                "arm": champ.arm_ids[j],
                "offer_id": champ.offer_ids[j],
                "channel": champ.channels[j],
                "coupon_value": champ.coupon_values[j],
                "propensity": float(d.propensity[0]),
                "group_propensity": float(d.group_propensity[0]),
                "grp": str(d.group[0]),
                "expected_incremental_profit": float(d.incr[0]),
                "expected_cost": float(d.cost[0]),
                "committed_cost": champ.worst_cost[j],
                "context": log_context(ctx, price, stored is None),
                **decision_columns(champ, chall, d, 0),
                "features": features_json(attrs),
                "arm_probs": arm_probs_json(d.arm_probs[0], mask[0], champ.arm_ids),
            }

        campaign, window = self.settings.campaign.name, self.rules.cap_window_hours
        with self._writer:
            row = self.log.commit(campaign, customer_id, window, choose, now=now)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("decision %s customer %s arm %s", row["decision_id"], hash_id(customer_id), row["arm"])
        top = self.settings.policy.explain_top
        return Decision(
            decision_id=row["decision_id"],
            arm=row["arm"],
            offer_id=row["offer_id"],
            coupon_value=row["coupon_value"],
            channel=row["channel"],
            propensity=row["propensity"],
            group_propensity=row["group_propensity"],
            group=row["grp"],
            model_version=row["model_version"],
            expected_incremental_profit=row["expected_incremental_profit"],
            expected_cost=row["expected_cost"],
            committed_cost=row["committed_cost"],
            price=out["price"],
            cold_start=stored is None,
            explanation=explain(out["incr"][0], out["mask"][0], champ.arm_ids, top) if top else [],
        )

    def record_outcomes(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Store outcome events in the canonical schema (idempotent on event_id); returns how many were new."""
        return self.log.add_outcomes(events)


def _truthy(v: Any) -> bool:
    """Present (not None, not NaN) and true: the flag semantics of `offerlift.features.eligibility.truthy`."""
    return v is not None and v == v and bool(v)


def attributes(stored: Mapping[str, Any] | None, ctx: Mapping[str, Any], protected: frozenset[str]) -> dict[str, Any]:
    """Stored features, then the context's city and overrides; a protected attribute known to the store (a consent
    flag, the abuse risk) is never overridden: an opt-out or a risk recorded there wins over the request."""
    attrs: dict[str, Any] = dict(stored or {})
    if ctx.get("city") is not None:
        attrs["city"] = ctx["city"]
    for k, v in (ctx.get("features") or {}).items():
        if k not in protected or attrs.get(k) is None:
            attrs[k] = v
    return attrs


def log_context(ctx: Mapping[str, Any], price: float, cold_start: bool) -> dict[str, Any] | None:
    """What the decision log keeps of a request's context: the pacing price, cold start, city, channels, arms,
    trigger and timestamp."""
    out: dict[str, Any] = {"price": price, "cold_start": cold_start}
    for key in ("city", "channels", "arms", "trigger"):
        value = ctx.get(key)
        if value is not None:
            out[key] = value if isinstance(value, str) else list(value)
    ts = ctx.get("timestamp")
    if ts is not None:
        out["timestamp"] = ts.timestamp() if isinstance(ts, datetime) else float(ts)
    if ctx.get("features"):
        out["features"] = dict(ctx["features"])
    return out
