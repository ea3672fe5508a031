"""Outcome files: the canonical columns, times as unix seconds or ISO 8601, errors naming file, column and rows."""

from __future__ import annotations

import pandas as pd
import pytest

from offerlift.features.errors import DataError, SchemaError
from offerlift.features.outcome_file import read_outcome_file

ROWS = [
    {"event_id": "e1", "customer_id": "c1", "ts": 1764000000, "visit": 1, "buy": 1, "spend": 42.0, "redeem": 1},
    {"event_id": "e2", "customer_id": "c2", "ts": 1764003600, "visit": 1, "buy": 0, "spend": 0.0, "redeem": 0},
]


def _write(tmp_path, rows, name="o.csv"):
    path = tmp_path / name
    frame = pd.DataFrame(rows)
    frame.to_parquet(path) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("name", ["o.csv", "o.parquet"])
def test_reads_both_formats_with_optional_decision_ids(tmp_path, name):
    out = read_outcome_file(_write(tmp_path, ROWS, name))
    assert out["event_id"].tolist() == ["e1", "e2"] and out["ts"].tolist() == [1764000000.0, 1764003600.0]
    assert out["decision_id"].isna().all()
    with_ids = read_outcome_file(_write(tmp_path, [{**ROWS[0], "decision_id": "d1"}, {**ROWS[1], "decision_id": ""}]))
    assert with_ids["decision_id"].tolist() == ["d1", None]


def test_iso_times_are_utc_unless_they_say_otherwise(tmp_path):
    rows = [{**ROWS[0], "ts": "2025-11-24T16:00:00Z"}, {**ROWS[1], "ts": "2025-11-24T18:00:00+01:00"}]
    out = read_outcome_file(_write(tmp_path, rows))
    assert out["ts"].tolist() == [1764000000.0, 1764003600.0]


def test_errors_name_the_file_the_column_and_the_rows(tmp_path):
    bad = _write(tmp_path, [ROWS[0], {**ROWS[1], "buy": 2}, {**ROWS[1], "event_id": "e3", "buy": 0.5}])
    with pytest.raises(SchemaError, match=r"o\.csv.*'buy'.*0 or 1.*\[2, 3\]"):
        read_outcome_file(bad)
    with pytest.raises(SchemaError, match=r"'spend'.*>= 0.*\[1\]"):
        read_outcome_file(_write(tmp_path, [{**ROWS[0], "spend": -1}]))
    with pytest.raises(SchemaError, match=r"'ts'.*ISO 8601.*\[2\]"):
        read_outcome_file(_write(tmp_path, [ROWS[0], {**ROWS[1], "ts": "yesterday"}]))
    with pytest.raises(SchemaError, match=r"'redeem'.*missing column"):
        read_outcome_file(_write(tmp_path, [{k: v for k, v in ROWS[0].items() if k != "redeem"}]))
    with pytest.raises(SchemaError, match=r"'revenue'.*unknown column"):
        read_outcome_file(_write(tmp_path, [{**ROWS[0], "revenue": 3}]))
    with pytest.raises(SchemaError, match=r"'event_id'.*missing.*\[2\]"):
        read_outcome_file(_write(tmp_path, [ROWS[0], {**ROWS[1], "event_id": None}]))
    with pytest.raises(DataError, match="no such file"):
        read_outcome_file(tmp_path / "missing.csv")
