"""Any randomized experiment file becomes an Experiment; bad files get errors naming column and row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerlift.features.byo import experiment_from_frame, load_experiment_file
from offerlift.features.errors import SchemaError


def frame(n: int = 90) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "group": np.array(["ctl", "A", "B"])[np.arange(n) % 3],
            "converted": rng.integers(0, 2, n),
            "revenue": rng.gamma(2, 10, n),
            "age": rng.integers(18, 80, n),
            "city": rng.choice(["x", "y"], n),
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_round_trip_keeps_rows_and_arms(tmp_path, suffix):
    df = frame()
    path = tmp_path / f"exp{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path)
    exp = load_experiment_file(path, treatment="group", control="ctl", outcome="converted", value="revenue")
    assert exp.catalog.arm_ids == ["ctl", "A", "B"]
    assert list(exp.features.columns) == ["age", "city"]
    assert len(exp.units()) == 90
    np.testing.assert_allclose(exp.assignments["propensity"], 1 / 3)
    np.testing.assert_allclose(exp.outcomes["reward"], df["revenue"])


def test_missing_control_label_lists_the_labels():
    with pytest.raises(SchemaError, match="'none'.*'A', 'B', 'ctl'"):
        experiment_from_frame(frame(), treatment="group", control="none", outcome="converted")


def test_missing_outcome_value_names_the_row():
    df = frame()
    df.loc[41, "converted"] = np.nan
    with pytest.raises(SchemaError) as err:
        experiment_from_frame(df, treatment="group", control="ctl", outcome="converted")
    assert err.value.column == "converted" and err.value.rows == [41]


def test_text_in_value_column_names_the_row():
    df = frame().astype({"revenue": object})
    df.loc[5, "revenue"] = "n/a"
    with pytest.raises(SchemaError) as err:
        experiment_from_frame(df, treatment="group", control="ctl", outcome="converted", value="revenue")
    assert err.value.column == "revenue" and err.value.rows == [5]


def test_feature_list_selects_columns_and_missing_feature_is_named():
    exp = experiment_from_frame(frame(), treatment="group", control="ctl", outcome="converted", features=["age"])
    assert list(exp.features.columns) == ["age"]
    with pytest.raises(SchemaError, match="'height'"):
        experiment_from_frame(frame(), treatment="group", control="ctl", outcome="converted", features=["height"])
