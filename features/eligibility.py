"""Which arms can reach a customer at all: channel consent (opt-in flags) and channel reach.

Used by serving's rules before every decision and by training's evaluation, so that a learned policy is judged
only on arms it would be allowed to send. A channel that names a consent flag needs that flag to be true; a
``reach_<channel>`` attribute, when present, must be true. The control arm is always reachable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from offerlift.features.catalog import Catalog


def truthy(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """True where a value is present (not None/NaN) and true."""
    arr = np.asarray(values, dtype=object)
    return np.array([v is not None and v == v and bool(v) for v in arr], dtype=bool)


def reachable_arms(
    catalog: Catalog, attrs: Mapping[str, Sequence[Any]], n: int, require_consent: bool = True
) -> np.ndarray:
    """(n, K) bool: arm j can reach customer i (consent given and channel reachable).

    `attrs` maps attribute names to columns of length n (a DataFrame works, and so does a dict of lists).
    A consent flag missing from `attrs` means no consent.
    """
    mask = np.ones((n, len(catalog.arms)), dtype=bool)
    cache: dict[str, np.ndarray] = {}

    def flag(name: str, default: bool) -> np.ndarray:
        if name not in cache:
            cache[name] = truthy(attrs[name]) if name in attrs else np.full(n, default)
        return cache[name]

    for j, arm in enumerate(catalog.arms):
        if arm.is_control or arm.channel is None:
            continue
        ch = arm.channel
        if require_consent and ch.consent:
            mask[:, j] &= flag(ch.consent, False)
        mask[:, j] &= flag(f"reach_{ch.id}", True)
    return mask
