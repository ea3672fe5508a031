"""The coupon-abuse behaviour model: its contract, and what it finds on the simulated world."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerlift.features.abuse import abuse_features, abuse_mask, abuse_scores
from offerlift.features.errors import ConfigError, DataError, NotFittedError, SchemaError
from offerlift.simworld.world import SimWorld
from offerlift.training.abuse_model import AbuseModel, fit_behaviour_model
from tests.features.test_abuse import CATALOG, small_tables


def test_abuse_model_contract():
    events, customers = small_tables()
    f = abuse_features(events, customers, at=10.0, catalog=CATALOG)
    with pytest.raises(NotFittedError):
        AbuseModel().predict_proba(f)
    with pytest.raises(DataError, match="at least 5 abusers"):
        AbuseModel().fit(f, np.array([1, 0, 0]))
    with pytest.raises(SchemaError, match="trade_up"):
        AbuseModel().fit(f.drop(columns=["trade_up"]), np.array([1, 0, 0]))
    with pytest.raises(ConfigError, match="C must be positive"):
        AbuseModel(C=0.0).fit(f, np.array([1, 0, 0]))


@pytest.fixture(scope="module")
def world() -> SimWorld:
    return SimWorld.default(4000, seed=5)


@pytest.fixture(scope="module")
def world_features(world: SimWorld) -> pd.DataFrame:
    return abuse_features(world.history_events(), world.customers, at=0.0, catalog=world.catalog)


def test_behaviour_model_on_weak_labels_ranks_abusers_first(world, world_features):
    model = fit_behaviour_model(world_features)
    p = model.predict_proba(world_features)[:, 1]
    before = model.get_params()
    model.predict(world_features)
    assert model.get_params() == before
    truth = world.hidden.abuser
    top = np.argsort(-p)[: int(truth.sum() // 4)]
    assert truth[top].mean() > 0.5  # 3% of customers are abusers; the top quarter-count is mostly abusers
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()


def test_excluding_risky_customers_saves_profit_on_the_world(world, world_features):
    """Exact truth: the best single arm sent to everyone loses money on farmers; the mask takes them out."""
    scores = abuse_scores(world_features, model=fit_behaviour_model(world_features))
    assert set(scores["band"]) <= {"low", "cap", "exclude"}
    k = world.catalog.index("c10@sms")
    plain = world.single_arm_policy("c10@sms")
    masked = np.where(abuse_mask(scores["risk"].to_numpy(), world.catalog)[:, k], plain, 0)
    assert world.policy_value(masked) > world.policy_value(plain)
    oracle = world.oracle()
    kept = abuse_mask(scores["risk"].to_numpy(), world.catalog)[np.arange(len(oracle)), oracle]
    assert kept.mean() > 0.99  # the oracle (which never treats farmers) is barely touched
