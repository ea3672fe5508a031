"""Feature encoding is the same from frames and from records, and the scorer combines boosters as specified."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ModelError
from offerlift.models.scoring import FORMAT, ArmScorer, FeatureSpec, stack_arms


def test_encode_frame_equals_encode_records():
    X = pd.DataFrame({"x": [1.0, np.nan, 3.0], "c": pd.Categorical(["a", "b", None]), "n": [1, 2, 3]})
    spec = FeatureSpec.from_frame(X)
    assert spec.categories == {"c": ("a", "b")}
    records = [{"x": 1.0, "c": "a", "n": 1}, {"c": "b", "n": 2}, {"x": 3.0, "c": None, "n": 3}]
    np.testing.assert_array_equal(spec.encode(X), spec.encode_records(records))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "zz", None]), min_size=1, max_size=20))
def test_unknown_and_missing_levels_become_nan_both_ways(values):
    spec = FeatureSpec(("c",), {"c": ("a", "b")})
    from_frame = spec.encode(pd.DataFrame({"c": values}))[:, 0]
    from_records = spec.encode_records([{"c": v} for v in values])[:, 0]
    expected = np.array([{"a": 0.0, "b": 1.0}.get(v, np.nan) for v in values])
    np.testing.assert_array_equal(from_frame, expected)
    np.testing.assert_array_equal(from_records, expected)


def test_bad_number_in_record_names_the_feature():
    with pytest.raises(ModelError, match="'x'.*'abc'"):
        FeatureSpec(("x",), {}).encode_records([{"x": "abc"}])


def test_stack_arms_layout_is_arm_major_with_arm_features():
    X = np.array([[1.0], [2.0]])
    out = stack_arms(X, np.column_stack([np.eye(3), [0.0, 5.0, 10.0]]))
    assert out.shape == (6, 5)
    np.testing.assert_array_equal(out[:, 0], [1, 2, 1, 2, 1, 2])
    np.testing.assert_array_equal(out[2:4, 1:4], [[0, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(out[:, 4], [0, 0, 5, 5, 10, 10])


def _tiny_booster(seed: int) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 2))
    y = X[:, 0] * (seed + 1) + rng.normal(size=200)
    return lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 4}, lgb.Dataset(X, y), 5)


def test_t_and_mu_tau_scorers_combine_boosters_and_profit_follows_catalog():
    cat = Catalog.from_dict(
        {
            "name": "t",
            "margin": 0.5,
            "offers": [{"id": "c5", "coupon_value": 5}],
            "channels": [{"id": "sms", "contact_cost": 0.1}],
        }
    )
    b = [_tiny_booster(i) for i in range(3)]
    X = np.random.default_rng(9).normal(size=(7, 2))
    base = {
        "format": FORMAT,
        "arms": cat.arm_ids,
        "catalog": cat.to_dict(),
        "feature_spec": {"columns": ["a", "b"], "categories": {}},
    }
    t_spec = dict(
        base,
        outcomes={
            "spend": {"kind": "t", "boosters": [b[0].model_to_string(), b[1].model_to_string()]},
            "redeem": {"kind": "t", "boosters": [b[2].model_to_string()] * 2},
        },
    )
    scorer = ArmScorer(t_spec)
    preds = scorer.predict(X)
    np.testing.assert_allclose(preds["spend"], np.column_stack([b[0].predict(X), b[1].predict(X)]))
    expected_profit_c5 = 0.5 * b[1].predict(X) - 5 * b[2].predict(X) - 0.1
    expected_profit_none = 0.5 * b[0].predict(X) - 0 * b[2].predict(X)
    np.testing.assert_allclose(scorer.incremental_profit(X)[:, 1], expected_profit_c5 - expected_profit_none)
    mu_spec = dict(
        base,
        outcomes={
            "spend": {
                "kind": "mu_tau",
                "boosters": [b[0].model_to_string(), b[1].model_to_string()],
                "weights": [[0.0], [0.5]],
            }
        },
    )
    mu = ArmScorer(mu_spec).predict(X)["spend"]
    np.testing.assert_allclose(mu[:, 1], b[0].predict(X) + 0.5 * b[1].predict(X))
    np.testing.assert_allclose(mu[:, 0], b[0].predict(X))


def test_unknown_format_is_rejected():
    with pytest.raises(ModelError, match="format"):
        ArmScorer({"format": "pickle"})


def _hurdle_spec(value_from: list[str]) -> tuple[dict, list[lgb.Booster], Catalog]:
    cat = Catalog.from_dict(
        {"name": "h", "margin": 0.3, "offers": [{"id": "c5", "coupon_value": 5}], "channels": [{"id": "sms"}]}
    )
    b = [_tiny_booster(i) for i in range(3)]
    spec = {
        "format": FORMAT,
        "arms": cat.arm_ids,
        "catalog": cat.to_dict(),
        "feature_spec": {"columns": ["a", "b"], "categories": {}},
        "outcomes": {
            "buy": {"kind": "t", "boosters": [b[0].model_to_string(), b[1].model_to_string()]},
            "basket": {"kind": "t", "boosters": [b[2].model_to_string()] * 2},
        },
        "value_outcome": "spend",
        "value_from": value_from,
    }
    return spec, b, cat


def test_value_from_composes_the_value_as_the_product_of_its_parts():
    spec, b, _ = _hurdle_spec(["buy", "basket"])
    X = np.random.default_rng(3).normal(size=(6, 2))
    scorer = ArmScorer(spec)
    preds = scorer.predict(X)
    expected = np.column_stack([b[0].predict(X), b[1].predict(X)]) * b[2].predict(X)[:, None]
    np.testing.assert_allclose(preds["spend"], expected)
    np.testing.assert_allclose(preds["buy"], np.column_stack([b[0].predict(X), b[1].predict(X)]))
    profit = 0.3 * expected
    np.testing.assert_allclose(scorer.incremental_profit(X)[:, 1], profit[:, 1] - profit[:, 0])


def test_value_from_naming_an_unknown_outcome_is_rejected():
    spec, _, _ = _hurdle_spec(["buy", "bsket"])
    with pytest.raises(ModelError, match="'bsket'"):
        ArmScorer(spec)


def test_specs_without_value_from_predict_only_their_outcomes():
    spec, _, _ = _hurdle_spec([])
    del spec["value_from"]
    assert set(ArmScorer(spec).predict(np.zeros((2, 2)))) == {"buy", "basket"}
