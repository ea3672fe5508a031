"""How a trigger decides: the decision interface and :class:`PolicyDecider`, the pure policy without a service.

A trigger calls any ``decide(customer_id, context) -> decision``: the service's
`offerlift.serving.decider.Decider.decide` (caps, consent, budget and the decision log apply) or
:class:`PolicyDecider` around the pure policy (`offerlift.serving.policy.decide`) with the rules of
`offerlift.serving.rules`, for replays and campaigns without a running service. :func:`as_decision` reads the arm,
channel, offer and decision id of either answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError
from offerlift.serving.policy import PolicyConfig, decide, holdout_unit
from offerlift.serving.rules import Rules, allowed_arms


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
        extra_mask: optional (customer ids) -> (n, K) bool, e.g. rows of `offerlift.features.abuse.abuse_mask`.
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
