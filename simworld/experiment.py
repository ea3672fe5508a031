"""A randomized experiment drawn from the simulated world, in the canonical schema.

Each customer is one unit, assigned at `time` to one arm at random with known propensities, restricted to the
arms that can reach the customer with consent (rules come before randomization), then played forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from offerlift.features.build import build_features
from offerlift.features.errors import ConfigError
from offerlift.features.experiment import Experiment
from offerlift.simworld.config import resolve_world
from offerlift.simworld.play import sort_events
from offerlift.simworld.world import SimWorld


def arm_probabilities(
    world: SimWorld, propensities: Mapping[str, float] | Sequence[float] | None, rows: np.ndarray | None = None
) -> np.ndarray:
    """(n, n_arms) assignment probabilities: `propensities` (per arm id, or one per arm in catalog order;
    None = uniform) renormalized over each customer's eligible arms. ConfigError names bad input."""
    arm_ids = world.arm_ids
    if propensities is None:
        base = np.ones(len(arm_ids))
    elif isinstance(propensities, Mapping):
        unknown = sorted(set(propensities) - set(arm_ids))
        if unknown:
            raise ConfigError(f"propensities name unknown arms {unknown}; the catalog has {list(arm_ids)}")
        base = np.array([float(propensities.get(a, 0.0)) for a in arm_ids])
    else:
        base = np.asarray(propensities, dtype=float)
        if base.shape != (len(arm_ids),):
            raise ConfigError(f"expected {len(arm_ids)} propensities (one per arm), got shape {base.shape}")
    if not np.isfinite(base).all() or (base < 0).any() or base.sum() <= 0:
        raise ConfigError(f"propensities must be finite, >= 0 and not all 0, got {base.tolist()}")
    p = world.eligible(rows) * base[None, :]
    total = p.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        bad = np.flatnonzero(total[:, 0] <= 0)[:5].tolist()
        raise ConfigError(f"propensities leave customers {bad} with no eligible arm; give 'none' some weight")
    return p / total


def visible_features(customers: pd.DataFrame) -> pd.DataFrame:
    """A simple model-ready frame of the visible attributes (one row per customer, same order).

    Numbers stay numbers, flags become 0/1, city and tier become categories, and the shared ids become the
    number of accounts on the same device and on the same payment id.
    """
    out = customers[["signup_time", "age", "income"]].astype(float)
    for col in ("city", "tier"):
        out[col] = customers[col].astype("category")
    for col in customers.columns:
        if col.startswith(("reach_", "consent_")):
            out[col] = customers[col].astype(np.int8)
    for col, name in (("device_id", "accounts_per_device"), ("payment_id", "accounts_per_payment")):
        out[name] = customers.groupby(col)[col].transform("size").astype(float)
    return out


def experiment_features(world: SimWorld, events: pd.DataFrame, assignments: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features of each unit: the shared builder on events strictly before the unit's time."""
    return build_features(events, world.customers, assignments[["unit_id", "customer_id", "time"]])


def make_experiment(
    n_customers: int,
    seed: int = 0,
    propensities: Mapping[str, float] | Sequence[float] | None = None,
    *,
    time: float = 0.0,
    spec: str | Path | None = None,
) -> Experiment:
    """A randomized experiment of the simulated world (group "experiment", main outcome "buy"); `spec` is the
    world: a preset name (``"default"``, ``"low-signal"``) or a spec file, None for the default world.

    meta holds the world itself (``meta["world"]``, for the exact truth of every unit:
    ``world.truth(world.rows_of(exp.assignments.customer_id), time)``), the canonical events of the pre-period
    and of the experiment (``meta["events"]``), the seed, the time and the attribution window.
    """
    world = SimWorld.from_yaml(spec, n_customers, seed)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20260]))
    probs = arm_probabilities(world, propensities)
    u = rng.random((world.n_customers, 1))
    arm_idx = np.minimum((np.cumsum(probs, axis=1) < u).sum(axis=1), len(world.arm_ids) - 1)
    arm_idx = np.where(probs[np.arange(arm_idx.size), arm_idx] > 0, arm_idx, np.argmax(probs, axis=1))
    width = max(7, len(str(max(world.n_customers - 1, 0))))
    units = np.array([f"u{i:0{width}d}" for i in range(world.n_customers)], dtype=object)
    assignments = pd.DataFrame(
        {
            "unit_id": units,
            "customer_id": world.customers["customer_id"].to_numpy(),
            "time": np.full(world.n_customers, float(time)),
            "arm": np.asarray(world.arm_ids, dtype=object)[arm_idx],
            "propensity": probs[np.arange(arm_idx.size), arm_idx],
            "group": "experiment",
        }
    )
    result = world.play(assignments[["unit_id", "customer_id", "time", "arm"]], seed=int(seed) + 1)
    history = world.history_events()
    features = experiment_features(world, history, assignments)
    events = sort_events(pd.concat([history, result.events], ignore_index=True))
    return Experiment(
        name="simulated",
        catalog=world.catalog,
        customers=world.customers,
        assignments=assignments,
        outcomes=result.outcomes,
        features=features,
        main_outcome="buy",
        meta={
            "world": world,
            "events": events,
            "seed": int(seed),
            "time": float(time),
            "window_hours": world.config.window_hours,
            "spec": str(resolve_world(spec)),
        },
    ).validate()
