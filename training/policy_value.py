"""Off-policy value of decision policies on randomized data with known propensities (any number of arms).

Logged data: for each unit ``i`` the arm it got ``a_i``, the reward ``r_i`` and the probability ``p_i`` with
which the logging policy chose ``a_i``. A policy is either an array of chosen arms (arm ids, or column indices
into ``arm_ids``) or an ``(n, n_arms)`` array of probabilities (a stochastic policy), columns in ``arm_ids``
order. With ``w_i = pi(a_i | x_i) / p_i``:

- IPS: ``mean(w_i r_i)`` (for a deterministic policy ``mean(1[pi(x_i) = a_i] r_i / p_i)``);
- SNIPS: ``sum(w_i r_i) / sum(w_i)``;
- DR: ``mean(sum_a pi(a | x_i) mu(x_i, a) + w_i (r_i - mu(x_i, a_i)))`` for a reward model ``mu``.

Confidence intervals are percentile bootstrap intervals over units, computed on resample counts in
chunks (a matrix product per chunk), so that every policy and every difference uses the same resamples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.catalog import CONTROL_ARM
from offerlift.features.errors import ConfigError, DataError, PolicyError

log = logging.getLogger(__name__)

ArrayLike = Sequence[Any] | np.ndarray
ESTIMATORS = ("ips", "snips", "dr")
_MAX_CELLS = 1 << 22  # resample counts held at once (chunk rows x units)


@dataclass(frozen=True)
class LoggedData:
    """Validated logged data: arm indices into ``arm_ids``, rewards and propensities (all length n)."""

    arm_index: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    arm_ids: tuple[Any, ...]

    @property
    def n(self) -> int:
        """Number of units."""
        return int(self.rewards.size)


@dataclass(frozen=True)
class PolicyEstimate:
    """One policy value with its percentile bootstrap CI and the effective sample size of its weights."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    se: float
    n: int
    ess: float
    n_boot: int
    level: float


