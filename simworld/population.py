"""Drawing the simulated population: the visible `customers` table and the hidden traits, kept apart.

Only :class:`Visible` arrays and the `customers` frame describe what the business can see. The behaviour that
drives outcomes (buying rate, basket, price sensitivity, open rates, fatigue, abuse) lives in
:class:`HiddenTraits`, which no feature builder should ever receive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.simworld.config import WorldConfig

F32 = np.float32
HOURS_PER_YEAR = 24.0 * 365.0


@dataclass(frozen=True)
class HiddenTraits:
    """The ground truth of each customer (arrays of length n, or (n, n_channels)); never shown to models.

    Attributes:
        base_rate: P(buy in one window) with no offer, before city shocks.
        basket: expected spend of one ordinary purchase.
        sensitivity: the largest lift in P(buy) a coupon can give a customer who sees it.
        value_scale: coupon value at which the lift reaches 63% of `sensitivity` (diminishing returns).
        redeem_affinity: P(redeem) of a customer who buys anyway and sees a usable coupon (cannibalization).
        open_rate: P(open) per channel of a delivered message, (n, n_channels).
        fatigue_rate: exposure is multiplied by exp(-fatigue_rate * recent contacts).
        browse_rate: P(visit) of a customer who does not buy.
        abuser: coupon farmer (redeems, never buys more).
    """

    base_rate: np.ndarray
    basket: np.ndarray
    sensitivity: np.ndarray
    value_scale: np.ndarray
    redeem_affinity: np.ndarray
    open_rate: np.ndarray
    fatigue_rate: np.ndarray
    browse_rate: np.ndarray
    abuser: np.ndarray


@dataclass(frozen=True)
class Visible:
    """Visible attributes as arrays, for fast lookups: city index, and reach/consent per channel (n, C)."""

    city: np.ndarray
    reach: np.ndarray
    consent: np.ndarray

    @property
    def deliverable(self) -> np.ndarray:
        """(n, C) bool: the channel reaches the customer and the customer has opted in."""
        return self.reach & self.consent


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def _ids(prefix: str, codes: np.ndarray, width: int) -> np.ndarray:
    return np.array([f"{prefix}{c:0{width}d}" for c in codes.tolist()], dtype=object)


def _tiers(latent: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    """Tier index from a latent score, cut at the quantiles given by the tier weights."""
    w = np.asarray(weights, dtype=float)
    cuts = np.quantile(latent, np.cumsum(w / w.sum())[:-1]) if latent.size else np.zeros(w.size - 1)
    return np.searchsorted(cuts, latent).astype(np.int8)


def _abuser_rings(n: int, cfg: WorldConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Which rows are abusers, and the ring leader of each row (itself when not in a ring)."""
    leader = np.arange(n)
    abuser = np.zeros(n, dtype=bool)
    target = round(cfg.abusers.share * n)
    if target == 0:
        return abuser, leader
    sizes = rng.integers(cfg.abusers.ring_min, cfg.abusers.ring_max + 1, size=target)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), target)) + 1]
    sizes[-1] -= max(0, int(sizes.sum()) - target)
    sizes = sizes[sizes > 0]
    members = rng.choice(n, size=int(sizes.sum()), replace=False)
    abuser[members] = True
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    leader[members] = members[starts]
    return abuser, leader


