"""The simulated world: a seeded population with ground truth, an oracle, and outcomes played forward.

    world = SimWorld.default(n_customers=10_000, seed=0)
    world.customers                    # what the business sees (city, tier, age, income, reach/consent, ids)
    truth = world.truth(time=0.0)      # true buy/spend/redeem/profit, (n, n_arms), control "none" first
    best = world.oracle()              # argmax of incremental profit over eligible arms (0 = none)
    world.policy_value(best)           # mean incremental profit per customer (exact)
    result = world.play(decisions)     # sampled outcomes (canonical "outcomes") and canonical events
    world.history_events()             # the pre-period's events (transactions and past campaigns)

The hidden traits live in `world.hidden` (:class:`~offerlift.simworld.population.HiddenTraits`); `customers`
never holds them. Consent: contacting an opted-out customer is recorded as a violation (column `violation` of
the outcomes) and the message is blocked: no effect, the contact cost is still paid, so the truth gives that arm
an incremental profit of -contact_cost and the oracle never chooses it. Fatigue: each delivered contact in the
last `fatigue.window_hours` before a decision multiplies the customer's exposure by exp(-fatigue_rate).
The math of the truth is in `offerlift.simworld.truth`, the sampling in `offerlift.simworld.play`, the
randomized experiment in `offerlift.simworld.experiment`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError, SchemaError
from offerlift.features.experiment import Experiment
from offerlift.simworld.config import WorldConfig, load_world_spec
from offerlift.simworld.play import (
    Draws,
    background_transactions,
    draws_to_events,
    event_frame,
    sample_draws,
    sort_events,
)
from offerlift.simworld.population import draw_population
from offerlift.simworld.truth import (
    ArmTable,
    ContactHistory,
    Parts,
    Truth,
    compute_parts,
    shock_multiplier,
    truth_from_parts,
)

log = logging.getLogger(__name__)

CHUNK = 1 << 17


@dataclass(frozen=True)
class PlayResult:
    """Outcomes of played decisions (canonical "outcomes" table plus extra columns) and their events."""

    outcomes: pd.DataFrame
    events: pd.DataFrame


class SimWorld:
    """A seeded simulated population with known true responses to every arm of a catalog."""

    def __init__(self, catalog: Catalog, config: WorldConfig, n_customers: int, seed: int = 0, history_depth: int = 12):
        if int(n_customers) < 1:
            raise ConfigError(f"a world needs at least one customer, got n_customers={n_customers!r}")
        self.catalog = catalog
        self.config = config
        self.seed = int(seed)
        streams = np.random.SeedSequence(self.seed).spawn(4)
        self._history_seed, self._play_seeds = streams[2], streams[3]
        self.customers, self.visible, self.hidden = draw_population(
            config, catalog, int(n_customers), np.random.default_rng(streams[0])
        )
        self.arms = ArmTable.from_catalog(catalog)
        self.arm_ids = tuple(catalog.arm_ids)
        self.contacts = ContactHistory(int(n_customers), history_depth)
        self._ids = pd.Index(self.customers["customer_id"])
        self._units = 0
        self._history: pd.DataFrame | None = None
        self._past = self._schedule_past_contacts(np.random.default_rng(streams[1]))

    @classmethod
    def from_yaml(cls, path: str | Path | None, n_customers: int, seed: int = 0) -> SimWorld:
        """A world from a spec file (catalog + world sections); None means simworld/default.yaml."""
        catalog, config = load_world_spec(path)
        return cls(catalog, config, n_customers, seed)

    @classmethod
    def default(cls, n_customers: int = 10_000, seed: int = 0) -> SimWorld:
        """The default world of simworld/default.yaml."""
        return cls.from_yaml(None, n_customers, seed)

    @property
    def n_customers(self) -> int:
        """Number of customers."""
        return len(self._ids)

    def rows_of(self, customer_ids: Any) -> np.ndarray:
        """Row positions of customer ids; SchemaError names unknown ones."""
        ids = pd.Index(np.asarray(customer_ids, dtype=object))
        rows = self._ids.get_indexer(ids)
        if (rows < 0).any():
            raise SchemaError("decisions", "customer_id", "unknown customer", list(ids[rows < 0][:5]))
        return rows

    def _rows(self, rows: np.ndarray | None) -> np.ndarray:
        return np.arange(self.n_customers) if rows is None else np.asarray(rows, dtype=np.int64)

    def _parts(self, rows: np.ndarray, time: np.ndarray | float) -> Parts:
        return compute_parts(self.config, self.arms, self.hidden, self.visible, self.contacts, rows, time)

    # --- ground truth -------------------------------------------------------------------------------------

    def truth(self, rows: np.ndarray | None = None, time: np.ndarray | float = 0.0) -> Truth:
        """True expectations for `rows` (default: everyone) at `time` (scalar or one per row)."""
        rows = self._rows(rows)
        return truth_from_parts(self._parts(rows, time), self.arms, self.arm_ids)

    def iter_truth(
        self, rows: np.ndarray | None = None, time: np.ndarray | float = 0.0, chunk_size: int = CHUNK
    ) -> Iterator[tuple[slice, Truth]]:
        """The truth in chunks of rows (memory bounded): (slice into `rows`, Truth of that chunk)."""
        rows = self._rows(rows)
        t = np.asarray(time, dtype=float)
        for start in range(0, rows.size, chunk_size):
            part = slice(start, min(start + chunk_size, rows.size))
            yield part, self.truth(rows[part], t if t.ndim == 0 else t[part])

    def eligible(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, n_arms) bool: arms whose channel reaches the customer with consent (control always)."""
        rows = self._rows(rows)
        out = np.ones((rows.size, self.arms.n_arms), dtype=bool)
        ok = np.ones((rows.size, self.visible.reach.shape[1] + 1), dtype=bool)
        ok[:, :-1] = self.visible.reach[rows] & self.visible.consent[rows]
        out[:, 1:] = ok[:, self.arms.channel_idx[1:]]
        return out

    def oracle(self, rows: np.ndarray | None = None, time: np.ndarray | float = 0.0) -> np.ndarray:
        """The best arm index of every row (0 = none when no eligible arm has positive incremental profit)."""
        rows = self._rows(rows)
        out = np.empty(rows.size, dtype=np.int64)
        for part, truth in self.iter_truth(rows, time):
            out[part] = truth.oracle()
        return out

    def single_arm_policy(self, arm: str, rows: np.ndarray | None = None) -> np.ndarray:
        """`arm` for every customer it can reach with consent, none for the others."""
        k = self.catalog.index(arm)
        return np.where(self.eligible(rows)[:, k], k, 0)

    def policy_value(
        self, arm_idx: np.ndarray, rows: np.ndarray | None = None, time: np.ndarray | float = 0.0
    ) -> float:
        """Exact mean incremental profit per customer of a policy given as one arm index per row."""
        rows = self._rows(rows)
        arm_idx = self._check_policy(arm_idx, rows)
        total = 0.0
        for part, truth in self.iter_truth(rows, time):
            total += float(truth.values(arm_idx[part]).sum())
        return total / max(rows.size, 1)

    def regret(self, arm_idx: np.ndarray, rows: np.ndarray | None = None, time: np.ndarray | float = 0.0) -> float:
        """Oracle value minus the policy's value (mean per customer, >= 0)."""
        rows = self._rows(rows)
        arm_idx = self._check_policy(arm_idx, rows)
        total = 0.0
        for part, truth in self.iter_truth(rows, time):
            total += float((truth.values(truth.oracle()) - truth.values(arm_idx[part])).sum())
        return total / max(rows.size, 1)

    def _check_policy(self, arm_idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
        arm_idx = np.asarray(arm_idx)
        if arm_idx.shape != rows.shape or not np.issubdtype(arm_idx.dtype, np.integer):
            raise SchemaError("policy", None, f"expected {rows.size} integer arm indices, got {arm_idx.shape}")
        bad = (arm_idx < 0) | (arm_idx >= self.arms.n_arms)
        if bad.any():
            raise SchemaError("policy", None, f"arm index outside [0, {self.arms.n_arms})", list(np.flatnonzero(bad)))
        return arm_idx

    def scorecard(self, rows: np.ndarray | None = None, time: np.ndarray | float = 0.0) -> dict[str, Any]:
        """One pass over the truth: value of the oracle, of no offer, of every single-arm policy, the best one."""
        rows = self._rows(rows)
        oracle, picks_none = 0.0, 0
        single = np.zeros(self.arms.n_arms)
        for _, truth in self.iter_truth(rows, time):
            best = truth.oracle()
            oracle += float(truth.values(best).sum())
            picks_none += int((best == 0).sum())
            single += np.where(truth.eligible, truth.incr, 0.0).sum(axis=0, dtype=np.float64)
        n = max(rows.size, 1)
        per_arm = {a: float(v / n) for a, v in zip(self.arm_ids, single, strict=True)}
        best_arm = max(self.catalog.treatment_arms, key=per_arm.__getitem__)
        return {
            "customers": int(rows.size),
            "oracle": oracle / n,
            "none": 0.0,
            "best_single_arm": best_arm,
            "best_single_arm_value": per_arm[best_arm],
            "oracle_share_none": picks_none / n,
            "single_arm_values": per_arm,
        }

    # --- playing forward ----------------------------------------------------------------------------------

    def _rng(self, seed: int | None) -> np.random.Generator:
        if seed is not None:
            return np.random.default_rng(seed)
        return np.random.default_rng(self._play_seeds.spawn(1)[0])

    def _parse(self, decisions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        missing = [c for c in ("customer_id", "time", "arm") if c not in decisions.columns]
        if missing:
            raise SchemaError("decisions", missing[0], f"missing column; the table has {list(decisions.columns)}")
        rows = self.rows_of(decisions["customer_id"])
        times = decisions["time"].to_numpy(dtype=float)
        known = pd.Index(self.arm_ids)
        arm_idx = known.get_indexer(decisions["arm"])
        if (arm_idx < 0).any():
            raise SchemaError(
                "decisions",
                "arm",
                f"unknown arm; the catalog has {list(self.arm_ids)}",
                list(np.flatnonzero(arm_idx < 0)),
            )
        if "unit_id" in decisions.columns:
            units = decisions["unit_id"].to_numpy(dtype=object)
        else:
            units = np.array([f"u{self._units + k:08d}" for k in range(len(decisions))], dtype=object)
            self._units += len(decisions)
        return rows, times, arm_idx, units

    def _draw(
        self, rows: np.ndarray, times: np.ndarray, arm_idx: np.ndarray, rng: np.random.Generator, record: bool
    ) -> Draws:
        """Sample decisions in time order; a customer's earlier decisions tire them for the later ones."""
        order = np.argsort(times, kind="stable")
        level = np.empty(rows.size, dtype=np.int64)
        level[order] = pd.Series(rows[order]).groupby(rows[order]).cumcount().to_numpy()
        pieces: list[tuple[np.ndarray, Draws]] = []
        for lvl in range(int(level.max(initial=-1)) + 1):
            sel = order[level[order] == lvl]
            pop = self.config.population
            draws = sample_draws(
                self._parts(rows[sel], times[sel]),
                self.arms,
                arm_idx[sel],
                self.hidden.browse_rate[rows[sel]],
                pop.click_rate,
                pop.spend_noise_sd,
                self.config.window_hours,
                rng,
            )
            if record:
                self.contacts.record(rows[sel][draws.delivered], times[sel][draws.delivered])
            pieces.append((sel, draws))
        return _merge(pieces, rows.size)

    def play(self, decisions: pd.DataFrame, seed: int | None = None, record: bool = True) -> PlayResult:
        """Sample the outcomes of decisions (customer_id, time, arm[, unit_id]) and their events.

        Outcomes have the canonical columns (time = end of the attribution window) plus decision_time,
        delivered, viewed, violation (contacted without consent) and profit. With `record`, delivered contacts
        enter the contact history (fatigue for later decisions). Without `seed`, each call draws a fresh stream
        derived from the world's seed, so a replay of the same calls gives the same outcomes.
        """
        rows, times, arm_idx, units = self._parse(decisions)
        draws = self._draw(rows, times, arm_idx, self._rng(seed), record)
        treated = arm_idx > 0
        slot = np.where(treated, self.arms.channel_idx[arm_idx], 0)
        consent = np.ones((rows.size, self.visible.consent.shape[1] + 1), dtype=bool)
        consent[:, :-1] = self.visible.consent[rows]
        violation = treated & ~consent[np.arange(rows.size), slot]
        profit = (
            self.arms.margin * draws.spend
            - self.arms.redeem_cost[arm_idx] * draws.redeem
            - self.arms.contact_cost[arm_idx] * treated
        )
        outcomes = pd.DataFrame(
            {
                "unit_id": units,
                "customer_id": self.customers["customer_id"].to_numpy()[rows],
                "time": times + self.config.window_hours,
                "visit": draws.visit.astype(np.int8),
                "buy": draws.buy.astype(np.int8),
                "spend": draws.spend,
                "redeem": draws.redeem.astype(np.int8),
                "decision_time": times,
                "delivered": draws.delivered.astype(np.int8),
                "viewed": (draws.viewed & draws.delivered).astype(np.int8),
                "violation": violation.astype(np.int8),
                "profit": profit.astype(float),
            }
        )
        if violation.any():
            log.warning("%d decisions contacted customers without consent", int(violation.sum()))
        events = self._events(draws, rows, times, arm_idx, all_transactions=True)
        return PlayResult(outcomes, sort_events(events))

    def _events(
        self, draws: Draws, rows: np.ndarray, times: np.ndarray, arm_idx: np.ndarray, all_transactions: bool
    ) -> pd.DataFrame:
        offer_ids = np.array([None if a.offer is None else a.offer.id for a in self.catalog.arms], dtype=object)
        channel_ids = np.array([None if a.channel is None else a.channel.id for a in self.catalog.arms], dtype=object)
        cids = self.customers["customer_id"].to_numpy()[rows]
        return draws_to_events(
            draws, cids, times, arm_idx, offer_ids, channel_ids, self.arms.redeem_cost, all_transactions
        )

    # --- the pre-period -----------------------------------------------------------------------------------

    def _schedule_past_contacts(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Past campaign contacts (row, time, arm) in [-history.hours, 0), written into the contact history."""
        hist, depth = self.config.history, self.contacts.times.shape[1]
        lam = hist.contacts_per_week * hist.hours / 168.0
        counts = np.minimum(rng.poisson(lam, self.n_customers), depth // 2) * (self.arms.n_arms > 1)
        rows = np.repeat(np.arange(self.n_customers), counts)
        times = rng.uniform(-hist.hours, 0.0, rows.size)
        arm_idx = np.zeros(rows.size, dtype=np.int64)
        for start in range(0, rows.size, CHUNK):
            part = slice(start, start + CHUNK)
            ok = self.eligible(rows[part])[:, 1:]
            pick = np.argmax(rng.random(ok.shape) * ok, axis=1) + 1
            arm_idx[part] = np.where(ok.any(axis=1), pick, 0)
        keep = arm_idx > 0
        rows, times, arm_idx = rows[keep], times[keep], arm_idx[keep]
        order = np.lexsort((times, rows))
        rows, times, arm_idx = rows[order], times[order], arm_idx[order]
        rank = np.arange(rows.size) - np.searchsorted(rows, rows, side="left")
        self.contacts.times[rows, rank] = times
        self.contacts.next[:] = np.bincount(rows, minlength=self.n_customers)
        return rows, times, arm_idx

    def history_events(self) -> pd.DataFrame:
        """Events of the pre-period [-history.hours, 0): ordinary purchases (a Poisson process at each
        customer's base rate, thinned by shocks) and the past campaigns (received, viewed, completed with its
        purchase), censored at time 0 (what a late contact leads to after 0 is not recorded).
        Deterministic given the seed; computed once and cached (do not modify the frame)."""
        if self._history is None:
            self._history = self._make_history(np.random.default_rng(self._history_seed))
        return self._history

    def _make_history(self, rng: np.random.Generator) -> pd.DataFrame:
        cfg, hidden = self.config, self.hidden
        cids = self.customers["customer_id"].to_numpy()
        rate = -np.log1p(-hidden.base_rate.astype(float)) / cfg.window_hours
        rows, times, amounts = background_transactions(
            cids, rate, hidden.basket, -cfg.history.hours, 0.0, cfg.population.spend_noise_sd, rng
        )
        keep = np.ones(rows.size, dtype=bool)
        buy_mult = shock_multiplier(cfg, "buy_rate", self.visible.city[rows], times)
        if buy_mult is not None:
            keep = rng.random(rows.size) < buy_mult
        spend_mult = shock_multiplier(cfg, "spend", self.visible.city[rows], times)
        if spend_mult is not None:
            amounts = amounts * spend_mult
        frames = [event_frame(cids[rows[keep]], times[keep], "transaction", amount=amounts[keep].astype(float))]
        p_rows, p_times, p_arms = self._past
        for start in range(0, p_rows.size, CHUNK):
            part = slice(start, start + CHUNK)
            draws = self._draw(p_rows[part], p_times[part], p_arms[part], rng, record=False)
            frames.append(self._events(draws, p_rows[part], p_times[part], p_arms[part], all_transactions=False))
        events = pd.concat(frames, ignore_index=True)
        return sort_events(events.loc[events["time"].to_numpy() < 0.0])


def _merge(pieces: list[tuple[np.ndarray, Draws]], n: int) -> Draws:
    """Put draws of disjoint row selections back in the original order."""
    fields = list(Draws.__dataclass_fields__)
    out: dict[str, np.ndarray] = {}
    for name in fields:
        sample = getattr(pieces[0][1], name) if pieces else np.zeros(0)
        arr = np.empty(n, dtype=sample.dtype)
        for sel, draws in pieces:
            arr[sel] = getattr(draws, name)
        out[name] = arr
    return Draws(**out)


def make_experiment(n_customers: int, seed: int = 0, propensities: Any = None, **kwargs: Any) -> Experiment:
    """A randomized experiment of the default world; see `offerlift.simworld.experiment.make_experiment`."""
    from offerlift.simworld.experiment import make_experiment as _make  # late: that module imports this one

    return _make(n_customers, seed, propensities, **kwargs)
