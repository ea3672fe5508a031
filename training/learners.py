"""Multi-arm uplift meta-learners on LightGBM: S, T, X and DR learners with the scikit-learn contract.

Every learner is fitted with ``fit(X, arm, y, propensity=None)`` and predicts the expected outcome under
each arm, ``predict(X) -> (n, n_arms)`` with columns in ``arms_`` order (control first), and the uplift of
each treatment arm over control, ``predict_uplift(X) -> (n, n_arms - 1)``. For a binary outcome the
predictions are probabilities, clipped to [0, 1]. The S and T learners' uplift is the difference of the
``predict`` columns; the X and DR learners' uplift is their effect models' output ``tau_a`` (no control
model needed), which equals that difference except where ``predict`` clips ``mu_0 + tau_a`` into [0, 1].

The features are converted to one numpy matrix once per call; the models are trained with LightGBM's
native API on one binned dataset per ``fit`` (row subsets share its bins).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from offerlift.features.catalog import CONTROL_ARM, Catalog
from offerlift.features.errors import ConfigError, DataError
from offerlift.training.learners_base import (
    UpliftLearnerBase,
    arm_shares,
    effect_params,
    make_dataset,
    subset,
    train,
)

log = logging.getLogger(__name__)

#: Upper bound on the cells of the stacked matrix the S-learner scores in one LightGBM call.
MAX_STACK_CELLS = 2**22  # 32 MB of float64: 2**25 made S-learner prediction 3.7x the peers' peak memory (uplift.md)

__all__ = [
    "DRLearner",
    "SLearner",
    "TLearner",
    "XLearner",
    "aipw_pseudo_outcome",
    "make_learner",
    "structured_arm_features",
]


class SLearner(UpliftLearnerBase):
    """One model of the outcome on the features plus the arm.

    The arm enters as one-hot indicators of the treatment arms and, when ``arm_values`` (arm -> coupon
    value) is given, as a numeric value feature. With ``monotone=True`` the arm enters through its value
    only, under a +1 monotone constraint, so predictions never decrease with the coupon value (arms with
    equal value then get equal predictions).

    With ``arm_features`` (arm -> feature vector, e.g. coupon value, minimum spend, channel indicators; see
    :func:`structured_arm_features`) the arm enters through those features only, so that arms share
    strength (``arm_values`` and ``monotone`` must then be left unset); ``arm_monotone`` gives a LightGBM
    monotone constraint (-1, 0 or +1) per arm feature. ``uplift_features`` (names of feature columns), when
    given, restricts the trees that split on arm features to those columns (LightGBM interaction
    constraints: one group of every column, one of ``uplift_features`` plus the arm features).

    Fitted attributes: ``model_`` (lgb.Booster) and ``arm_table_`` (n_arms, n_arm_features), the arm
    features of each arm.
    """

    def __init__(
        self,
        control: str = CONTROL_ARM,
        arms: list[str] | None = None,
        outcome: str | None = None,
        params: dict[str, Any] | None = None,
        random_state: int | None = 0,
        min_arm_rows: int = 20,
        arm_values: dict[str, float] | None = None,
        monotone: bool = False,
        arm_features: Mapping[str, Sequence[float]] | None = None,
        arm_monotone: Sequence[int] | None = None,
        uplift_features: Sequence[str] | None = None,
    ):
        super().__init__(control, arms, outcome, params, random_state, min_arm_rows)
        self.arm_values = arm_values
        self.monotone = monotone
        self.arm_features = arm_features
        self.arm_monotone = arm_monotone
        self.uplift_features = uplift_features

    def _fit(self, X: np.ndarray, codes: np.ndarray, y: np.ndarray, prop: np.ndarray | None) -> None:
        self.arm_table_ = self._arm_table()
        p, k = X.shape[1], self.arm_table_.shape[1]
        Z = np.empty((X.shape[0], p + k), dtype=np.float64)
        Z[:, :p] = X
        Z[:, p:] = self.arm_table_[codes]
        params = dict(self.lgb_params_)
        if self.monotone:
            params["monotone_constraints"] = [0] * p + [1]
        elif self.arm_monotone is not None:
            params["monotone_constraints"] = [0] * p + [int(c) for c in self.arm_monotone]
        if self.uplift_features is not None:
            params["interaction_constraints"] = self._interaction_groups(p, k)
        self.model_ = train(make_dataset(Z, y, params, self.encoder_.categorical), params)

    def _interaction_groups(self, p: int, k: int) -> list[list[int]]:
        """Every feature column in one group; ``uplift_features`` and the arm features in the other."""
        names = [str(c) for c in self.encoder_.columns]
        unknown = [c for c in self.uplift_features if str(c) not in names]
        if unknown:
            raise ConfigError(f"uplift_features names unknown feature column {unknown[0]!r}")
        cols = sorted({names.index(str(c)) for c in self.uplift_features})
        return [list(range(p)), cols + list(range(p, p + k))]

    def _arm_table(self) -> np.ndarray:
        """The arm features of each arm: one row per arm in ``arms_`` order."""
        if self.arm_features is not None:
            return self._feature_table()
        if self.arm_monotone is not None:
            raise ConfigError("arm_monotone needs arm_features (arm -> feature vector)")
        m = len(self.arms_)
        if self.monotone and self.arm_values is None:
            raise ConfigError("monotone=True needs arm_values (arm -> coupon value)")
        values = None
        if self.arm_values is not None:
            missing = [a for a in self.arms_ if a not in self.arm_values]
            if missing:
                raise ConfigError(f"arm_values has no value for arm {missing[0]!r}")
            values = np.array([float(self.arm_values[a]) for a in self.arms_])[:, None]
            if self.monotone and len(np.unique(values)) < m:
                log.warning("monotone S-learner: arms with equal arm_values get equal predictions")
        if self.monotone:
            return values
        onehot = np.eye(m)[:, 1:]
        return onehot if values is None else np.hstack([onehot, values])

    def _feature_table(self) -> np.ndarray:
        """The table given by ``arm_features``, checked: every arm, one length, finite, constraints fit."""
        if self.arm_values is not None or self.monotone:
            raise ConfigError("arm_features replaces arm_values and monotone: leave those unset")
        missing = [a for a in self.arms_ if a not in self.arm_features]
        if missing:
            raise ConfigError(f"arm_features has no features for arm {missing[0]!r}")
        rows = [np.asarray(self.arm_features[a], dtype=np.float64).ravel() for a in self.arms_]
        k = rows[0].size
        bad = [a for a, r in zip(self.arms_, rows, strict=True) if r.size != k or not np.isfinite(r).all()]
        if bad or k == 0:
            raise ConfigError(
                f"arm_features of arm {(bad or self.arms_)[0]!r} must be {k or 'at least 1'} finite numbers"
            )
        if self.arm_monotone is not None:
            cons = list(self.arm_monotone)
            if len(cons) != k or any(c not in (-1, 0, 1) for c in cons):
                raise ConfigError(f"arm_monotone must be {k} values in (-1, 0, 1), got {cons}")
        return np.vstack(rows)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        n, p = X.shape
        m, k = self.arm_table_.shape
        rows = max(1, MAX_STACK_CELLS // (m * (p + k)))
        if n <= rows:
            return self._predict_stacked(X)
        return np.vstack([self._predict_stacked(X[s : s + rows]) for s in range(0, n, rows)])

    def _predict_stacked(self, X: np.ndarray) -> np.ndarray:
        """Score every row under every arm in one LightGBM call on the (n * n_arms) stacked matrix."""
        n, p = X.shape
        m, k = self.arm_table_.shape
        Z = np.empty((m * n, p + k), dtype=np.float64)
        for a in range(m):
            Z[a * n : (a + 1) * n, :p] = X
            Z[a * n : (a + 1) * n, p:] = self.arm_table_[a]
        return self._score(self.model_, Z).reshape(m, n).T.copy()


class TLearner(UpliftLearnerBase):
    """One outcome model per arm, each trained on that arm's rows.

    Fitted attributes: ``models_`` (one lgb.Booster per arm, ``arms_`` order).
    """

    def _fit(self, X: np.ndarray, codes: np.ndarray, y: np.ndarray, prop: np.ndarray | None) -> None:
        ds = make_dataset(X, y, self.lgb_params_, self.encoder_.categorical)
        self.models_ = _arm_models(ds, codes, len(self.arms_), self.lgb_params_)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([self._score(model, X) for model in self.models_])


class XLearner(UpliftLearnerBase):
    """Multi-arm X-learner: each treatment arm against control.

    Stage 1 fits one outcome model per arm. Stage 2 imputes effects (treated rows: ``y - mu_0(x)``;
    control rows: ``mu_a(x) - y``) and fits an effect model on each. The two effects are combined as
    ``g_a * tau0_a + (1 - g_a) * tau1_a`` with ``g_a = e_a / (e_a + e_0)``, where ``e_a`` is the mean known
    propensity of the arm's rows (exact for randomized data), else the arm's share of rows.
    ``predict = mu_0(x) + tau_a(x)``.

    With ``pooled_effects=True`` stage 2 fits ONE effect model per arm on the imputed effects of both
    groups, weighted (``g_a / e_0`` on control rows, ``(1 - g_a) / e_a`` on arm rows) so that its target is
    the same ``g_a * tau0_a + (1 - g_a) * tau1_a``: half the effect models to evaluate in ``predict``, and
    every split sees both groups.

    Fitted attributes: ``models_`` (outcome model per arm), ``effect_models_`` (per treatment arm, a list of
    (booster, weight) whose weighted sum is tau_a), ``weights_`` (g_a per treatment arm),
    ``arm_propensity_`` (e_a per arm).
    """

    def __init__(
        self,
        control: str = CONTROL_ARM,
        arms: list[str] | None = None,
        outcome: str | None = None,
        params: dict[str, Any] | None = None,
        random_state: int | None = 0,
        min_arm_rows: int = 20,
        pooled_effects: bool = False,
    ):
        super().__init__(control, arms, outcome, params, random_state, min_arm_rows)
        self.pooled_effects = pooled_effects

    def _fit(self, X: np.ndarray, codes: np.ndarray, y: np.ndarray, prop: np.ndarray | None) -> None:
        m = len(self.arms_)
        ds = make_dataset(X, y, self.lgb_params_, self.encoder_.categorical)
        self.models_ = _arm_models(ds, codes, m, self.lgb_params_)
        e = self.arm_propensity_ = arm_shares(codes, m, prop)
        self.weights_ = [float(e[a] / (e[a] + e[0])) for a in range(1, m)]
        imputed = np.empty(len(y))
        treated = np.flatnonzero(codes != 0)
        imputed[treated] = y[treated] - self._score(self.models_[0], X[treated])
        rows0 = np.flatnonzero(codes == 0)
        X0 = X[rows0]
        self.effect_models_ = []
        for a in range(1, m):
            imputed[rows0] = self._score(self.models_[a], X0) - y[rows0]
            rows = np.flatnonzero((codes == 0) | (codes == a))
            self.effect_models_.append(self._effect_models(ds, rows, codes[rows] == 0, imputed[rows], a))

    def _effect_models(
        self, ds: Any, rows: np.ndarray, is0: np.ndarray, d: np.ndarray, a: int
    ) -> list[tuple[Any, float]]:
        """Stage 2 for arm ``a``: (booster, weight) pairs whose weighted sum estimates tau_a."""
        g = self.weights_[a - 1]
        e_a, e_0 = self.arm_propensity_[a], self.arm_propensity_[0]
        eff = effect_params(self.lgb_params_)
        if self.pooled_effects:
            w = np.where(is0, g / e_0, (1.0 - g) / e_a)
            return [(train(subset(ds, rows, d, w / w.mean()), eff), 1.0)]
        tau0 = train(subset(ds, rows[is0], d[is0]), eff)
        tau1 = train(subset(ds, rows[~is0], d[~is0]), eff)
        return [(tau0, g), (tau1, 1.0 - g)]

    def _predict_uplift(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([sum(w * self._score(model, X) for model, w in parts) for parts in self.effect_models_])

    def _predict(self, X: np.ndarray) -> np.ndarray:
        mu0 = self._score(self.models_[0], X)
        return np.column_stack([mu0, mu0[:, None] + self._predict_uplift(X)])


class DRLearner(UpliftLearnerBase):
    """Doubly robust (AIPW) learner with cross-fitting.

    Outcome models per arm are cross-fitted over ``n_folds`` folds (stratified by arm), giving
    out-of-fold ``mu_a(x_i)``. For each treatment arm, the AIPW pseudo-outcome
    (:func:`aipw_pseudo_outcome`), with the known propensity of each row's own arm (else the empirical
    arm share), is regressed on the features: that regression is ``tau_a``.
    ``predict = mu_0(x) + tau_a(x)``, with ``mu_0`` the mean of ``control_models_``: one model refitted on
    all control rows (one model to evaluate; a list so that exporters need not care how many).

    ``effect_rows`` picks the rows of each arm's regression: "pair" (control and arm rows, as causalml
    does; fastest) or "all" (every row: the other arms' rows add the plug-in ``mu_a - mu_0``, which steadies
    the estimate for small arms, at the cost of ``n_arms - 1`` regressions on all rows).

    Fitted attributes: ``control_models_``, ``effect_models_`` (per treatment arm),
    ``arm_propensity_``.
    """

    def __init__(
        self,
        control: str = CONTROL_ARM,
        arms: list[str] | None = None,
        outcome: str | None = None,
        params: dict[str, Any] | None = None,
        random_state: int | None = 0,
        min_arm_rows: int = 20,
        n_folds: int = 2,
        effect_rows: str = "pair",
    ):
        super().__init__(control, arms, outcome, params, random_state, min_arm_rows)
        self.n_folds = n_folds
        self.effect_rows = effect_rows

    def _fit(self, X: np.ndarray, codes: np.ndarray, y: np.ndarray, prop: np.ndarray | None) -> None:
        if not isinstance(self.n_folds, int | np.integer) or self.n_folds < 2:
            raise ConfigError(f"n_folds must be an integer >= 2, got {self.n_folds!r}")
        if self.effect_rows not in ("pair", "all"):
            raise ConfigError(f"effect_rows must be 'pair' or 'all', got {self.effect_rows!r}")
        m = len(self.arms_)
        params = self.lgb_params_
        ds = make_dataset(X, y, params, self.encoder_.categorical)
        folds = stratified_folds(codes, self.n_folds, self.random_state)
        mu = self._cross_fit(ds, X, codes, folds, params)
        self.arm_propensity_ = arm_shares(codes, m, prop)
        e_own = prop if prop is not None else self.arm_propensity_[codes]
        self.control_models_ = [train(subset(ds, np.flatnonzero(codes == 0)), params)]
        eff = effect_params(params)
        self.effect_models_ = []
        for a in range(1, m):
            rows = self._effect_rows(codes, a)
            e_rows = e_own[rows]
            if self.effect_rows == "pair":  # within {control, a} the row's arm had probability e_own / (e_a + e_0)
                other = np.where(codes[rows] == a, self.arm_propensity_[0], self.arm_propensity_[a])
                e_rows = e_rows / (e_rows + other)
            phi = aipw_pseudo_outcome(y[rows], codes[rows], mu[rows], e_rows, a)
            self.effect_models_.append(train(subset(ds, rows, phi), eff))

    def _effect_rows(self, codes: np.ndarray, a: int) -> np.ndarray:
        """Rows of arm ``a``'s effect regression."""
        if self.effect_rows == "all":
            return np.arange(len(codes))
        return np.flatnonzero((codes == 0) | (codes == a))

    def _cross_fit(
        self, ds: Any, X: np.ndarray, codes: np.ndarray, folds: np.ndarray, params: dict[str, Any]
    ) -> np.ndarray:
        """Out-of-fold ``mu_a`` (n, n_arms) where the pseudo-outcomes need it: control everywhere, arm a
        on its effect rows (NaN elsewhere)."""
        mu = np.full((X.shape[0], len(self.arms_)), np.nan)
        for f in range(self.n_folds):
            held = folds == f
            held_rows = np.flatnonzero(held)
            for a in range(len(self.arms_)):
                model = train(subset(ds, np.flatnonzero(~held & (codes == a))), params)
                rows = held_rows if a == 0 else np.intersect1d(held_rows, self._effect_rows(codes, a))
                mu[rows, a] = self._score(model, X[rows])
        return mu

    def _predict_uplift(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([self._score(model, X) for model in self.effect_models_])

    def _predict(self, X: np.ndarray) -> np.ndarray:
        mu0 = np.mean([self._score(model, X) for model in self.control_models_], axis=0)
        return np.column_stack([mu0, mu0[:, None] + self._predict_uplift(X)])


def structured_arm_features(catalog: Catalog) -> tuple[dict[str, list[float]], list[str]]:
    """Arm features that let arms share strength: (arm id -> vector, feature names).

    Per arm: coupon value, minimum spend, one 0/1 indicator per channel of the catalog, and contact cost;
    the control arm (and any arm without offer or channel) gets zeros where it has nothing. The coupon value
    is the first feature, so ``[1, 0, ...]`` constrains predictions to grow with it.
    """
    channels = [c.id for c in catalog.channels]
    names = ["arm_coupon_value", "arm_min_spend", *(f"arm_channel_{c}" for c in channels), "arm_contact_cost"]
    table = {}
    for arm in catalog.arms:
        min_spend = 0.0 if arm.offer is None else float(arm.offer.min_spend)
        onehot = [float(arm.channel is not None and arm.channel.id == c) for c in channels]
        table[arm.id] = [arm.coupon_value, min_spend, *onehot, arm.contact_cost]
    return table, names


def aipw_pseudo_outcome(y: np.ndarray, codes: np.ndarray, mu: np.ndarray, e_own: np.ndarray, arm: int) -> np.ndarray:
    """AIPW pseudo-outcome of arm ``arm`` against arm 0 for every row.

    ``mu_a - mu_0 + 1[A=a] (y - mu_a) / e_a - 1[A=0] (y - mu_0) / e_0``, where ``mu`` holds out-of-fold
    outcome predictions (n, n_arms) and ``e_own`` the propensity of each row's own arm.
    """
    n = len(y)
    w = (y - mu[np.arange(n), codes]) / e_own
    sign = (codes == arm).astype(np.float64) - (codes == 0)
    return mu[:, arm] - mu[:, 0] + sign * w


def stratified_folds(codes: np.ndarray, n_folds: int, seed: int | None) -> np.ndarray:
    """A fold number per row, balanced within each arm."""
    if np.bincount(codes).min() < n_folds:
        raise DataError(f"every arm needs at least n_folds={n_folds} rows for cross-fitting")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(codes), dtype=np.intp)
    for a in np.unique(codes):
        rows = np.flatnonzero(codes == a)
        folds[rng.permutation(rows)] = np.arange(len(rows)) % n_folds
    return folds


def _arm_models(ds: Any, codes: np.ndarray, n_arms: int, params: dict[str, Any]) -> list[Any]:
    """One booster per arm, each on the arm's rows of the shared dataset."""
    return [train(subset(ds, np.flatnonzero(codes == a)), params) for a in range(n_arms)]


_LEARNERS: dict[str, type[UpliftLearnerBase]] = {"s": SLearner, "t": TLearner, "x": XLearner, "dr": DRLearner}


def make_learner(name: str, **kw: Any) -> UpliftLearnerBase:
    """A learner by short name: "s", "t", "x" or "dr" (case-insensitive); ``kw`` are its parameters."""
    cls = _LEARNERS.get(str(name).lower())
    if cls is None:
        raise ConfigError(f"unknown learner {name!r}; choose one of {sorted(_LEARNERS)}")
    return cls(**kw)
