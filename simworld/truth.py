"""The true response of the simulated world, vectorized over customers x arms (float32).

For a customer who *sees* an offer (exposure E = delivered x open rate x fatigue x shocks), with base buying
rate p0, basket B, price sensitivity s and a coupon of value v and minimum spend m:

- lift      L = s * (1 - exp(-v / value_scale)) * exp(-aversion * max(0, m / B - 1))   (diminishing returns)
- buy       P(buy | a)    = p0 + (1 - p0) * E * L                       (incremental buyers always redeem)
- redeem    P(redeem | a) = E * (p0 * q * f + (1 - p0) * L)            (q*f: buyers-anyway who redeem:
                                                                          cannibalization, pure cost)
- spend     E[spend | a]  = p0 * B + E * (p0 * q * f * (M - B) + (1 - p0) * L * M),  M = max(B, m)
- profit    profit_a = margin * E[spend | a] - redeem_cost_a * P(redeem | a) - contact_cost_a

Abusers have L = 0, redeem at `abusers.redeem_rate` whenever they buy and see a coupon, and never trade up.
An arm whose channel cannot deliver (no reach, or no consent) has E = 0: no effect, but the contact cost is
still paid; so its incremental profit is exactly -contact_cost and the oracle never picks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from offerlift.features.catalog import Catalog
from offerlift.simworld.config import WorldConfig
from offerlift.simworld.population import HiddenTraits, Visible

F32 = np.float32


@dataclass(frozen=True)
class Truth:
    """True expectations for n customers x all arms (control first), each (n, n_arms) float32."""

    arm_ids: tuple[str, ...]
    buy: np.ndarray
    spend: np.ndarray
    redeem: np.ndarray
    profit: np.ndarray
    eligible: np.ndarray

    @property
    def incr(self) -> np.ndarray:
        """Incremental profit over no offer, (n, n_arms); column 0 is 0."""
        return self.profit - self.profit[:, :1]

    def oracle(self) -> np.ndarray:
        """Arm index with the largest incremental profit among eligible arms; 0 (none) when none is positive."""
        incr = np.where(self.eligible, self.incr, -np.inf)
        incr[:, 0] = 0.0
        return np.argmax(incr, axis=1)

    def values(self, arm_idx: np.ndarray) -> np.ndarray:
        """Incremental profit of each customer's chosen arm (float64)."""
        arm_idx = np.asarray(arm_idx)
        return self.incr[np.arange(arm_idx.size), arm_idx].astype(np.float64)


@dataclass(frozen=True)
class ArmTable:
    """The catalog as arrays: per arm its offer and channel index (-1 for control), costs and values."""

    offer_idx: np.ndarray
    channel_idx: np.ndarray
    redeem_cost: np.ndarray
    contact_cost: np.ndarray
    offer_value: np.ndarray
    offer_min_spend: np.ndarray
    margin: float

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> ArmTable:
        """Index the catalog's arms; an arm without a channel uses the extra channel slot C (always delivered)."""
        offers = {o.id: i for i, o in enumerate(catalog.offers)}
        channels = {c.id: i for i, c in enumerate(catalog.channels)}
        n_ch = len(catalog.channels)
        offer_idx = [-1 if a.offer is None else offers[a.offer.id] for a in catalog.arms]
        channel_idx = [
            -1 if a.offer is None else (n_ch if a.channel is None else channels[a.channel.id]) for a in catalog.arms
        ]
        return cls(
            offer_idx=np.array(offer_idx),
            channel_idx=np.array(channel_idx),
            redeem_cost=np.array([a.redeem_cost for a in catalog.arms], dtype=F32),
            contact_cost=np.array([a.contact_cost for a in catalog.arms], dtype=F32),
            offer_value=np.array([o.coupon_value for o in catalog.offers], dtype=F32),
            offer_min_spend=np.array([o.min_spend for o in catalog.offers], dtype=F32),
            margin=float(catalog.margin),
        )

    @property
    def n_arms(self) -> int:
        """Number of arms, control included."""
        return int(self.offer_idx.size)


class ContactHistory:
    """The last `depth` delivered contact times of every customer (a ring buffer, float32 hours)."""

    def __init__(self, n: int, depth: int = 12):
        self.times = np.full((n, depth), -np.inf, dtype=F32)
        self.next = np.zeros(n, dtype=np.int64)

    def count(self, rows: np.ndarray, time: np.ndarray | float, window: float) -> np.ndarray:
        """Contacts of each row in [time - window, time)."""
        t = np.broadcast_to(np.asarray(time, dtype=F32), (len(rows),))[:, None]
        past = self.times[rows]
        return ((past >= t - F32(window)) & (past < t)).sum(axis=1)

    def record(self, rows: np.ndarray, times: np.ndarray) -> None:
        """Add one contact per row (rows must be unique within one call)."""
        depth = self.times.shape[1]
        self.times[rows, self.next[rows] % depth] = times
        self.next[rows] += 1


