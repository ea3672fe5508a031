"""Coupon-abuse risk per customer: identity rules plus a model of redemption without incremental purchases.

Coupon farmers run several accounts on one phone or one payment account, redeem most coupons they see, and buy
what they would have bought anyway: their redemptions bring no extra purchase and no trade-up to the coupon's
minimum spend. Every quantity here comes from the visible ``customers`` table and the canonical events strictly
before ``at``.

:func:`abuse_features` (one row per customer, index ``customer_id``):

- ``accounts_per_device`` / ``accounts_per_payment``: accounts sharing the customer's device / payment id
  (1 when the column is missing);
- ``transactions``, ``offers_viewed``, ``offers_redeemed``; ``redeem_per_view`` (redemptions per viewed offer,
  shrunk toward the population rate by a prior worth 2 views) and ``redeem_share`` (share of purchases that
  redeemed a coupon, same shrinkage toward the population share);
- with a catalog (minimum spends): ``below_min_redemptions``, redemptions whose purchase did not reach the
  coupon's minimum spend, and ``min_spend_stretch``, the median ratio of a redeemed coupon's minimum spend to the
  customer's ordinary basket (farmers redeem coupons far above what they usually spend);
- ``trade_up``: median ratio of a redeemed purchase to the customer's ordinary (non-redeemed) basket.

A redeemed purchase is a transaction with the same customer and time as an ``offer_completed`` event.

Scores (:func:`abuse_scores`), all in [0, 1]:

- ``rule_score``: the largest weight of the :class:`AbuseRules` that fire (payment id shared by at least
  ``payment_accounts`` accounts; device shared by at least ``device_accounts``; a redemption below the minimum
  spend), with the reasons in ``reasons``;
- ``behaviour_score``: P(abuser | behaviour) from a fitted classifier of the behaviour columns (any object with
  ``predict_proba``; offerlift's is `offerlift.training.abuse_model.AbuseModel`, trained on confirmed cases or on
  the identity-rule flags (:func:`identity_flags`) as weak labels), so it can find farmers who do not share ids;
  NaN without a model;
- ``risk = 1 - (1 - rule_score) * (1 - behaviour_score)`` and its ``band`` (low / cap / exclude).

:func:`abuse_mask` turns the risk into the (n, K) mask the policy takes: no coupon at all at or above
``exclude_at``, only coupons worth at most ``cap_value`` at or above ``cap_at``; the control arm always.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError, DataError, SchemaError
from offerlift.features.segments import canonical

log = logging.getLogger(__name__)

BEHAVIOUR_COLUMNS = (
    "transactions",
    "offers_viewed",
    "offers_redeemed",
    "redeem_per_view",
    "redeem_share",
    "below_min_redemptions",
    "min_spend_stretch",
    "trade_up",
)
COUNT_COLUMNS = ("transactions", "offers_viewed", "offers_redeemed", "below_min_redemptions")
PRIOR_STRENGTH = 2.0
BANDS = ("low", "cap", "exclude")


@dataclass(frozen=True)
class AbuseRules:
    """Identity and threshold rules and the risk each one means when it fires."""

    payment_accounts: int = 3
    payment_weight: float = 0.95
    device_accounts: int = 3
    device_weight: float = 0.8
    below_min_weight: float = 0.9

    def __post_init__(self) -> None:
        for name in ("payment_weight", "device_weight", "below_min_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"abuse rules: {name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.payment_accounts < 2 or self.device_accounts < 2:
            raise ConfigError("abuse rules: payment_accounts and device_accounts must be at least 2")


@dataclass(frozen=True)
class AbusePolicy:
    """How the risk limits offers: exclude at or above `exclude_at`, cap the coupon value at or above `cap_at`."""

    exclude_at: float = 0.8
    cap_at: float = 0.5
    cap_value: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.cap_at <= self.exclude_at <= 1.0:
            raise ConfigError(
                f"abuse policy: need 0 <= cap_at <= exclude_at <= 1, got {self.cap_at}, {self.exclude_at}"
            )
        if self.cap_value < 0:
            raise ConfigError(f"abuse policy: cap_value must be >= 0, got {self.cap_value!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> AbusePolicy:
        """Build from a YAML mapping; ConfigError names unknown keys."""
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"abuse policy: unknown keys {unknown}; known keys are {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**d)


def redeemed_purchases(events: pd.DataFrame) -> pd.DataFrame:
    """Transactions with ``redeemed`` (bool) and the ``offer_id`` of the completion at the same customer and time."""
    kind = events["event"].to_numpy(dtype=object)
    tx = events.loc[kind == "transaction", ["customer_id", "time", "amount"]].copy()
    done = events.loc[kind == "offer_completed", ["customer_id", "time", "offer_id"]]
    done = done.drop_duplicates(["customer_id", "time"])
    tx["customer_id"] = tx["customer_id"].astype(str)
    done = done.assign(customer_id=done["customer_id"].astype(str))
    out = tx.merge(done, on=["customer_id", "time"], how="left")
    out["redeemed"] = out["offer_id"].notna()
    out["amount"] = pd.to_numeric(out["amount"], errors="coerce").fillna(0.0)
    return out


def _shared(customers: pd.DataFrame, col: str) -> np.ndarray:
    if col not in customers.columns:
        return np.ones(len(customers))
    return customers.groupby(col, dropna=False)[col].transform("size").to_numpy(dtype=float)


def abuse_features(
    events: pd.DataFrame, customers: pd.DataFrame, at: float | None = None, catalog: Catalog | None = None
) -> pd.DataFrame:
    """Identity and behaviour columns of every customer of `customers` (see the module doc)."""
    events = canonical(events)
    if "customer_id" not in customers.columns:
        raise SchemaError("customers", "customer_id", f"missing column; the table has {list(customers.columns)}")
    if at is not None:
        events = events.loc[pd.to_numeric(events["time"]).to_numpy(dtype=float) < float(at)]
    ids = pd.Index(customers["customer_id"].astype(str), name="customer_id")
    out = pd.DataFrame(index=ids)
    out["accounts_per_device"] = _shared(customers, "device_id")
    out["accounts_per_payment"] = _shared(customers, "payment_id")
    purchases = redeemed_purchases(events)
    views = events.loc[events["event"] == "offer_viewed", "customer_id"].astype(str).value_counts()
    n_tx = purchases.groupby("customer_id").size().reindex(ids, fill_value=0).to_numpy(dtype=float)
    red = purchases.loc[purchases["redeemed"]]
    n_red = red.groupby("customer_id").size().reindex(ids, fill_value=0).to_numpy(dtype=float)
    n_view = views.reindex(ids, fill_value=0).to_numpy(dtype=float)
    out["transactions"], out["offers_viewed"], out["offers_redeemed"] = n_tx, n_view, n_red
    p_view = n_red.sum() / n_view.sum() if n_view.sum() > 0 else 0.0
    p_share = n_red.sum() / n_tx.sum() if n_tx.sum() > 0 else 0.0
    k = PRIOR_STRENGTH
    out["redeem_per_view"] = np.clip((np.minimum(n_red, n_view) + k * min(p_view, 1.0)) / (n_view + k), 0.0, 1.0)
    out["redeem_share"] = (n_red + k * p_share) / (n_tx + k)
    ordinary = purchases.loc[~purchases["redeemed"]].groupby("customer_id")["amount"].median()
    red = red.assign(ordinary=red["customer_id"].map(ordinary))
    out["trade_up"] = (red["amount"] / red["ordinary"]).groupby(red["customer_id"]).median().reindex(ids)
    if catalog is not None:
        min_spend = {o.id: float(o.min_spend) for o in catalog.offers}
        need = red["offer_id"].map(min_spend)
        below = (red["amount"] < need - 1e-9).groupby(red["customer_id"]).sum()
        out["below_min_redemptions"] = below.reindex(ids, fill_value=0).to_numpy(dtype=float)
        out["min_spend_stretch"] = (need / red["ordinary"]).groupby(red["customer_id"]).median().reindex(ids)
    else:
        out["below_min_redemptions"] = 0.0
        out["min_spend_stretch"] = np.nan
    return out


def rule_score(features: pd.DataFrame, rules: AbuseRules = AbuseRules()) -> tuple[np.ndarray, list[str]]:
    """(score, reasons): the largest weight of the rules that fire per row, and a text naming them."""
    n = len(features)
    score = np.zeros(n)
    reasons: list[list[str]] = [[] for _ in range(n)]
    pay = features["accounts_per_payment"].to_numpy(dtype=float)
    dev = features["accounts_per_device"].to_numpy(dtype=float)
    below = features.get("below_min_redemptions", pd.Series(0.0, index=features.index)).to_numpy(dtype=float)
    checks = (
        (pay >= rules.payment_accounts, rules.payment_weight, "payment id shared by {:.0f} accounts", pay),
        (dev >= rules.device_accounts, rules.device_weight, "device shared by {:.0f} accounts", dev),
        (below > 0, rules.below_min_weight, "{:.0f} redemption(s) below the minimum spend", below),
    )
    for fired, weight, text, values in checks:
        score = np.where(fired, np.maximum(score, weight), score)
        for i in np.flatnonzero(fired):
            reasons[i].append(text.format(values[i]))
    return score, ["; ".join(r) for r in reasons]


def identity_flags(features: pd.DataFrame, rules: AbuseRules = AbuseRules()) -> np.ndarray:
    """(n,) bool: the identity rules (shared payment id or device) fire; the default weak labels."""
    pay = features["accounts_per_payment"].to_numpy(dtype=float) >= rules.payment_accounts
    return pay | (features["accounts_per_device"].to_numpy(dtype=float) >= rules.device_accounts)


def risk_band(risk: np.ndarray, policy: AbusePolicy = AbusePolicy()) -> np.ndarray:
    """ "exclude", "cap" or "low" per row."""
    risk = np.asarray(risk, dtype=float)
    return np.where(risk >= policy.exclude_at, "exclude", np.where(risk >= policy.cap_at, "cap", "low")).astype(object)


def abuse_scores(
    features: pd.DataFrame,
    rules: AbuseRules = AbuseRules(),
    model: Any = None,
    policy: AbusePolicy = AbusePolicy(),
) -> pd.DataFrame:
    """rule_score, behaviour_score (``model.predict_proba(features)[:, 1]``, NaN without a model), risk, band and
    reasons per customer."""
    score, reasons = rule_score(features, rules)
    behaviour = model.predict_proba(features)[:, 1] if model is not None else np.full(len(features), np.nan)
    risk = 1.0 - (1.0 - score) * (1.0 - np.nan_to_num(behaviour, nan=0.0))
    reasons = [
        "; ".join(x for x in (r, f"behaviour p={b:.2f}" if b >= policy.cap_at else "") if x)
        for r, b in zip(reasons, np.nan_to_num(behaviour, nan=0.0), strict=True)
    ]
    return pd.DataFrame(
        {
            "rule_score": score,
            "behaviour_score": behaviour,
            "risk": risk,
            "band": risk_band(risk, policy),
            "reasons": reasons,
        },
        index=features.index,
    )


def abuse_mask(risk: np.ndarray, catalog: Catalog, policy: AbusePolicy = AbusePolicy()) -> np.ndarray:
    """(n, K) bool: arms allowed given the risk (AND it with the rules' mask before the policy decides)."""
    risk = np.asarray(risk, dtype=float)
    if risk.ndim != 1:
        raise DataError(f"abuse_mask: risk must be one number per customer, got shape {risk.shape}")
    values = np.array([a.coupon_value for a in catalog.arms])
    treated = np.array([not a.is_control for a in catalog.arms])
    mask = np.ones((risk.size, values.size), dtype=bool)
    mask[:, treated] &= (risk < policy.exclude_at)[:, None]
    capped = (risk >= policy.cap_at)[:, None] & (values[None, :] > policy.cap_value)
    mask &= ~capped
    mask[:, ~treated] = True
    return mask
