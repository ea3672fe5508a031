"""The coupon-abuse behaviour model: a scikit-learn classifier of abuse from the behaviour columns.

The features and the identity rules are in `offerlift.features.abuse` (`abuse_features`, `identity_flags`,
`abuse_scores`); this module trains the model that gives their ``behaviour_score``: :class:`AbuseModel`, a logistic
regression on the behaviour columns only (no identity columns), trained on confirmed cases or, by default, on the
identity-rule flags as weak labels (:func:`fit_behaviour_model`), so it can find farmers who do not share ids.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from offerlift.features.abuse import BEHAVIOUR_COLUMNS, COUNT_COLUMNS, AbuseRules, identity_flags
from offerlift.features.errors import ConfigError, DataError, NotFittedError, SchemaError

log = logging.getLogger(__name__)


class AbuseModel(ClassifierMixin, BaseEstimator):
    """Logistic regression of abuse on the behaviour columns (counts on a log scale, NaN imputed + flagged).

    Args:
        C: inverse regularization strength of the logistic regression.
        columns: behaviour columns used (default :data:`BEHAVIOUR_COLUMNS`).
        min_positives: fewest labeled abusers `fit` accepts.
    """

    def __init__(self, C: float = 1.0, columns: tuple[str, ...] = BEHAVIOUR_COLUMNS, min_positives: int = 5):
        self.C = C
        self.columns = columns
        self.min_positives = min_positives

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.columns if c not in X.columns]
        if missing:
            raise SchemaError("abuse features", missing[0], f"missing column; the table has {list(X.columns)}")
        M = X[list(self.columns)].to_numpy(dtype=float).copy()
        for j, c in enumerate(self.columns):
            if c in COUNT_COLUMNS or c in ("trade_up", "min_spend_stretch"):
                M[:, j] = np.log1p(np.maximum(M[:, j], 0.0))
        return M

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> AbuseModel:
        """Fit on behaviour columns `X` and labels `y` (1 = abuser)."""
        if self.C <= 0:
            raise ConfigError(f"AbuseModel: C must be positive, got {self.C!r}")
        M = self._matrix(X)
        y = np.asarray(y).astype(int)
        if y.shape != (len(X),):
            raise DataError(f"AbuseModel: {len(X)} rows but labels of shape {y.shape}")
        positives = int(y.sum())
        if positives < self.min_positives or positives == len(y):
            raise DataError(
                f"AbuseModel: needs at least {self.min_positives} abusers and some non-abusers, "
                f"got {positives} of {len(y)}"
            )
        self.pipeline_: Pipeline = make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=self.C, max_iter=1000),
        )
        self.pipeline_.fit(M, y)
        self.classes_ = np.array([0, 1])
        log.info("abuse model fitted on %d rows, %d labeled abusers", len(y), positives)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """(n, 2) probabilities of [not abuser, abuser]."""
        if not hasattr(self, "pipeline_"):
            raise NotFittedError("AbuseModel is not fitted; call fit first")
        return self.pipeline_.predict_proba(self._matrix(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """1 where P(abuser) >= 0.5."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def fit_behaviour_model(
    features: pd.DataFrame, labels: np.ndarray | None = None, rules: AbuseRules = AbuseRules(), C: float = 1.0
) -> AbuseModel:
    """An :class:`AbuseModel` on confirmed labels, or on the identity-rule flags as weak labels (the default)."""
    y = identity_flags(features, rules) if labels is None else np.asarray(labels)
    return AbuseModel(C=C).fit(features, y)
