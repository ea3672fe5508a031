"""Business rules that come before the models: eligibility, consent, reach, contact caps and the budget.

`allowed_arms` turns customer attributes and contact counts into an (n, K) mask of the arms a customer may get.
The control arm (no offer) is always allowed. Vectorized, so the service (n = 1) and batch jobs share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features.catalog import Catalog
from features.eligibility import reachable_arms
from features.errors import ConfigError

LIFECYCLE_NEW = ("never_bought", "potential")


@dataclass(frozen=True)
class Rules:
    """Rule configuration (YAML section ``rules``).

    Attributes:
        new_customers_only: only customers in lifecycle stage never_bought/potential are eligible.
        cities: eligible cities (empty: all).
        tiers: tier names from lowest to highest; with `min_tier`, customers below it are not eligible.
        min_tier: lowest eligible tier (None: all).
        cap_per_customer: most contacts a customer may get inside the window (all channels).
        cap_per_channel: most contacts per channel inside the window.
        cap_window_hours: the window of the caps.
        require_consent: a channel that names a consent flag needs that flag to be true (opt-in).
    """

    new_customers_only: bool = False
    cities: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    min_tier: str | None = None
    cap_per_customer: int | None = 3
    cap_per_channel: Mapping[str, int] = field(default_factory=dict)
    cap_window_hours: float = 168.0
    require_consent: bool = True

    def __post_init__(self) -> None:
        if self.min_tier is not None and self.min_tier not in self.tiers:
            raise ConfigError(f"rules: min_tier {self.min_tier!r} is not in tiers {list(self.tiers)}")
        if self.cap_per_customer is not None and self.cap_per_customer < 0:
            raise ConfigError(f"rules: cap_per_customer must be >= 0, got {self.cap_per_customer!r}")
        if self.cap_window_hours <= 0:
            raise ConfigError(f"rules: cap_window_hours must be positive, got {self.cap_window_hours!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Rules:
        """Build from the YAML form; ConfigError names an unknown key."""
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"rules: unknown keys {unknown}; known keys are {sorted(known)}")
        for key in ("cities", "tiers"):
            if key in d:
                d[key] = tuple(d[key] or ())
        return cls(**d)


def _column(customers: Mapping[str, Sequence[Any]], name: str, n: int, default: Any) -> np.ndarray:
    values = customers.get(name)
    if values is None:
        return np.full(n, default, dtype=object)
    return np.asarray(values, dtype=object)


def eligible_customers(customers: Mapping[str, Sequence[Any]], n: int, rules: Rules) -> np.ndarray:
    """(n,) bool: customers the campaign may target at all."""
    ok = np.ones(n, dtype=bool)
    if rules.new_customers_only:
        ok &= np.isin(_column(customers, "lifecycle_stage", n, None), LIFECYCLE_NEW)
    if rules.cities:
        ok &= np.isin(_column(customers, "city", n, None), rules.cities)
    if rules.min_tier is not None:
        rank = {t: i for i, t in enumerate(rules.tiers)}
        tiers = _column(customers, "tier", n, None)
        ok &= np.array([rank.get(t, -1) >= rank[rules.min_tier] for t in tiers], dtype=bool)
    return ok


def allowed_arms(
    catalog: Catalog,
    customers: Mapping[str, Sequence[Any]],
    n: int,
    rules: Rules,
    contacts: Mapping[str, Sequence[int]] | None = None,
    budget_left: float | None = None,
) -> np.ndarray:
    """(n, K) bool mask of the arms each customer may get.

    Args:
        catalog: arms, control first.
        customers: columns of customer attributes (``consent_<channel>`` / the channel's consent flag,
            ``reach_<channel>``, ``city``, ``tier``, ``lifecycle_stage``); a missing consent flag means no consent.
        n: number of customers.
        rules: the rule configuration.
        contacts: per channel, contacts of each customer inside the cap window (missing: 0).
        budget_left: money left in the budget; arms whose worst-case cost (coupon value + contact cost) exceeds it
            are not allowed (None: no budget).
    """
    arms = catalog.arms
    mask = np.ones((n, len(arms)), dtype=bool)
    mask[:, 1:] &= eligible_customers(customers, n, rules)[:, None]
    contacts = contacts or {}
    total = np.zeros(n, dtype=np.int64)
    for values in contacts.values():
        total += np.asarray(values, dtype=np.int64)
    if rules.cap_per_customer is not None:
        mask[:, 1:] &= (total < rules.cap_per_customer)[:, None]
    mask &= reachable_arms(catalog, customers, n, rules.require_consent)
    for j, arm in enumerate(arms):
        if arm.is_control or arm.channel is None:
            continue
        cap = rules.cap_per_channel.get(arm.channel.id)
        if cap is not None:
            used = np.asarray(contacts.get(arm.channel.id, np.zeros(n)), dtype=np.int64)
            mask[:, j] &= used < cap
    if budget_left is not None:
        worst = np.array([a.redeem_cost + a.contact_cost for a in arms])
        mask &= worst[None, :] <= budget_left + 1e-12
    mask[:, 0] = True
    return mask