def _households(abuser: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Device owner per row: a share of ordinary customers shares a device with one other account."""
    n = abuser.size
    owner = np.arange(n)
    normal = np.flatnonzero(~abuser)
    pairs = int(share * normal.size / 2)
    if pairs:
        chosen = rng.choice(normal, size=2 * pairs, replace=False)
        owner[chosen[1::2]] = chosen[0::2]
    return owner


def draw_population(
    cfg: WorldConfig, catalog: Catalog, n: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, Visible, HiddenTraits]:
    """Draw n customers: the visible `customers` table, its arrays, and the hidden traits."""
    pop = cfg.population
    age = np.clip(np.rint(rng.normal(38.0, 12.0, n)), 18, 80)
    z_age = (age - 40.0) / 15.0
    inc_z = 0.25 * z_age + rng.standard_normal(n)
    income = np.round(np.exp(10.6 + 0.5 * inc_z), -2)
    tier = _tiers(0.6 * inc_z + rng.standard_normal(n), cfg.tier_weights)
    w = np.array([c.weight for c in cfg.cities], dtype=float)
    city = rng.choice(len(cfg.cities), size=n, p=w / w.sum()).astype(np.int16)
    signup = -np.minimum(rng.exponential(1.5 * HOURS_PER_YEAR, n), 8 * HOURS_PER_YEAR)
    tenure_z = np.log1p(-signup / HOURS_PER_YEAR) - 0.7

    rate_mult = np.array([c.rate_mult for c in cfg.cities])[city]
    basket_mult = np.array([c.basket_mult for c in cfg.cities])[city]
    base = _sigmoid(
        pop.base_logit
        + pop.base_tier_slope * tier
        + 0.25 * tenure_z
        + np.log(rate_mult)
        + pop.base_sd * rng.standard_normal(n)
    )
    basket = (
        pop.basket_median
        * basket_mult
        * np.exp(pop.basket_income_slope * inc_z + pop.basket_tier_slope * tier + pop.basket_sd * rng.normal(size=n))
    )
    sens_noise = rng.standard_normal(n)
    sens = _sigmoid(
        pop.sensitivity_logit
        + pop.sensitivity_income_slope * inc_z
        + pop.sensitivity_age_slope * z_age
        - 0.2 * tier
        + pop.sensitivity_sd * sens_noise
    )
    indifferent = rng.random(n) < _sigmoid(_logit(pop.indifferent_share) + 0.8 * inc_z + 0.3 * tier)
    sens = np.where(indifferent, 0.02 * sens, sens)
    value_scale = pop.value_scale * basket * np.exp(0.3 * rng.standard_normal(n))
    affinity = _sigmoid(_logit(pop.redeem_affinity) + 0.5 * sens_noise + 0.8 * rng.standard_normal(n))
    fatigue = cfg.fatigue.rate * np.exp(0.4 * rng.standard_normal(n))
    browse = np.clip(pop.browse_rate * np.exp(0.3 * rng.standard_normal(n)), 0.0, 0.9)

    n_ch = len(catalog.channels)
    open_rate = np.empty((n, n_ch))
    reach = np.empty((n, n_ch), dtype=bool)
    consent = np.empty((n, n_ch), dtype=bool)
    for j, ch in enumerate(catalog.channels):
        beh = cfg.channel(ch.id)
        open_rate[:, j] = _sigmoid(_logit(beh.open_rate) + beh.open_age_slope * z_age + 0.8 * rng.normal(size=n))
        reach[:, j] = rng.random(n) < _sigmoid(_logit(ch.reach) + beh.reach_age_slope * z_age + 0.3 * tier)
        consent[:, j] = (rng.random(n) < beh.consent_rate) | (ch.consent is None)

    abuser, leader = _abuser_rings(n, cfg, rng)
    ab = cfg.abusers
    base[abuser] = rng.uniform(ab.base_rate_min, ab.base_rate_max, int(abuser.sum()))
    sens[abuser] = 0.0
    reach[abuser] = True  # farmers install the app and opt in everywhere
    consent[abuser] = True
    device_owner = np.where(abuser, leader, _households(abuser, pop.household_share, rng))
    scramble = rng.permutation(n)

    width = max(7, len(str(max(n - 1, 0))))
    customers = pd.DataFrame(
        {
            "customer_id": _ids("c", np.arange(n), width),
            "signup_time": signup.round(1),
            "age": age.astype(np.int16),
            "income": income,
            "city": np.array([c.id for c in cfg.cities], dtype=object)[city],
            "tier": np.array(cfg.tiers, dtype=object)[tier],
        }
    )
    for j, ch in enumerate(catalog.channels):
        customers[f"reach_{ch.id}"] = reach[:, j]
        customers[f"consent_{ch.id}"] = consent[:, j]
    customers["device_id"] = _ids("d", scramble[device_owner], width)
    customers["payment_id"] = _ids("p", scramble[leader], width)

    hidden = HiddenTraits(
        base_rate=base.astype(F32),
        basket=basket.astype(F32),
        sensitivity=sens.astype(F32),
        value_scale=value_scale.astype(F32),
        redeem_affinity=affinity.astype(F32),
        open_rate=open_rate.astype(F32),
        fatigue_rate=fatigue.astype(F32),
        browse_rate=browse.astype(F32),
        abuser=abuser,
    )
    return customers, Visible(city=city, reach=reach, consent=consent), hidden
