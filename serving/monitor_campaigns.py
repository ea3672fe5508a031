"""Campaigns of the early warning: the rule that binds a metric and a dimension to a campaign, the campaign, the
executors that serve it, and the JSON-lines log of every alert, start and stop.

A :class:`CampaignRule` binds a metric and a dimension to a campaign (target segment, arms, budget): when an alert
is explained by that dimension, a campaign starts for each named value, its executor decides for the targets
with the normal decision policy, and it stops when that value's series recovers, its budget is spent or
``max_hours`` have passed.

:class:`PolicyExecutor` serves a campaign with the normal decision policy within its budget; :class:`LogOnlyExecutor`
is a dry run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from offerlift.features.errors import ConfigError
from offerlift.features.segments import select
from offerlift.serving.monitor_metrics import _metric

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CampaignRule:
    """Start a campaign on `dimension` values that explain a drop of `metric`; stop when they recover.

    Attributes:
        segment: targeting spec for :func:`offerlift.features.segments.select` (on the executor's target table).
        arms: the catalog subset the campaign may send (empty: every arm).
        budget: money the campaign may commit (worst case: coupon value plus contact cost).
        max_hours: a campaign never runs longer than this.
        cooldown_hours: no new campaign for the same value this long after a stop.
    """

    name: str
    metric: str
    dimension: str
    segment: Mapping[str, Any] = field(default_factory=dict)
    arms: tuple[str, ...] = ()
    budget: float = 1000.0
    max_hours: float = 72.0
    cooldown_hours: float = 24.0

    def __post_init__(self) -> None:
        _metric(self.metric)
        if self.budget < 0 or self.max_hours <= 0 or self.cooldown_hours < 0:
            raise ConfigError(f"campaign rule {self.name!r}: budget, max_hours and cooldown_hours must be >= 0")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CampaignRule:
        """Build from YAML; ConfigError names unknown keys."""
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"campaign rule: unknown keys {unknown}; known keys are {sorted(cls.__dataclass_fields__)}"
            )
        d = dict(d)
        d["arms"] = tuple(d.get("arms") or ())
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"campaign rule {d!r}: {exc}") from None


@dataclass
class Campaign:
    """A running (or finished) automatic campaign."""

    rule: CampaignRule
    value: str
    started_at: float
    spent: float = 0.0
    contacted: set[str] = field(default_factory=set)
    stopped_at: float | None = None
    stop_reason: str | None = None


class Executor(Protocol):
    """Serves a campaign: called when it starts, every hour it runs, and when it stops; returns evidence."""

    def start(self, campaign: Campaign, time: float) -> dict[str, Any]: ...

    def hour(self, campaign: Campaign, time: float) -> dict[str, Any]: ...

    def stop(self, campaign: Campaign, time: float) -> dict[str, Any]: ...


class LogOnlyExecutor:
    """An executor that sends nothing (dry run)."""

    def start(self, campaign: Campaign, time: float) -> dict[str, Any]:
        return {}

    def hour(self, campaign: Campaign, time: float) -> dict[str, Any]:
        return {}

    def stop(self, campaign: Campaign, time: float) -> dict[str, Any]:
        return {}


BatchDecide = Callable[[list[str], Mapping[str, Any]], pd.DataFrame]


class PolicyExecutor:
    """Decides once for every target of a campaign with the normal decision policy, within the campaign's budget.

    Args:
        targets: one row per customer (index customer_id) with the dimension columns and the segment columns.
        decide: (customer ids, context) -> frame with customer_id, arm, cost (worst-case committed cost). The
            context holds ``campaign``, ``arms`` (allowed arm ids, empty = all), ``channel`` (for the channel
            dimension) and ``time``. It must not send anything: the executor keeps the decisions that fit the
            budget (in order) and hands them to `send`.
        send: called with the kept decisions of each start (e.g. a channel adapter's sender); None: keep only.
    """

    def __init__(self, targets: pd.DataFrame, decide: BatchDecide, send: Callable[[pd.DataFrame], Any] | None = None):
        self.targets = targets
        self.decide = decide
        self.send = send
        self.decisions: list[pd.DataFrame] = []

    def start(self, campaign: Campaign, time: float) -> dict[str, Any]:
        rule = campaign.rule
        mask = select(self.targets, rule.segment)
        if rule.dimension not in ("all", "channel"):
            mask &= (self.targets[rule.dimension].astype(str) == campaign.value).to_numpy()
        ids = [c for c in self.targets.index[mask].astype(str) if c not in campaign.contacted]
        context = {"campaign": rule.name, "arms": list(rule.arms), "time": time}
        if rule.dimension == "channel":
            context["channel"] = campaign.value
        out = self.decide(ids, context) if ids else pd.DataFrame(columns=["customer_id", "arm", "cost"])
        cum = campaign.spent + out["cost"].to_numpy(dtype=float).cumsum()
        out = out.loc[cum <= campaign.rule.budget + 1e-9].assign(campaign=rule.name, value=campaign.value, time=time)
        campaign.spent += float(out["cost"].sum())
        campaign.contacted.update(out["customer_id"].astype(str))
        self.decisions.append(out)
        sent = out.loc[out["arm"] != "none"]
        if self.send is not None and len(sent):
            self.send(sent)
        return {"targets": len(ids), "offers": len(sent), "committed": round(campaign.spent, 4)}

    def hour(self, campaign: Campaign, time: float) -> dict[str, Any]:
        return {}

    def stop(self, campaign: Campaign, time: float) -> dict[str, Any]:
        return {"contacted": len(campaign.contacted), "committed": round(campaign.spent, 4)}


class JsonlLog:
    """Appends every record as one JSON line (None: keep in memory only); `records` holds them all."""

    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.records: list[dict[str, Any]] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        log.info("monitor %s %s", record["kind"], {k: v for k, v in record.items() if k != "evidence"})
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record, default=_plain) + "\n")


def _plain(o: Any) -> Any:
    return o.item() if hasattr(o, "item") else str(o)
