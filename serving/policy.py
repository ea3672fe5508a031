"""The decision policy: a pure function from scores, rules and budget state to a decision.

Vectorized over customers, so the service (one customer) and batch scoring (millions) run the same code.
Randomness comes in as uniform draws, so a decision is a deterministic function of its inputs.

For each customer, with K arms (column 0 = the control arm "no offer"):
1. Holdout customers (a stable hash of customer and experiment below the holdout share) get no offer.
2. Arms that break a rule (eligibility, consent, contact caps, budget) are masked out; the control arm never is.
   When no allowed treatment arm has a positive score, the fallback arm is used if it is allowed (a cheap
   default such as a message without a coupon), else no offer. The default fallback is no offer.
3. With probability ``explore`` the arm is drawn uniformly from the allowed arms (group "explore").
4. Otherwise the allowed arm with the largest ``incr - price * cost`` wins (group "exploit"); no offer when that
   score is not positive.

The logged ``propensity`` is the probability that this customer receives the chosen arm under the policy:
``holdout * 1[arm = control] + (1 - holdout) * (explore / |allowed| + (1 - explore) * 1[arm = greedy])``,
treating holdout membership (a hash) as the random draw it imitates. `group_propensity` is the same within the
customer's group. Inverse-propensity estimates over all logged decisions use ``propensity``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from offerlift.features.errors import ConfigError, PolicyError

GROUPS = ("holdout", "explore", "exploit")


@dataclass(frozen=True)
class PolicyConfig:
    """Shares and prices of the policy.

    Attributes:
        holdout: share of customers (by stable hash) that always get no offer.
        explore: share of the other decisions that pick uniformly among the allowed arms.
        experiment: salt of the holdout hash (a new experiment gets a new holdout).
        fallback_arm: arm index used when no allowed treatment arm pays (0 = no offer).
    """

    holdout: float = 0.10
    explore: float = 0.10
    experiment: str = "default"
    fallback_arm: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"policy holdout share must be in [0, 1), got {self.holdout!r}")
        if not 0.0 <= self.explore <= 1.0:
            raise ConfigError(f"policy explore share must be in [0, 1], got {self.explore!r}")
        if self.fallback_arm < 0:
            raise ConfigError(f"fallback_arm must be an arm index, got {self.fallback_arm!r}")


@dataclass(frozen=True)
class Decisions:
    """Decisions for n customers (arrays of length n)."""

    arm: np.ndarray
    propensity: np.ndarray
    group_propensity: np.ndarray
    group: np.ndarray
    score: np.ndarray
    incr: np.ndarray
    cost: np.ndarray


def holdout_unit(customer_ids: list[str] | np.ndarray, experiment: str) -> np.ndarray:
    """A stable uniform number in [0, 1) per customer and experiment (blake2b of ``experiment:customer``)."""
    out = np.empty(len(customer_ids), dtype=np.float64)
    for i, cid in enumerate(customer_ids):
        h = hashlib.blake2b(f"{experiment}:{cid}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "big") / 2.0**64
    return out


def decide(
    incr: np.ndarray,
    cost: np.ndarray,
    allowed: np.ndarray,
    holdout_u: np.ndarray,
    u: np.ndarray,
    config: PolicyConfig,
    price: float = 0.0,
) -> Decisions:
    """Choose an arm for each customer.

    Args:
        incr: (n, K) expected incremental profit of each arm over no offer (column 0 is the control).
        cost: (n, K) expected cost of each arm (coupon cost times redemption probability plus contact cost).
        allowed: (n, K) bool, arms that pass every rule; column 0 is treated as allowed.
        holdout_u: (n,) stable uniforms from `holdout_unit`.
        u: (n, 2) uniform draws: u[:, 0] decides exploration, u[:, 1] picks the explored arm.
        config: shares of holdout and exploration, fallback arm.
        price: the budget's pacing price (lambda) per unit of cost.
    """
    incr, cost, allowed = np.asarray(incr, float), np.asarray(cost, float), np.array(allowed, dtype=bool)
    n, k = incr.shape
    if cost.shape != (n, k) or allowed.shape != (n, k) or u.shape != (n, 2) or holdout_u.shape != (n,):
        raise PolicyError(f"shapes do not match: incr {incr.shape}, cost {cost.shape}, allowed {allowed.shape}")
    if config.fallback_arm >= k:
        raise ConfigError(f"fallback_arm {config.fallback_arm} is not an arm index (K={k})")
    allowed[:, 0] = True
    rows = np.arange(n)

    score = np.where(allowed, incr - price * cost, -np.inf)
    score[:, 0] = 0.0
    greedy = np.argmax(score, axis=1)
    greedy = np.where(score[rows, greedy] > 0.0, greedy, 0)
    fb = config.fallback_arm
    greedy = np.where((greedy == 0) & allowed[:, fb], fb, greedy)

    n_allowed = allowed.sum(axis=1)
    explores = u[:, 0] < config.explore
    ranks = np.minimum((u[:, 1] * n_allowed).astype(int), n_allowed - 1)
    explored = np.argmax(np.cumsum(allowed, axis=1) > ranks[:, None], axis=1)

    holdout = holdout_u < config.holdout
    arm = np.where(holdout, 0, np.where(explores, explored, greedy))
    group = np.where(holdout, "holdout", np.where(explores, "explore", "exploit")).astype(object)

    within = config.explore / n_allowed + (1.0 - config.explore) * (arm == greedy)
    group_p = np.where(holdout, 1.0, within)
    propensity = config.holdout * (arm == 0) + (1.0 - config.holdout) * within
    return Decisions(
        arm=arm,
        propensity=propensity,
        group_propensity=group_p,
        group=group,
        score=score[rows, arm],
        incr=incr[rows, arm],
        cost=cost[rows, arm],
    )


def explain(incr: np.ndarray, allowed: np.ndarray, arm_ids: list[str], top: int = 3) -> list[dict[str, object]]:
    """The best few allowed arms of one customer with their expected incremental profit, best first."""
    order = np.argsort(-np.where(allowed, incr, -np.inf), kind="stable")
    out = []
    for j in order[:top]:
        if not allowed[j]:
            break
        out.append({"arm": arm_ids[j], "expected_incremental_profit": float(incr[j])})
    return out
