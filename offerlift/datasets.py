"""One entry point for the built-in data sets: ``load_dataset("hillstrom" | "starbucks" | "simulated")``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from offerlift.features.errors import ConfigError
from offerlift.features.experiment import Experiment

DATASETS = ("hillstrom", "starbucks", "simulated")
#: Customers and seed of the simulated world when a caller gives none (``offerlift train --dataset simulated``).
SIMULATED_CUSTOMERS = 20_000
SIMULATED_SEED = 0


def load_dataset(name: str, path: str | Path | None = None, **options: Any) -> Experiment:
    """Load a built-in data set as an Experiment.

    Args:
        name: "hillstrom", "starbucks" or "simulated".
        path: where the files are (real data sets only); see `offerlift.features.locate` for the search order.
        options: loader options, e.g. ``window_hours`` (starbucks), ``n_customers``, ``seed`` and ``world``
            (simulated; default `SIMULATED_CUSTOMERS`, `SIMULATED_SEED` and the default world; ``world`` is a preset
            name such as ``"low-signal"`` or a world spec file).
    """
    if name == "hillstrom":
        from offerlift.features.hillstrom import load_hillstrom

        return load_hillstrom(path, **options)
    if name == "starbucks":
        from offerlift.features.starbucks import load_starbucks

        return load_starbucks(path, **options)
    if name == "simulated":
        from offerlift.simworld.world import make_experiment

        options.setdefault("n_customers", SIMULATED_CUSTOMERS)
        options.setdefault("seed", SIMULATED_SEED)
        if "world" in options:
            options["spec"] = options.pop("world")
        return make_experiment(**options)
    raise ConfigError(f"unknown data set {name!r}; choose one of {list(DATASETS)}")
