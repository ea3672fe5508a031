"""The joined decisions of the log as data to learn from and to judge on: point-in-time features, arms, rewards,
propensities, the arms that were allowed, and the split into training and judging customers.

Every decision carries the feature values it was decided on (the log's ``features`` snapshot) and the treated
policy's probability of each allowed arm (``arm_probs``), so evaluation and retraining read exactly what the
policy saw, whatever the online store holds now. Decisions logged without them (an older version) are left out
and counted.

Customers are split once, by a stable hash (`offerlift.serving.policy.holdout_unit` with the salt
``JUDGE_SALT``), into a training part and a judging part (``JUDGE_SHARE``): retraining uses only the training
customers' decisions, off-policy evaluation and the promotion gate only the judging customers', so a challenger
is never judged on the decisions it learned from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.features.errors import DataError
from offerlift.features.experiment import Experiment
from offerlift.serving.decision_log import DecisionLog
from offerlift.serving.feedback_log import HOUR, joined_decisions
from offerlift.serving.policy import holdout_unit
from offerlift.training.ab_report import decision_profit

JUDGE_SALT = "offerlift-judge"
JUDGE_SHARE = 0.3
SPLITS = ("train", "judge", "all")


@dataclass(frozen=True)
class LoggedUnits:
    """Joined decisions with their snapshots, in log order.

    Attributes:
        frame: the decision log's rows with the attributed outcomes.
        features: one row per decision (index decision_id), the snapshot's values.
        allowed: (n, K) bool, the arms the rules allowed (the keys of the logged ``arm_probs``).
        probs: (n, K) the treated policy's probability of each arm.
        rewards: realized profit of each decision.
        catalog: the arms, in the models' order.
        skipped: decisions of the period left out because they carry no snapshot.
    """

    frame: pd.DataFrame
    features: pd.DataFrame
    allowed: np.ndarray
    probs: np.ndarray
    rewards: np.ndarray
    catalog: Catalog
    skipped: int

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def arms(self) -> np.ndarray:
        """The logged arm of each decision."""
        return self.frame["arm"].to_numpy()

    @property
    def propensities(self) -> np.ndarray:
        """The logged probability of the logged arm (holdout included)."""
        return self.frame["propensity"].to_numpy(dtype=float)

    @property
    def customer_ids(self) -> np.ndarray:
        """The customer of each decision."""
        return self.frame["customer_id"].astype(str).to_numpy()

    def subset(self, mask: np.ndarray) -> LoggedUnits:
        """The units where `mask` is True."""
        m = np.asarray(mask, dtype=bool)
        return replace(
            self,
            frame=self.frame[m].reset_index(drop=True),
            features=self.features[m],
            allowed=self.allowed[m],
            probs=self.probs[m],
            rewards=self.rewards[m],
        )

    def split(self, part: str) -> LoggedUnits:
        """The training customers' decisions, the judging customers', or all (see the module doc)."""
        if part not in SPLITS:
            raise DataError(f"split must be one of {SPLITS}, got {part!r}")
        if part == "all":
            return self
        judged = judge_customers(self.customer_ids)
        return self.subset(judged if part == "judge" else ~judged)

    def fingerprint(self) -> str:
        """A short hash of the units (ids, arms, outcomes, propensities, features)."""
        cols = ["decision_id", "arm", "propensity", "visit", "buy", "spend", "redeem"]
        h = pd.util.hash_pandas_object(self.frame[cols], index=False).to_numpy()
        f = pd.util.hash_pandas_object(self.features.astype(str), index=True).to_numpy()
        return hashlib.sha256(h.tobytes() + f.tobytes()).hexdigest()[:16]


def judge_customers(customer_ids: np.ndarray) -> np.ndarray:
    """True for the customers whose decisions judge (and never train) challengers."""
    return holdout_unit([str(c) for c in customer_ids], JUDGE_SALT) < JUDGE_SHARE


def _probs(frame: pd.DataFrame, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    index = {a: j for j, a in enumerate(catalog.arm_ids)}
    probs = np.zeros((len(frame), len(index)))
    allowed = np.zeros((len(frame), len(index)), dtype=bool)
    for i, text in enumerate(frame["arm_probs"].tolist()):
        for arm, p in json.loads(text).items():
            j = index.get(arm)
            if j is None:
                raise DataError(f"decision {frame['decision_id'].iloc[i]!r} logged arm {arm!r}, not in the catalog")
            probs[i, j], allowed[i, j] = p, True
    allowed[:, 0] = True
    return probs, allowed


def load_units(
    dlog: DecisionLog,
    catalog: Catalog,
    campaign: str | None = None,
    start: float | None = None,
    end: float | None = None,
) -> LoggedUnits:
    """The joined decisions (of a campaign and period) that carry their snapshot."""
    frame, _ = joined_decisions(dlog, campaign, start, end)
    has = frame["features"].notna().to_numpy() & frame["arm_probs"].notna().to_numpy() if len(frame) else []
    skipped = int(len(frame) - np.sum(has))
    frame = frame[np.asarray(has, dtype=bool)].reset_index(drop=True)
    if frame.empty:
        raise DataError(
            "no joined decisions with their feature snapshot in the decision log"
            + (f" ({skipped} logged without one, by an older version)" if skipped else "")
            + "; record outcomes and run `offerlift join` first"
        )
    unknown = sorted(set(frame["arm"]) - set(catalog.arm_ids))
    if unknown:
        raise DataError(f"logged arms {unknown} are not in the catalog {catalog.name!r} of the model")
    features = pd.DataFrame.from_records([json.loads(t) for t in frame["features"]], index=frame["decision_id"])
    features.index.name = "unit_id"
    probs, allowed = _probs(frame, catalog)
    return LoggedUnits(frame, features, allowed, probs, decision_profit(frame, catalog), catalog, skipped)


def as_experiment(units: LoggedUnits, columns: list[str] | None = None, name: str = "decision-log") -> Experiment:
    """The units as an Experiment (times in hours since the unix epoch; outcomes at the end of their window)."""
    f = units.frame
    ids = f["decision_id"].astype(str).to_numpy()
    t = f["ts"].to_numpy(dtype=float) / HOUR
    assignments = pd.DataFrame(
        {
            "unit_id": ids,
            "customer_id": units.customer_ids,
            "time": t,
            "arm": f["arm"].to_numpy(),
            "propensity": units.propensities,
            "group": f["grp"].to_numpy(),
        }
    )
    outcomes = pd.DataFrame(
        {
            "unit_id": ids,
            "customer_id": units.customer_ids,
            "time": t + f["window_s"].to_numpy(dtype=float) / HOUR,
            **{c: f[c].to_numpy(dtype=float) for c in ("visit", "buy", "spend", "redeem")},
        }
    )
    feats = units.features if columns is None else units.features.reindex(columns=columns)
    feats = model_frame(feats)
    feats.index = pd.Index(ids, name="unit_id")
    customers = pd.DataFrame({"customer_id": pd.unique(units.customer_ids)})
    return Experiment(name, units.catalog, customers, assignments, outcomes, feats, main_outcome="buy")


def model_frame(features: pd.DataFrame) -> pd.DataFrame:
    """Snapshot values as model-ready columns: numbers as float, text as pandas Categorical."""
    out = {}
    for col in features.columns:
        s = features[col]
        numeric = pd.to_numeric(s, errors="coerce")
        if s.isna().all() or numeric.notna().sum() == s.notna().sum():
            out[col] = numeric.astype(float)
        else:
            out[col] = s.astype("string").astype("category")
    return pd.DataFrame(out, index=features.index)
