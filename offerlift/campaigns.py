"""Campaigns on the simulated world and their A/B reports (treated vs holdout, per arm, CUPED).

Re-exported by `offerlift.api` (``ol.simulate_campaign``, ``ol.ab_report``, ``ol.ab_table``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.errors import ConfigError
from offerlift.score import as_scorer

log = logging.getLogger(__name__)


@dataclass
class Campaign:
    """A played campaign: one row per customer (arm, grp, buy, spend, redeem, pre_spend, true incremental
    profit of the arm), the catalog, the holdout share and the true mean lift of the treated."""

    table: pd.DataFrame
    catalog: Any
    holdout: float
    name: str
    true_lift: float
    arm_probs: np.ndarray | None = None  # (n, K) the treated policy's probability of each arm, every customer


def simulate_campaign(
    customers: int = 5000, holdout: float = 0.1, model: Any = None, seed: int = 0, name: str = "campaign"
) -> Campaign:
    """One campaign on the simulated world: a holdout gets nothing, the others a random reachable arm, or the
    model's best arm when `model` (a result of `train` on ``load("simulated")`` or a model URI) is given."""
    from offerlift.features.build import build_features, latest_features
    from offerlift.serving.policy import holdout_unit
    from offerlift.simworld.world import SimWorld
    from offerlift.training.evaluate import greedy_arms

    world = SimWorld.default(n_customers=customers, seed=seed)
    ids = world.customers["customer_id"].astype(str).to_numpy()
    rng, eligible = np.random.default_rng(seed), world.eligible()
    if model is None:
        ranks = (rng.random(len(ids)) * (eligible[:, 1:].sum(axis=1))).astype(int)
        arm = 1 + np.argmax(np.cumsum(eligible[:, 1:], axis=1) > ranks[:, None], axis=1)
        arm = np.where(eligible[:, 1:].any(axis=1), arm, 0)
        n_treat = eligible[:, 1:].sum(axis=1, keepdims=True)
        probs = np.hstack([(n_treat == 0).astype(float), eligible[:, 1:] / np.maximum(n_treat, 1)])
    else:
        events = world.history_events()
        frame = latest_features(events, world.customers, at=0.0).loc[world.customers["customer_id"]]
        scorer = as_scorer(model, None)
        arm = greedy_arms(scorer.incremental_profit(scorer.features.encode(frame)), eligible)
        probs = np.eye(len(world.arm_ids))[arm]
    grp = np.where(holdout_unit(ids, name) < holdout, "holdout", "exploit")
    arm = np.where(grp == "holdout", 0, arm)
    arms = np.asarray(world.arm_ids, dtype=object)[arm]
    decisions = pd.DataFrame({"unit_id": ids, "customer_id": ids, "time": 0.0, "arm": arms})
    truth = world.truth(np.arange(len(ids)), 0.0).values(arm)
    out = world.play(decisions, seed=seed).outcomes
    pre = build_features(world.history_events(), world.customers, decisions[["unit_id", "customer_id", "time"]])
    table = decisions.assign(
        grp=grp,
        buy=out["buy"].to_numpy(),
        spend=out["spend"].to_numpy(),
        redeem=out["redeem"].to_numpy(),
        pre_spend=pre["spend_30d"].to_numpy(),
        true_incremental_profit=truth,
    )
    treated = grp != "holdout"
    log.info(
        "campaign %s: %d customers, %d treated, true lift %.4f per treated customer",
        name,
        len(ids),
        treated.sum(),
        truth[treated].mean(),
    )
    return Campaign(table, world.catalog, holdout, name, float(truth[treated].mean()), probs)


def ab_report(
    data: Campaign | pd.DataFrame,
    catalog: Any = None,
    holdout: float | None = None,
    covariate: str | None = "pre_spend",
    name: str | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """The A/B report (`offerlift.training.ab_report`): lift of the treated over the holdout with CIs, per arm, CUPED on
    `covariate`, sample-ratio check. Written as JSON and HTML under `out` when given.

    >>> report = ab_report(simulate_campaign(5000))   # doctest: +SKIP
    """
    from offerlift.training.ab_report import ab_report as _ab_report
    from offerlift.training.ab_report import write_report

    probs = None
    if isinstance(data, Campaign):
        table, catalog, holdout, name, probs = data.table, data.catalog, data.holdout, name or data.name, data.arm_probs
    else:
        table = data
    if catalog is None or holdout is None:
        raise ConfigError("ab_report of a decision table needs the catalog and the configured holdout share")
    cov = covariate if covariate is not None and covariate in table else None
    report = _ab_report(table, catalog, holdout, campaign=name or "campaign", covariate=cov, arm_probs=probs)
    if out is not None:
        paths = write_report(report, out)
        log.info("A/B report written to %s and %s", paths["json"], paths["html"])
    return report


def ab_table(report: dict[str, Any]) -> pd.DataFrame:
    """The report as a table: the holdout, all treated and each arm, with profit per customer and the lift (CI)."""
    rows = []
    for label, g in report["groups"].items():
        lift = report["lift"] if label == "treated" else {}
        rows.append({"group": "all treated" if label == "treated" else label, **g, **_lift(lift)})
    for a in report["per_arm"]:
        g = {k: v for k, v in a.items() if k not in ("arm", "lift_vs_holdout")}
        rows.append({"group": a["arm"], **g, **_lift(a["lift_vs_holdout"])})
    return pd.DataFrame(rows)


def _lift(d: dict[str, Any]) -> dict[str, float]:
    return {"lift": d.get("estimate", np.nan), "ci_low": d.get("ci_low", np.nan), "ci_high": d.get("ci_high", np.nan)}
