"""The validators reject each kind of bad table with an error that names table, column and rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offerlift.features.errors import SchemaError
from offerlift.features.schema import validate_arms, validate_experiment, validate_outcomes_follow, validate_table

ARMS = ["none", "a", "b"]


def good_tables(n: int = 6):
    ids = [f"u{i}" for i in range(n)]
    customers = pd.DataFrame({"customer_id": ids})
    assignments = pd.DataFrame(
        {
            "unit_id": ids,
            "customer_id": ids,
            "time": np.arange(n, dtype=float),
            "arm": [ARMS[i % 3] for i in range(n)],
            "propensity": 1 / 3,
            "group": "experiment",
        }
    )
    outcomes = pd.DataFrame(
        {
            "unit_id": ids,
            "customer_id": ids,
            "time": np.arange(n, dtype=float) + 1,
            "visit": 1,
            "buy": [i % 2 for i in range(n)],
            "spend": np.linspace(0, 5, n),
            "redeem": 0,
        }
    )
    return customers, assignments, outcomes


def test_good_tables_pass():
    validate_experiment(*good_tables(), ARMS)


@pytest.mark.parametrize(
    "table_idx,table,column",
    [
        (1, "assignments", "propensity"),
        (2, "outcomes", "spend"),
        (1, "assignments", "arm"),
        (0, "customers", "customer_id"),
    ],
)
def test_missing_column_is_named(table_idx, table, column):
    tables = list(good_tables())
    tables[table_idx] = tables[table_idx].drop(columns=[column])
    with pytest.raises(SchemaError) as err:
        validate_experiment(*tables, ARMS)
    assert err.value.table == table and err.value.column == column
    assert "missing column" in str(err.value)


def test_wrong_type_is_named():
    _, assignments, _ = good_tables()
    assignments["time"] = "yesterday"
    with pytest.raises(SchemaError, match="'time'.*expected numbers"):
        validate_table(assignments, "assignments")


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 5),
    st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0, exclude_min=True), st.just(float("nan"))),
)
def test_propensity_outside_unit_interval_names_row(row, bad):
    _, assignments, _ = good_tables()
    assignments.loc[row, "propensity"] = bad
    with pytest.raises(SchemaError) as err:
        validate_table(assignments, "assignments")
    assert err.value.column == "propensity" and err.value.rows[0] == row


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=1e-9, max_value=1.0))
def test_propensity_inside_unit_interval_passes(p):
    _, assignments, _ = good_tables()
    assignments["propensity"] = p
    validate_table(assignments, "assignments")


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(0, 4))
def test_duplicate_ids_name_the_later_row(dup_row, source_row):
    customers, _, _ = good_tables()
    if dup_row <= source_row:
        dup_row, source_row = source_row + 1, dup_row
    customers.loc[dup_row, "customer_id"] = customers.loc[source_row, "customer_id"]
    with pytest.raises(SchemaError) as err:
        validate_table(customers, "customers")
    assert err.value.column == "customer_id" and err.value.rows == [dup_row]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 5), st.floats(min_value=0.001, max_value=1000))
def test_outcome_before_assignment_is_rejected(row, shift):
    _, assignments, outcomes = good_tables()
    outcomes.loc[row, "time"] = assignments.loc[row, "time"] - shift
    with pytest.raises(SchemaError) as err:
        validate_outcomes_follow(assignments, outcomes)
    assert err.value.column == "time" and err.value.rows == [row]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 5), st.text(min_size=1, max_size=8).filter(lambda s: s not in ARMS))
def test_unknown_arm_is_rejected(row, arm):
    _, assignments, _ = good_tables()
    assignments.loc[row, "arm"] = arm
    with pytest.raises(SchemaError) as err:
        validate_arms(assignments, ARMS)
    assert err.value.column == "arm" and err.value.rows == [row]


def test_non_binary_outcome_is_rejected():
    _, _, outcomes = good_tables()
    outcomes.loc[3, "buy"] = 2
    with pytest.raises(SchemaError, match="'buy'.*0/1.*\\[3\\]"):
        validate_table(outcomes, "outcomes")


def test_unknown_group_is_rejected():
    _, assignments, _ = good_tables()
    assignments.loc[2, "group"] = "vip"
    with pytest.raises(SchemaError, match="group"):
        validate_table(assignments, "assignments")


def test_outcome_of_unknown_unit_is_rejected():
    _, assignments, outcomes = good_tables()
    outcomes.loc[1, "unit_id"] = "ghost"
    with pytest.raises(SchemaError, match="no assignment"):
        validate_outcomes_follow(assignments, outcomes)


def test_timed_table_names_the_missing_column_and_the_rows_without_a_finite_time():
    from offerlift.features.schema import timed_table

    df = pd.DataFrame({"customer_id": ["a", "b", "c"], "time": [1.0, float("nan"), "x"]}, index=[10, 11, 12])
    with pytest.raises(SchemaError, match="event"):
        timed_table(df, "events", ("customer_id", "time", "event"))
    with pytest.raises(SchemaError, match="time") as info:
        timed_table(df, "events", ("customer_id", "time"))
    assert "11" in str(info.value) and "12" in str(info.value) and "10" not in str(info.value)
    assert timed_table(df.iloc[:1], "events", ("customer_id", "time")).tolist() == [1.0]