def bootstrap_counts(n: int, n_boot: int, seed: int | None = 0) -> Iterator[np.ndarray]:
    """Yield resample counts, ``(rows, n)`` float arrays whose rows sum to ``n``, ``n_boot`` rows in all.

    Each row counts how often each unit is drawn in one bootstrap resample (draws with replacement).
    Chunks keep memory bounded; the sequence is fixed by ``seed``.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, min(n_boot, _MAX_CELLS // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(rows, n_boot - done)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(float)
        done += b


def bootstrap_means(columns: np.ndarray, n_boot: int, seed: int | None = 0) -> np.ndarray:
    """Means of each column of an ``(n, k)`` array over ``n_boot`` paired resamples: ``(n_boot, k)``."""
    n = columns.shape[0]
    parts = [counts @ columns / n for counts in bootstrap_counts(n, n_boot, seed)]
    return np.vstack(parts)


def _check_params(n_boot: int, level: float) -> None:
    if not isinstance(n_boot, int | np.integer) or n_boot < 2:
        raise ConfigError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")


def _to_index(values: np.ndarray, arm_ids: tuple[Any, ...], what: str, error: type[Exception]) -> np.ndarray:
    """Map arm labels (or integer column indices, when the arm ids are not integers) to column indices."""
    lookup = {a: k for k, a in enumerate(arm_ids)}
    ids_are_int = all(isinstance(a, int | np.integer) for a in arm_ids)
    if not ids_are_int and values.dtype.kind in "iu":
        bad = (values < 0) | (values >= len(arm_ids))
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise error(f"{what}: arm index {values[bad][0]} out of range 0..{len(arm_ids) - 1} (rows {rows})")
        return values.astype(np.intp)
    uniq, inverse = np.unique(values, return_inverse=True)
    cols = np.empty(uniq.size, dtype=np.intp)
    for j, v in enumerate(uniq.tolist()):
        k = lookup.get(v)
        if k is None:
            row = int(np.flatnonzero(inverse == j)[0])
            raise error(f"{what}: unknown arm {v!r} at row {row}; known arms: {list(arm_ids)}")
        cols[j] = k
    return cols[inverse.ravel()]


def logged_data(
    arms: ArrayLike,
    rewards: ArrayLike,
    propensities: ArrayLike,
    arm_ids: Sequence[Any] | None = None,
) -> LoggedData:
    """Validate logged arms, rewards and propensities; ``arm_ids`` defaults to the sorted logged arms."""
    a, r, p = np.asarray(arms), np.asarray(rewards, dtype=float), np.asarray(propensities, dtype=float)
    if not (a.ndim == r.ndim == p.ndim == 1):
        raise DataError(f"arms, rewards, propensities must be 1-d; got shapes {a.shape}, {r.shape}, {p.shape}")
    if not (a.size == r.size == p.size):
        raise DataError(f"length mismatch: arms has {a.size}, rewards has {r.size}, propensities has {p.size}")
    if a.size == 0:
        raise DataError("no logged units: arms is empty")
    if not np.isfinite(r).all():
        raise DataError(f"rewards must be finite; non-finite at rows {np.flatnonzero(~np.isfinite(r))[:5].tolist()}")
    bad = ~((p > 0) & (p <= 1))
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise DataError(f"propensities must be in (0, 1]; got {p[bad][0]!r} at rows {rows}")
    ids = tuple(np.unique(a).tolist()) if arm_ids is None else tuple(arm_ids)
    if len(set(ids)) != len(ids):
        raise ConfigError(f"arm_ids has duplicates: {list(ids)}")
    return LoggedData(_to_index(a, ids, "arms", DataError), r, p, ids)


def policy_probabilities(policy: ArrayLike, data: LoggedData) -> np.ndarray:
    """An ``(n, n_arms)`` probability matrix for a policy given as chosen arms or as probabilities."""
    pol = np.asarray(policy)
    n, k = data.n, len(data.arm_ids)
    if pol.ndim == 2:
        if pol.shape != (n, k):
            raise PolicyError(f"policy probabilities must have shape ({n}, {k}), got {pol.shape}")
        probs = pol.astype(float)
        bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1) | ~np.isclose(probs.sum(axis=1), 1.0)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise PolicyError(f"policy probabilities must be >= 0 and sum to 1 per row; bad rows {rows}")
        return probs
    if pol.ndim != 1 or pol.size != n:
        raise PolicyError(f"policy must have {n} chosen arms (length of the logged data), got shape {pol.shape}")
    probs = np.zeros((n, k))
    probs[np.arange(n), _to_index(pol, data.arm_ids, "policy", PolicyError)] = 1.0
    return probs


def constant_policy(
    arm: Any, data: LoggedData, allowed: np.ndarray | None = None, control_arm: Any = CONTROL_ARM
) -> np.ndarray:
    """The policy that gives every unit the same ``arm`` (probability matrix).

    With ``allowed`` ((n, n_arms) bool), units that may not get ``arm`` (no consent, no reach) get the control arm.
    """
    if arm not in data.arm_ids:
        raise PolicyError(f"unknown arm {arm!r}; known arms: {list(data.arm_ids)}")
    j = data.arm_ids.index(arm)
    probs = np.zeros((data.n, len(data.arm_ids)))
    if allowed is None:
        probs[:, j] = 1.0
        return probs
    ok = np.asarray(allowed, dtype=bool)[:, j]
    probs[ok, j] = 1.0
    probs[~ok, data.arm_ids.index(control_arm)] = 1.0
    return probs


def _check_mu(mu: np.ndarray | None, data: LoggedData, estimator: str) -> np.ndarray | None:
    if estimator not in ESTIMATORS:
        raise ConfigError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator != "dr":
        return None
    if mu is None:
        raise ConfigError("estimator 'dr' needs mu, the reward model's predictions (n, n_arms)")
    m = np.asarray(mu, dtype=float)
    if m.shape != (data.n, len(data.arm_ids)):
        raise DataError(f"mu must have shape ({data.n}, {len(data.arm_ids)}), got {m.shape}")
    if not np.isfinite(m).all():
        raise DataError("mu must be finite")
    return m


def _columns(probs: np.ndarray, data: LoggedData, estimator: str, mu: np.ndarray | None) -> np.ndarray:
    """Per-unit columns whose means give the estimate: ``(n, 2)`` = (numerator, denominator)."""
    rows = np.arange(data.n)
    w = probs[rows, data.arm_index] / data.propensities
    if estimator == "ips":
        return np.column_stack([w * data.rewards, np.ones(data.n)])
    if estimator == "snips":
        return np.column_stack([w * data.rewards, w])
    direct = (probs * mu).sum(axis=1)
    return np.column_stack([direct + w * (data.rewards - mu[rows, data.arm_index]), np.ones(data.n)])


def _ess(probs: np.ndarray, data: LoggedData) -> float:
    w = probs[np.arange(data.n), data.arm_index] / data.propensities
    s2 = float((w**2).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


def _values(means: np.ndarray) -> np.ndarray:
    """Estimates from column means laid out as pairs (numerator, denominator) per policy."""
    num, den = means[..., 0::2], means[..., 1::2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den == 0, 1, den), np.nan)


def _interval(point: float, boot: np.ndarray, level: float) -> tuple[float, float, float]:
    """(low, high, se) of a percentile bootstrap interval, ignoring undefined resamples."""
    ok = boot[np.isfinite(boot)]
    if ok.size < 2:
        return float("nan"), float("nan"), float("nan")
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi), float(ok.std(ddof=1))


def _estimate_many(
    probs_list: list[np.ndarray], data: LoggedData, estimator: str, mu: np.ndarray | None, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Point estimates ``(m,)`` and paired bootstrap estimates ``(n_boot, m)`` for ``m`` policies."""
    cols = np.hstack([_columns(p, data, estimator, mu) for p in probs_list])
    point = _values(cols.mean(axis=0))
    boot = _values(bootstrap_means(cols, n_boot, seed))
    return point, boot


