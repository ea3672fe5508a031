"""The decision policy: a pure function from scores, rules and budget state to a decision.

Vectorized over customers, so the service (one customer) and batch scoring (millions) run the same code.
Randomness comes in as uniform draws, so a decision is a deterministic function of its inputs.

For each customer, with K arms (column 0 = the control arm "no offer"):
1. Holdout customers (a stable hash of customer and experiment below the holdout share) get no offer.
2. Arms that break a rule (eligibility, consent, contact caps, budget) are masked out; the control arm never is.
   When no allowed treatment arm has a positive score, the fallback arm is used if it is allowed (a cheap
   default such as a message without a coupon), else no offer. The default fallback is no offer.
3. With probability ``explore`` the arm is drawn from the exploration distribution ``q`` over the allowed arms
   (group "explore"): uniform (``explore_scheme="uniform"``), or ``"softmax"``: a share ``explore_floor`` spread
   evenly over the allowed arms and the rest a softmax of the deciding score ``incr - price * cost`` at
   ``temperature`` (money per customer), so that exploration spends its draws on the arms that could be best while
   every allowed arm keeps a probability of at least ``explore * explore_floor / |allowed|`` (any policy can still
   be valued off-policy).
4. Otherwise the allowed arm with the largest ``incr - price * cost`` wins (group "exploit"); no offer when that
   score is not positive.

The logged ``propensity`` is the probability that this customer receives the chosen arm under the policy:
``holdout * 1[arm = control] + (1 - holdout) * (explore * q(arm) + (1 - explore) * 1[arm = greedy])``,
treating holdout membership (a hash) as the random draw it imitates. `group_propensity` is the same within the
customer's group. Inverse-propensity estimates over all logged decisions use ``propensity``.

Champion and challenger: with ``challenger`` scores (`ChallengerScores`: the challenger model's incremental profit
and cost of every arm, and which customers its traffic serves), the customers of the challenger's traffic are
decided by the same steps on the challenger's scores, the others on the champion's. Both models' greedy arms are
returned for every customer (``champion_greedy``, ``challenger_greedy``; holdout customers too), under the same
rule mask, so that the promotion gate knows exactly where the two policies would act alike.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from offerlift.features.errors import ConfigError, PolicyError

GROUPS = ("holdout", "explore", "exploit")
SCHEMES = ("uniform", "softmax")


@dataclass(frozen=True)
class PolicyConfig:
    """Shares and prices of the policy.

    Attributes:
        holdout: share of customers (by stable hash) that always get no offer.
        explore: share of the other decisions that draw their arm from the exploration distribution.
        experiment: salt of the holdout hash (a new experiment gets a new holdout).
        fallback_arm: arm index used when no allowed treatment arm pays (0 = no offer).
        explore_scheme: "uniform" (every allowed arm alike) or "softmax" (see the module doc).
        temperature: softmax temperature, in the score's units (money per customer).
        explore_floor: share of the softmax exploration spread evenly over the allowed arms (0 < floor <= 1).
    """

    holdout: float = 0.10
    explore: float = 0.10
    experiment: str = "default"
    fallback_arm: int = 0
    explore_scheme: str = "uniform"
    temperature: float = 1.0
    explore_floor: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"policy holdout share must be in [0, 1), got {self.holdout!r}")
        if not 0.0 <= self.explore <= 1.0:
            raise ConfigError(f"policy explore share must be in [0, 1], got {self.explore!r}")
        if self.fallback_arm < 0:
            raise ConfigError(f"fallback_arm must be an arm index, got {self.fallback_arm!r}")
        if self.explore_scheme not in SCHEMES:
            raise ConfigError(f"explore_scheme must be one of {', '.join(SCHEMES)}, got {self.explore_scheme!r}")
        if not self.temperature > 0.0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature!r}")
        if not 0.0 < self.explore_floor <= 1.0:
            raise ConfigError(f"explore_floor must be in (0, 1], got {self.explore_floor!r}")


@dataclass(frozen=True)
class ChallengerScores:
    """The challenger's scores for the same customers and arms, and the customers its traffic serves.

    Attributes:
        incr: (n, K) the challenger's expected incremental profit of every arm.
        cost: (n, K) the challenger's expected cost of every arm.
        serves: (n,) bool, True for the customers decided by the challenger.
        explore: the challenger's exploration share (None: the policy's ``explore``); a model that knows nothing
            yet (the loop's starting random policy) explores everything while the other one does not.
    """

    incr: np.ndarray
    cost: np.ndarray
    serves: np.ndarray
    explore: float | None = None


@dataclass(frozen=True)
class Decisions:
    """Decisions for n customers (arrays of length n).

    ``greedy`` is the greedy arm of the model whose traffic the customer is in; ``champion_greedy`` and
    ``challenger_greedy`` are both models' greedy arms under the same rules (the latter -1 without a challenger);
    ``challenger`` is True where the challenger decided (its traffic, outside the holdout). ``arm_probs`` (n, K) is
    the probability of every arm under the treated policy (exploration and greedy choice, before the holdout), also
    for holdout customers: what the policy would have done had they not been held out (the A/B report weighs the
    holdout by it)."""

    arm: np.ndarray
    propensity: np.ndarray
    group_propensity: np.ndarray
    group: np.ndarray
    score: np.ndarray
    incr: np.ndarray
    cost: np.ndarray
    greedy: np.ndarray
    champion_greedy: np.ndarray
    challenger_greedy: np.ndarray
    challenger: np.ndarray
    arm_probs: np.ndarray


def holdout_unit(customer_ids: list[str] | np.ndarray, experiment: str) -> np.ndarray:
    """A stable uniform number in [0, 1) per customer and experiment (blake2b of ``experiment:customer``)."""
    out = np.empty(len(customer_ids), dtype=np.float64)
    for i, cid in enumerate(customer_ids):
        h = hashlib.blake2b(f"{experiment}:{cid}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "big") / 2.0**64
    return out


def greedy_choice(score: np.ndarray, allowed: np.ndarray, fallback_arm: int = 0) -> np.ndarray:
    """The greedy arm of each row: the allowed arm with the largest score when it is positive, else the fallback
    arm when it is allowed, else no offer (0). ``score`` must be -inf where not allowed, 0 for the control."""
    rows = np.arange(score.shape[0])
    greedy = np.argmax(score, axis=1)
    greedy = np.where(score[rows, greedy] > 0.0, greedy, 0)
    return np.where((greedy == 0) & allowed[:, fallback_arm], fallback_arm, greedy)


def exploration_distribution(score: np.ndarray, allowed: np.ndarray, config: PolicyConfig) -> np.ndarray:
    """(n, K) the exploration distribution ``q`` over the allowed arms (rows sum to 1; 0 where not allowed)."""
    n_allowed = allowed.sum(axis=1, keepdims=True)
    uniform = allowed / n_allowed
    if config.explore_scheme == "uniform":
        return uniform
    z = np.where(allowed, score, -np.inf) / config.temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    soft = z / z.sum(axis=1, keepdims=True)
    return config.explore_floor * uniform + (1.0 - config.explore_floor) * soft


def arm_probabilities(
    incr: np.ndarray, cost: np.ndarray, allowed: np.ndarray, config: PolicyConfig, price: float = 0.0,
    explore: float | None = None,
) -> np.ndarray:  # fmt: skip
    """(n, K) the probability of every arm for a customer outside the holdout: ``explore * q + (1 - explore) *
    1[greedy]``, the policy as served (rules in ``allowed``, exploration, price), for exact valuations."""
    allowed = np.array(allowed, dtype=bool)
    allowed[:, 0] = True
    score = np.where(allowed, np.asarray(incr, float) - price * np.asarray(cost, float), -np.inf)
    score[:, 0] = 0.0
    share = config.explore if explore is None else explore
    probs = share * exploration_distribution(score, allowed, config)
    probs[np.arange(len(score)), greedy_choice(score, allowed, config.fallback_arm)] += 1.0 - share
    return probs


def _draw(q: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One arm per row from the distributions ``q`` by the inverse CDF at the uniforms ``u``."""
    cdf = np.cumsum(q, axis=1)
    pick = np.argmax(cdf > (u * cdf[:, -1])[:, None], axis=1)
    # rounding: never a zero-probability arm
    bad = q[np.arange(len(pick)), pick] <= 0.0
    if bad.any():
        pick[bad] = np.argmax(q[bad] > 0.0, axis=1)
    return pick


def decide(
    incr: np.ndarray,
    cost: np.ndarray,
    allowed: np.ndarray,
    holdout_u: np.ndarray,
    u: np.ndarray,
    config: PolicyConfig,
    price: float = 0.0,
    challenger: ChallengerScores | None = None,
) -> Decisions:
    """Choose an arm for each customer.

    Args:
        incr: (n, K) expected incremental profit of each arm over no offer (column 0 is the control).
        cost: (n, K) expected cost of each arm (coupon cost times redemption probability plus contact cost).
        allowed: (n, K) bool, arms that pass every rule; column 0 is treated as allowed.
        holdout_u: (n,) stable uniforms from `holdout_unit`.
        u: (n, 2) uniform draws: u[:, 0] decides exploration, u[:, 1] picks the explored arm.
        config: shares of holdout and exploration, exploration scheme, fallback arm.
        price: the budget's pacing price (lambda) per unit of cost.
        challenger: the challenger's scores and the customers it serves (None: the champion decides for all).
    """
    incr, cost, allowed = np.asarray(incr, float), np.asarray(cost, float), np.array(allowed, dtype=bool)
    n, k = incr.shape
    if cost.shape != (n, k) or allowed.shape != (n, k) or u.shape != (n, 2) or holdout_u.shape != (n,):
        raise PolicyError(f"shapes do not match: incr {incr.shape}, cost {cost.shape}, allowed {allowed.shape}")
    if config.fallback_arm >= k:
        raise ConfigError(f"fallback_arm {config.fallback_arm} is not an arm index (K={k})")
    allowed[:, 0] = True
    rows = np.arange(n)
    serves = np.zeros(n, dtype=bool)
    if challenger is not None:
        serves = np.asarray(challenger.serves, dtype=bool)
        c_incr, c_cost = np.asarray(challenger.incr, float), np.asarray(challenger.cost, float)
        if c_incr.shape != (n, k) or c_cost.shape != (n, k) or serves.shape != (n,):
            raise PolicyError(f"challenger shapes do not match: incr {c_incr.shape}, serves {serves.shape}")

    def scored(i: np.ndarray, c: np.ndarray) -> np.ndarray:
        s = np.where(allowed, i - price * c, -np.inf)
        s[:, 0] = 0.0
        return s

    score_own = scored(incr, cost)
    greedy_own = greedy_choice(score_own, allowed, config.fallback_arm)
    greedy_alt = np.full(n, -1, dtype=np.int64)
    if challenger is not None:
        score_alt = scored(c_incr, c_cost)
        greedy_alt = greedy_choice(score_alt, allowed, config.fallback_arm)
        score = np.where(serves[:, None], score_alt, score_own)
        greedy = np.where(serves, greedy_alt, greedy_own)
        incr = np.where(serves[:, None], c_incr, incr)
        cost = np.where(serves[:, None], c_cost, cost)
    else:
        score, greedy = score_own, greedy_own

    q = exploration_distribution(score, allowed, config)
    share = np.full(n, config.explore)
    if challenger is not None and challenger.explore is not None:
        if not 0.0 <= challenger.explore <= 1.0:
            raise ConfigError(f"the challenger's explore share must be in [0, 1], got {challenger.explore!r}")
        share[serves] = challenger.explore
    explores = u[:, 0] < share
    explored = _draw(q, u[:, 1])

    holdout = holdout_u < config.holdout
    arm = np.where(holdout, 0, np.where(explores, explored, greedy))
    group = np.where(holdout, "holdout", np.where(explores, "explore", "exploit")).astype(object)

    within = share * q[rows, arm] + (1.0 - share) * (arm == greedy)
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
        greedy=greedy,
        champion_greedy=greedy_own,
        challenger_greedy=greedy_alt,
        challenger=serves & ~holdout,
        arm_probs=_treated_probs(q, share, greedy),
    )


def _treated_probs(q: np.ndarray, share: np.ndarray, greedy: np.ndarray) -> np.ndarray:
    """(n, K) ``share * q + (1 - share) * 1[arm = greedy]``: each arm's probability under the treated policy."""
    probs = share[:, None] * q
    probs[np.arange(len(greedy)), greedy] += 1.0 - share
    return probs


def explain(incr: np.ndarray, allowed: np.ndarray, arm_ids: list[str], top: int = 3) -> list[dict[str, object]]:
    """The best few allowed arms of one customer with their expected incremental profit, best first."""
    order = np.argsort(-np.where(allowed, incr, -np.inf), kind="stable")
    out = []
    for j in order[:top]:
        if not allowed[j]:
            break
        out.append({"arm": arm_ids[j], "expected_incremental_profit": float(incr[j])})
    return out
