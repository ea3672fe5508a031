"""Business rules that come before the models: eligibility, segments, coupon abuse, consent, reach, contact caps
and the budget.

`allowed_arms` turns customer attributes and contact counts into an (n, K) mask of the arms a customer may get.
The control arm (no offer) is always allowed. Vectorized, so batch jobs use it; the service's one-customer path
(`offerlift.serving.decider.Champion.rule_mask`) is property-tested against it.

Segment rules (``segments:``) are a targeting spec of `offerlift.features.segments.select` over the customer's
attributes (online store columns such as ``lifecycle``, ``rfm_segment``, ``price_band``, ``tags``, or
``context.features``): only customers meeting every condition may get an offer; a missing attribute fails its
condition. Abuse rules (``abuse:``) read the customer's risk (column ``abuse_risk`` by default, written by ``offerlift
abuse --to-store``; missing means 0) and apply `offerlift.features.abuse.abuse_mask`: no coupon at or above
``exclude_at``, only coupons worth at most ``cap_value`` at or above ``cap_at``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.abuse import AbusePolicy, abuse_mask
from offerlift.features.catalog import Catalog
from offerlift.features.eligibility import reachable_arms
from offerlift.features.errors import ConfigError
from offerlift.features.segments import ALIASES, Condition, columns_match, compile_where, row_matches

LIFECYCLE_NEW = ("never_bought", "potential")
ABUSE_COLUMN = "abuse_risk"


@dataclass(frozen=True)
class AbuseRule:
    """How the customer's abuse risk limits offers: the thresholds and the attribute that holds the risk."""

    policy: AbusePolicy = field(default_factory=AbusePolicy)
    column: str = ABUSE_COLUMN

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | AbuseRule | None) -> AbuseRule | None:
        """From YAML (``exclude_at``, ``cap_at``, ``cap_value``, ``column``); None stays None."""
        if d is None or isinstance(d, AbuseRule):
            return d
        d = dict(d)
        column = str(d.pop("column", ABUSE_COLUMN))
        return cls(AbusePolicy.from_dict(d), column)

    def risk(self, value: Any) -> float:
        """The risk as a number (missing, NaN or not a number: 0)."""
        try:
            x = float(value)
        except (TypeError, ValueError):
            return 0.0
        return x if x == x else 0.0


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
        segments: targeting spec a customer must meet to get any offer (see the module doc; empty: everyone).
        abuse: the abuse-risk rule (None: risk is not used).
    """

    new_customers_only: bool = False
    cities: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    min_tier: str | None = None
    cap_per_customer: int | None = 3
    cap_per_channel: Mapping[str, int] = field(default_factory=dict)
    cap_window_hours: float = 168.0
    require_consent: bool = True
    segments: Mapping[str, Any] = field(default_factory=dict)
    abuse: AbuseRule | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "abuse", AbuseRule.from_dict(self.abuse))
        object.__setattr__(self, "_conditions", compile_where(self.segments))
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
        if not isinstance(d.get("segments") or {}, Mapping):
            raise ConfigError(f"rules: segments must be a mapping of conditions, got {d['segments']!r}")
        d["segments"] = dict(d.get("segments") or {})
        return cls(**d)

    @property
    def conditions(self) -> list[Condition]:
        """The compiled segment conditions."""
        return self._conditions  # type: ignore[attr-defined]

    def segment_ok(self, attrs: Mapping[str, Any]) -> bool:
        """Whether one customer's attributes meet the segment rules."""
        return row_matches(attrs, self.conditions)

    def attribute_columns(self) -> set[str]:
        """The customer attributes these rules read, besides ``consent_*`` / ``reach_*`` (for batch jobs)."""
        cols = {"city", "tier", "lifecycle_stage", "lifecycle"} | {c for c, _, _ in self.conditions}
        cols |= {ALIASES[c] for c in cols if c in ALIASES}
        return cols | ({self.abuse.column} if self.abuse is not None else set())


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
    if rules.conditions:
        ok &= columns_match(customers, n, rules.conditions)
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
            ``reach_<channel>``, ``city``, ``tier``, ``lifecycle_stage``, the segment rules' columns, the abuse
            risk); a missing consent flag means no consent.
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
    if rules.abuse is not None and customers.get(rules.abuse.column) is not None:
        values = pd.Series(np.asarray(customers[rules.abuse.column], dtype=object))
        risk = pd.to_numeric(values, errors="coerce").fillna(0.0).to_numpy(dtype=float)
        mask &= abuse_mask(risk, catalog, rules.abuse.policy)
    if budget_left is not None:
        worst = np.array([a.redeem_cost + a.contact_cost for a in arms])
        mask &= worst[None, :] <= budget_left + 1e-12
    mask[:, 0] = True
    return mask