@dataclass(frozen=True)
class Parts:
    """Per-row response components: rows (n,), per offer (n, O), exposure per channel slot (n, C + 1)."""

    p0: np.ndarray
    basket: np.ndarray
    exposure: np.ndarray
    deliverable: np.ndarray
    lift: np.ndarray
    redeem_if_base: np.ndarray
    spend_if_redeem: np.ndarray


def shock_multiplier(cfg: WorldConfig, metric: str, city: np.ndarray, time: np.ndarray | float) -> np.ndarray | None:
    """Product of the factors of the shocks on `metric` active for each row; None when no shock applies."""
    out = None
    t = np.asarray(time, dtype=float)
    for k, city_cfg in enumerate(cfg.cities):
        for s in cfg.shocks:
            if s.metric != metric or s.city != city_cfg.id:
                continue
            hit = (city == k) & (t >= s.start) & (t < s.end)
            if hit.any():
                out = np.ones(city.size, dtype=F32) if out is None else out
                out[hit] *= F32(s.factor)
    return out


def compute_parts(
    cfg: WorldConfig,
    arms: ArmTable,
    hidden: HiddenTraits,
    visible: Visible,
    contacts: ContactHistory,
    rows: np.ndarray,
    time: np.ndarray | float,
) -> Parts:
    """The response components of `rows` at `time` (scalar or one per row), given their contact history."""
    city = visible.city[rows]
    p0, basket = hidden.base_rate[rows], hidden.basket[rows]
    attention = np.exp(-hidden.fatigue_rate[rows] * contacts.count(rows, time, cfg.fatigue.window_hours))
    for metric in ("buy_rate", "spend", "open_rate"):
        mult = shock_multiplier(cfg, metric, city, time)
        if mult is not None and metric == "buy_rate":
            p0 = p0 * mult
        elif mult is not None and metric == "spend":
            basket = basket * mult
        elif mult is not None:
            attention = attention * mult
    deliverable = np.ones((rows.size, visible.reach.shape[1] + 1), dtype=bool)
    deliverable[:, :-1] = visible.reach[rows] & visible.consent[rows]
    exposure = np.empty(deliverable.shape, dtype=F32)
    exposure[:, :-1] = hidden.open_rate[rows] * deliverable[:, :-1]
    exposure[:, -1] = 1.0
    exposure *= attention.astype(F32)[:, None]

    b = basket[:, None]
    m = arms.offer_min_spend[None, :]
    usable = np.exp(-cfg.population.min_spend_aversion * np.maximum(m / b - 1.0, 0.0))
    lift = hidden.sensitivity[rows, None] * -np.expm1(-arms.offer_value[None, :] / hidden.value_scale[rows, None])
    lift *= usable
    abuser = hidden.abuser[rows, None]
    lift = np.where(abuser, F32(0.0), lift)
    redeem_if_base = np.where(abuser, F32(cfg.abusers.redeem_rate), hidden.redeem_affinity[rows, None] * usable)
    spend_if_redeem = np.where(abuser, b, np.maximum(b, m))
    return Parts(p0, basket, exposure, deliverable, lift, redeem_if_base, spend_if_redeem)


def truth_from_parts(parts: Parts, arms: ArmTable, arm_ids: tuple[str, ...]) -> Truth:
    """Expected buy, spend, redeem and profit for every arm (control in column 0)."""
    n, n_arms = parts.p0.size, arms.n_arms
    o, c = arms.offer_idx[1:], arms.channel_idx[1:]
    p0 = parts.p0.astype(F32)[:, None]
    base_spend = (parts.p0 * parts.basket).astype(F32)[:, None]
    expo = parts.exposure[:, c]
    q = parts.redeem_if_base[:, o]
    big_m = parts.spend_if_redeem[:, o]
    inc = (1.0 - p0) * expo * parts.lift[:, o]
    redeem_base = expo * p0 * q
    shape = (n, n_arms)
    buy, spend, redeem = np.empty(shape, F32), np.empty(shape, F32), np.empty(shape, F32)
    buy[:, :1], spend[:, :1], redeem[:, :1] = p0, base_spend, 0.0
    buy[:, 1:] = p0 + inc
    redeem[:, 1:] = redeem_base + inc
    spend[:, 1:] = base_spend + redeem_base * (big_m - parts.basket[:, None]) + inc * big_m
    profit = F32(arms.margin) * spend - arms.redeem_cost * redeem - arms.contact_cost
    eligible = np.ones(shape, dtype=bool)
    eligible[:, 1:] = parts.deliverable[:, c]
    return Truth(arm_ids, buy, spend, redeem, profit, eligible)