def policy_value(
    arms: ArrayLike,
    rewards: ArrayLike,
    propensities: ArrayLike,
    policy: ArrayLike,
    *,
    estimator: str = "ips",
    mu: np.ndarray | None = None,
    arm_ids: Sequence[Any] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> PolicyEstimate:
    """Value of ``policy`` by ``estimator`` ("ips", "snips" or "dr"; "dr" needs ``mu``), with a bootstrap CI."""
    _check_params(n_boot, level)
    data = logged_data(arms, rewards, propensities, arm_ids)
    m = _check_mu(mu, data, estimator)
    probs = policy_probabilities(policy, data)
    point, boot = _estimate_many([probs], data, estimator, m, n_boot, seed)
    lo, hi, se = _interval(float(point[0]), boot[:, 0], level)
    return PolicyEstimate(estimator, float(point[0]), lo, hi, se, data.n, _ess(probs, data), n_boot, level)


def ips_value(
    arms: ArrayLike, rewards: ArrayLike, propensities: ArrayLike, policy: ArrayLike, **kwargs: Any
) -> PolicyEstimate:
    """Inverse propensity estimate ``mean(pi(a_i | x_i) r_i / p_i)`` (see :func:`policy_value`)."""
    return policy_value(arms, rewards, propensities, policy, estimator="ips", **kwargs)


def snips_value(
    arms: ArrayLike, rewards: ArrayLike, propensities: ArrayLike, policy: ArrayLike, **kwargs: Any
) -> PolicyEstimate:
    """Self-normalized IPS ``sum(w r) / sum(w)`` (see :func:`policy_value`)."""
    return policy_value(arms, rewards, propensities, policy, estimator="snips", **kwargs)


def dr_value(
    arms: ArrayLike,
    rewards: ArrayLike,
    propensities: ArrayLike,
    policy: ArrayLike,
    mu: np.ndarray,
    **kwargs: Any,
) -> PolicyEstimate:
    """Doubly robust estimate with reward-model predictions ``mu`` of shape (n, n_arms) (see :func:`policy_value`)."""
    return policy_value(arms, rewards, propensities, policy, estimator="dr", mu=mu, **kwargs)


def compare_policies(
    policies: Mapping[str, ArrayLike],
    arms: ArrayLike,
    rewards: ArrayLike,
    propensities: ArrayLike,
    *,
    estimator: str = "ips",
    mu: np.ndarray | None = None,
    arm_ids: Sequence[Any] | None = None,
    control_arm: Any = CONTROL_ARM,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    allowed: np.ndarray | None = None,
) -> pd.DataFrame:
    """Value of each policy and its increment per unit over two baselines, with paired bootstrap CIs.

    ``allowed`` ((n, n_arms) bool, optional) marks the arms each unit may get (consent, reach); the constant-arm
    baselines then give the control arm to units that may not get their arm.

    Baselines: ``always:<control_arm>`` (no offer to anyone) and ``always:<best arm>``, the constant-arm
    policy with the highest point estimate on the same data (chosen once, on the full sample). Every value
    and difference is computed on the same resamples, so the CIs of differences are paired. Returns one row
    per policy, then the two baseline rows (``is_baseline`` True), with columns: policy, estimator, value,
    ci_low, ci_high, vs_control, vs_control_ci_low, vs_control_ci_high, vs_best_arm, vs_best_arm_ci_low,
    vs_best_arm_ci_high, control_arm, best_arm, ess, n, is_baseline.
    """
    _check_params(n_boot, level)
    if not policies:
        raise ConfigError("compare_policies needs at least one policy")
    data = logged_data(arms, rewards, propensities, arm_ids)
    if control_arm not in data.arm_ids:
        raise ConfigError(f"control_arm {control_arm!r} is not one of the arms {list(data.arm_ids)}")
    m = _check_mu(mu, data, estimator)
    names = list(policies)
    probs = [policy_probabilities(policies[name], data) for name in names]
    if allowed is not None and np.shape(allowed) != (data.n, len(data.arm_ids)):
        raise PolicyError(f"allowed must have shape ({data.n}, {len(data.arm_ids)}), got {np.shape(allowed)}")
    consts = [constant_policy(a, data, allowed, control_arm) for a in data.arm_ids]
    point, boot = _estimate_many(probs + consts, data, estimator, m, n_boot, seed)
    n_pol = len(names)
    best = int(np.nanargmax(point[n_pol:]))
    ctrl = data.arm_ids.index(control_arm)
    log.info("best constant arm by %s: %r (%.4g)", estimator, data.arm_ids[best], point[n_pol + best])
    order = [*range(n_pol), n_pol + ctrl, n_pol + best]
    labels = [*names, f"always:{control_arm}", f"always:{data.arm_ids[best]}"]
    all_probs = probs + consts
    rows = []
    for j, label in zip(order, labels, strict=True):
        row: dict[str, Any] = {"policy": label, "estimator": estimator, "value": float(point[j])}
        row["ci_low"], row["ci_high"], _ = _interval(float(point[j]), boot[:, j], level)
        for key, ref in (("vs_control", n_pol + ctrl), ("vs_best_arm", n_pol + best)):
            diff = float(point[j] - point[ref])
            lo, hi, _ = _interval(diff, boot[:, j] - boot[:, ref], level)
            row[key], row[f"{key}_ci_low"], row[f"{key}_ci_high"] = diff, lo, hi
        row.update(control_arm=control_arm, best_arm=data.arm_ids[best], ess=_ess(all_probs[j], data))
        row.update(n=data.n, is_baseline=j >= n_pol)
        rows.append(row)
    return pd.DataFrame(rows)


def policy_difference(
    policy_a: ArrayLike,
    policy_b: ArrayLike,
    arms: ArrayLike,
    rewards: ArrayLike,
    propensities: ArrayLike,
    *,
    estimator: str = "dr",
    mu: np.ndarray | None = None,
    arm_ids: Sequence[Any] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Value of policy A minus policy B on the same logged data, with a paired bootstrap CI.

    Returns value_a, value_b, diff, ci_low, ci_high (all per unit).
    """
    _check_params(n_boot, level)
    data = logged_data(arms, rewards, propensities, arm_ids)
    m = _check_mu(mu, data, estimator)
    probs = [policy_probabilities(policy_a, data), policy_probabilities(policy_b, data)]
    point, boot = _estimate_many(probs, data, estimator, m, n_boot, seed)
    diff = float(point[0] - point[1])
    lo, hi, _ = _interval(diff, boot[:, 0] - boot[:, 1], level)
    return {"value_a": float(point[0]), "value_b": float(point[1]), "diff": diff, "ci_low": lo, "ci_high": hi}


def paired_difference(
    new: np.ndarray,
    old: np.ndarray,
    arm_index: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
    mu_new: np.ndarray,
    mu_old: np.ndarray,
    mu_logged: np.ndarray,
    clusters: np.ndarray | None = None,
    level: float = 0.95,
) -> dict[str, float]:
    """Doubly robust value of deterministic policy ``new`` minus ``old`` (arm indices per unit), paired per unit.

    Per unit ``d_i = mu_new_i - mu_old_i + (1[a_i = new_i] - 1[a_i = old_i]) (r_i - mu_logged_i) / p_i``, with the
    reward model's predictions at the unit's ``new``, ``old`` and logged arm: exactly 0 where the two policies
    choose the same arm, so only the units where they differ carry noise. The standard error is cluster-robust
    over ``clusters`` (e.g. customer ids: a customer's units across rounds are not independent). ``ci_low`` is the
    one-sided lower confidence bound at ``level`` (``diff - z * se``), ``ci_high`` its mirror (together a two-sided
    ``2 * level - 1`` interval). Returns value_a, value_b (each policy's DR value), diff, se, ci_low, ci_high,
    n, n_differ and n_clusters.
    """
    from scipy import stats

    if not 0.5 < level < 1:
        raise ConfigError(f"level must be in (0.5, 1), got {level!r}")
    a, new, old = (np.asarray(v, dtype=np.intp) for v in (arm_index, new, old))
    r, p = np.asarray(rewards, dtype=float), np.asarray(propensities, dtype=float)
    n = r.size
    if not (a.size == new.size == old.size == p.size == n) or n == 0:
        raise DataError(f"paired_difference needs equal, non-zero lengths; got {a.size}, {new.size}, {old.size}, {n}")
    if not ((p > 0) & (p <= 1)).all():
        raise DataError("propensities must be in (0, 1]")
    resid = (r - np.asarray(mu_logged, dtype=float)) / p
    va = np.asarray(mu_new, dtype=float) + (a == new) * resid
    vb = np.asarray(mu_old, dtype=float) + (a == old) * resid
    d = np.where(new == old, 0.0, va - vb)
    diff = float(d.mean())
    groups = np.arange(n) if clusters is None else pd.factorize(np.asarray(clusters))[0]
    sums = np.bincount(groups, weights=d - diff)
    g = sums.size
    se = float(np.sqrt((sums**2).sum() * g / max(g - 1, 1)) / n)
    z = float(stats.norm.ppf(level))
    return {
        "value_a": float(va.mean()),
        "value_b": float(vb.mean()),
        "diff": diff,
        "se": se,
        "ci_low": diff - z * se,
        "ci_high": diff + z * se,
        "n": int(n),
        "n_differ": int((new != old).sum()),
        "n_clusters": int(g),
    }
