"""The service's decisions for many customers at once, logged: `decide_logged`.

`decide_logged(decider, customer_ids, context)` makes the decisions that `offerlift.serving.decider.Decider.decide`
would make and log for these customers one after the other (online store, rules, caps and budget read from the
decision log, the pure policy, the logged row and the budget charge), in one write transaction with one scoring call,
for jobs such as the closed loop that decide a whole population at once. Tests compare it with `Decider.decide`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from offerlift.features.errors import ConfigError, ModelError
from offerlift.serving.decider import Champion, Decider, attributes, challenger_serves, decision_columns, log_context
from offerlift.serving.decision_log import budgets as budget_table
from offerlift.serving.decision_log import decisions as decision_table
from offerlift.serving.policy import ChallengerScores, Decisions, decide, holdout_unit
from offerlift.serving.rules import Rules
from offerlift.serving.snapshot import arm_probs_json, features_json


@dataclass(frozen=True)
class LoggedBatch:
    """What `decide_logged` made and logged, in the order of the customer ids.

    Attributes:
        rows: the logged decision rows (the decision log's columns; ``context`` as its JSON text).
        incr: (n, K) the champion's expected incremental profit of every arm.
        challenger_incr: (n, K) the challenger's, when one decided for its share (else None).
        allowed: (n, K) the arms every rule allowed, caps included (the mask the policy decided with), when the
            batch was decided in one transaction (else None).
        rule_mask: (n, K) the arms the customer rules allow (eligibility, consent, reach), before caps and budget.
        one_transaction: True when the batch was decided in one transaction; False when it fell back to
            `Decider.decide` one customer at a time (a budget with pacing, a budget that could run out, or a
            customer listed twice).
    """

    rows: pd.DataFrame
    incr: np.ndarray
    rule_mask: np.ndarray
    one_transaction: bool
    challenger_incr: np.ndarray | None = None
    allowed: np.ndarray | None = None


def decide_logged(
    decider: Decider,
    customer_ids: Sequence[str],
    context: Mapping[str, Any] | None = None,
    u: np.ndarray | None = None,
) -> LoggedBatch:
    """Decide and log every customer as `Decider.decide(customer_id, context)` would, one after the other.

    The same online features, attributes, scores, rule masks, caps (contacts in the decision log's cap window),
    holdout hash, policy and logged row; the budget is charged the same sum, added in the same order. With `u`
    ((n, 2) uniforms, row i = customer i) the decisions are those `Decider.decide` makes when its generator yields
    these draws in this order; without it they are drawn here. Decisions that could interact (a budget that
    could run short, pacing, a customer listed twice) go through `Decider.decide` itself, one at a time, with the
    Decider's own draws. The batch holds the log's write transaction while it is written (about 2 s per 100,000
    decisions here), so a service deciding on the same log meanwhile waits that long.
    """
    champ = decider.champion
    if champ is None:
        raise ModelError("no champion model is loaded")
    ids = [str(c) for c in customer_ids]
    ctx = dict(context or {})
    stored = decider.store.get_many(ids)
    attrs = [attributes(stored.get(c), ctx, champ.protected) for c in ids]
    incr, cost = champ.scores(champ.scorer.features.encode_records(attrs))
    chall = decider.challenger
    versus = None
    if chall is not None:
        c_incr, c_cost = chall.scores(chall.scorer.features.encode_records(attrs))
        serves = challenger_serves(ids, decider.settings, chall.version, decision_time(decider, ctx))
        versus = ChallengerScores(c_incr, c_cost, serves, chall.policy.explore)
    k = len(champ.arm_ids)
    masks = [champ.rule_mask(decider.rules, a, ctx.get("channels")) for a in attrs]
    rule_mask = np.vstack(masks) if masks else np.ones((0, k), dtype=bool)
    if ctx.get("arms"):
        rule_mask &= champ.arm_subset(ctx["arms"])
    u = np.random.default_rng().random((len(ids), 2)) if u is None else np.asarray(u, dtype=float)
    if u.shape != (len(ids), 2):
        raise ConfigError(f"u must have shape ({len(ids)}, 2), got {u.shape}")
    cold = np.array([c not in stored for c in ids], dtype=bool)
    rows, allowed = None, None
    if len(set(ids)) == len(ids):
        made = _commit_batch(decider, champ, ids, cold, incr, cost, rule_mask, u, ctx, versus, attrs)
        if made is not None:
            rows, allowed = made
    one = rows is not None
    if rows is None:
        rows = _one_by_one(decider, ids, ctx)
    return LoggedBatch(rows, incr, rule_mask, one, None if versus is None else versus.incr, allowed)


def decision_time(decider: Decider, context: Mapping[str, Any]) -> float:
    """The decision's time as `Decider.decide` takes it: the context's timestamp with ``use_context_time``."""
    ts = context.get("timestamp")
    if not decider.settings.use_context_time or ts is None:
        return time.time()
    return ts.timestamp() if isinstance(ts, datetime) else float(ts)


def _window_contacts(conn: sa.Connection, since: float) -> dict[str, dict[str, int]]:
    """Per customer and channel, the logged contacts after `since` (the decision log's cap-window count)."""
    t = decision_table
    q = (
        sa.select(t.c.customer_id, t.c.channel, sa.func.count())
        .where(t.c.ts > since, t.c.channel.is_not(None))
        .group_by(t.c.customer_id, t.c.channel)
    )
    out: dict[str, dict[str, int]] = {}
    for cid, ch, count in conn.execute(q):
        out.setdefault(cid, {})[ch] = int(count)
    return out


def _cap_masks(champ: Champion, rules: Rules, ids: list[str], contacts: dict[str, dict[str, int]]) -> np.ndarray:
    """(n, K) `Champion.cap_mask` of every customer without a budget (customers without contacts share one)."""
    base = champ.cap_mask(rules, {}, None)
    out = np.repeat(base, len(ids), axis=0)
    for i, cid in enumerate(ids):
        if cid in contacts:
            out[i] = champ.cap_mask(rules, contacts[cid], None)[0]
    return out


def _budget_holds(champ: Champion, committed: float, total: float, charges: np.ndarray) -> tuple[bool, float]:
    """Whether every arm stays affordable before each decision, and the committed sum after them all.

    The sum is accumulated one decision at a time, as the decision log's ``committed + cost`` updates do."""
    worst = float(champ.worst_cost_array.max()) if champ.worst_cost_array.size else 0.0
    for c in charges.tolist():
        if worst > total - committed + 1e-12:
            return False, committed
        if c > 0:
            committed = committed + c
    return True, committed


def _commit_batch(
    decider: Decider,
    champ: Champion,
    ids: list[str],
    cold: np.ndarray,
    incr: np.ndarray,
    cost: np.ndarray,
    rule_mask: np.ndarray,
    u: np.ndarray,
    ctx: Mapping[str, Any],
    versus: ChallengerScores | None = None,
    attrs: Sequence[Mapping[str, Any]] = (),
) -> tuple[pd.DataFrame, np.ndarray] | None:
    """Decide, insert and charge in one write transaction: (rows, the final mask); None (nothing written) when
    decisions could interact."""
    settings, rules, dlog = decider.settings, decider.rules, decider.log
    campaign, now = settings.campaign.name, decision_time(decider, ctx)
    hu = holdout_unit(ids, champ.policy.experiment)
    with dlog.engine.begin() as conn:
        if not dlog.is_sqlite:
            conn.exec_driver_sql("LOCK TABLE budgets IN EXCLUSIVE MODE")
        b = conn.execute(sa.select(budget_table).where(budget_table.c.campaign == campaign)).first()
        if b is not None and settings.pacing.enabled:
            return None
        contacts = _window_contacts(conn, now - rules.cap_window_hours * 3600.0)
        allowed = rule_mask & _cap_masks(champ, rules, ids, contacts)
        d = decide(incr, cost, allowed, hu, u, champ.policy, 0.0, versus)
        charges = np.asarray(champ.worst_cost, dtype=float)[d.arm]
        committed = None
        if b is not None:
            ok, committed = _budget_holds(champ, b.committed, b.total, charges)
            if not ok:
                return None
        chall = decider.challenger if versus is not None else None
        rows = _rows(champ, chall, ids, cold, d, ctx, campaign, now, attrs, allowed)
        if rows:
            conn.execute(decision_table.insert(), rows)
        if committed is not None and committed != b.committed:
            conn.execute(budget_table.update().where(budget_table.c.campaign == campaign).values(committed=committed))
    return pd.DataFrame(rows, columns=[c.name for c in decision_table.columns]), allowed


def _rows(
    champ: Champion,
    chall: Champion | None,
    ids: list[str],
    cold: np.ndarray,
    d: Decisions,
    ctx: Mapping[str, Any],
    campaign: str,
    now: float,
    attrs: Sequence[Mapping[str, Any]],
    allowed: np.ndarray,
) -> list[dict[str, Any]]:
    """The decision log rows, as `Decider.decide` builds them (with the snapshot of `offerlift.serving.snapshot`)."""
    contexts = {flag: json.dumps(log_context(ctx, 0.0, flag)) for flag in (False, True)}
    rows = []
    for i, cid in enumerate(ids):
        j = int(d.arm[i])
        rows.append(
            {
                "decision_id": str(uuid.uuid4()),
                "ts": now,
                "customer_id": cid,
                "campaign": campaign,
                "arm": champ.arm_ids[j],
                "offer_id": champ.offer_ids[j],
                "channel": champ.channels[j],
                "coupon_value": champ.coupon_values[j],
                "propensity": float(d.propensity[i]),
                "group_propensity": float(d.group_propensity[i]),
                "grp": str(d.group[i]),
                "expected_incremental_profit": float(d.incr[i]),
                "expected_cost": float(d.cost[i]),
                "committed_cost": champ.worst_cost[j],
                "context": contexts[bool(cold[i])],
                **decision_columns(champ, chall, d, i),
                "features": features_json(attrs[i]),
                "arm_probs": arm_probs_json(d.arm_probs[i], allowed[i], champ.arm_ids),
            }
        )
    return rows


def _one_by_one(decider: Decider, ids: list[str], ctx: Mapping[str, Any]) -> pd.DataFrame:
    """The fallback: `Decider.decide` for each customer, the rows read back from the log."""
    made = [decider.decide(cid, ctx).decision_id for cid in ids]
    logged = pd.DataFrame(decider.log.read("decisions")).set_index("decision_id")
    return logged.loc[made].reset_index()[[c.name for c in decision_table.columns]]
