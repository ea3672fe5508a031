"""An experiment: the canonical tables of one randomized data set, with its features and catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.features.schema import validate_experiment


@dataclass
class Experiment:
    """One randomized experiment in the canonical schema.

    Attributes:
        name: data set name.
        catalog: the arms, control first.
        customers, assignments, outcomes: canonical tables (see `offerlift.features.schema`).
        features: one row per unit, index `unit_id`, model-ready columns (numeric or categorical).
        main_outcome: the outcome column that summaries report (e.g. "buy" or "spend").
        excluded: rows left out while loading, counted by reason (nothing is dropped silently).
        meta: anything else worth recording (window, epoch, source path, checksums).
    """

    name: str
    catalog: Catalog
    customers: pd.DataFrame
    assignments: pd.DataFrame
    outcomes: pd.DataFrame
    features: pd.DataFrame
    main_outcome: str
    excluded: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> Experiment:
        """Check all tables and links; returns self."""
        validate_experiment(self.customers, self.assignments, self.outcomes, self.catalog.arm_ids)
        return self

    def units(self) -> pd.DataFrame:
        """One row per unit: assignment, outcomes and features, in assignment order."""
        out = self.outcomes.drop(columns=["customer_id", "time"]).set_index("unit_id")
        base = self.assignments.set_index("unit_id")
        return base.join(out, how="left").join(self.features, how="left", rsuffix="_feat")

    def balance(self) -> pd.DataFrame:
        """Covariate balance: standardized mean differences of every feature, each arm vs the control units that
        could have got it (channel consent and reach, `offerlift.features.eligibility.reachable_arms`)."""
        from offerlift.features.balance import balance_table
        from offerlift.features.eligibility import reachable_arms

        arms = self.assignments.set_index("unit_id")["arm"].loc[self.features.index]
        mask = reachable_arms(self.catalog, self.features, len(self.features))
        support = pd.DataFrame(mask, index=self.features.index, columns=self.catalog.arm_ids)
        return balance_table(self.features, arms, self.catalog.control_arm, support=support)

    def summary(self, balance: bool = True) -> dict[str, Any]:
        """Units, arms, control arm, per arm the units and mean of the main outcome, and the largest |SMD|."""
        units = self.units()
        per_arm: dict[str, dict[str, Any]] = {}
        for arm in self.catalog.arm_ids:
            y = units.loc[units["arm"] == arm, self.main_outcome].to_numpy(dtype=float)
            per_arm[arm] = {"units": int(y.size), "outcome_mean": float(y.mean()) if y.size else float("nan")}
        return {
            "dataset": self.name,
            "rows": len(units),
            "arms": self.catalog.arm_ids,
            "control_arm": self.catalog.control_arm,
            "main_outcome": self.main_outcome,
            "per_arm": per_arm,
            "control_share": float(np.mean(units["arm"].to_numpy() == self.catalog.control_arm)),
            "features": list(self.features.columns),
            "excluded": dict(self.excluded),
            "max_abs_smd": float(self.balance()["max_abs_smd"].max()) if balance else None,
        }
