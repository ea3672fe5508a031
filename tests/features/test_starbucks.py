"""Tests of the Starbucks loader: a tiny synthetic transcript, malformed files, and the real data when present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from offerlift.features.errors import ConfigError, DataError, DataNotFoundError, SchemaError
from offerlift.features.starbucks import load_starbucks, offer_key, parse_transcript

PORTFOLIO = [
    {"reward": 10, "channels": ["email"], "difficulty": 10, "duration": 7.0, "offer_type": "bogo", "id": "aaa"},
    {
        "reward": 0,
        "channels": ["web", "email"],
        "difficulty": 0,
        "duration": 3,
        "offer_type": "informational",
        "id": "bbb",
    },
]
PROFILE = [
    {"gender": "F", "age": 30, "id": "m1", "became_member_on": 20180101, "income": 50000.0},
    {"gender": "M", "age": 40, "id": "m2", "became_member_on": 20170101, "income": 60000.0},
    {"gender": "O", "age": 50, "id": "m3", "became_member_on": 20160101, "income": 70000.0},
    {"gender": None, "age": 118, "id": "m4", "became_member_on": 20150101, "income": None},
]


def rec(person: str, event: str, t: float, **value: object) -> dict:
    return {"person": person, "event": event, "value": value, "time": t}


TRANSCRIPT = [
    rec("m1", "offer received", 0, **{"offer id": "aaa"}),
    rec("m2", "offer received", 0, **{"offer id": "bbb"}),
    rec("m2", "offer received", 0, **{"offer id": "aaa"}),  # two offers at one wave: unit left out
    rec("m1", "transaction", 0, amount=3.0),
    rec("m3", "transaction", 5, amount=4.0),
    rec("m1", "offer viewed", 10, **{"offer id": "aaa"}),
    rec("m1", "transaction", 20, amount=12.5),
    rec("m1", "offer completed", 20, offer_id="aaa", reward=10),
    rec("m1", "transaction", 72, amount=5.0),  # just outside a 72-hour window
    rec("m4", "offer received", 100, **{"offer id": "bbb"}),  # not at a wave hour
    rec("m3", "offer received", 168, **{"offer id": "bbb"}),
    rec("m3", "offer viewed", 170, **{"offer id": "bbb"}),
]


def write_folder(folder: Path, transcript: list[dict] | list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("portfolio.json", PORTFOLIO), ("profile.json", PROFILE), ("transcript.json", transcript)):
        lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "sb", TRANSCRIPT)


def test_offer_key_reads_both_spellings() -> None:
    assert offer_key({"offer id": "x"}) == offer_key({"offer_id": "x", "reward": 2}) == "x"
    assert offer_key({"amount": 1.0}) is None
    with pytest.raises(DataError, match="two different offers"):
        offer_key({"offer id": "x", "offer_id": "y"})


def test_completed_events_keep_their_offer_after_normalization(tiny: Path) -> None:
    events = parse_transcript(tiny / "transcript.json")
    done = events[events["event"] == "offer_completed"]
    assert list(done["offer_id"]) == ["aaa"] and list(done["reward"]) == [10.0]
    assert events.loc[events["event"] == "transaction", "offer_id"].isna().all()


def test_tiny_transcript_arms_propensities_and_exclusions(tiny: Path) -> None:
    exp = load_starbucks(tiny)
    assert exp.catalog.arm_ids == ["none", "bogo_10_10_7", "informational_0_0_3"]
    assert exp.catalog.arm("bogo_10_10_7").offer.min_spend == 10.0
    assert exp.meta["offer_channels"]["informational_0_0_3"] == ["email", "web"]
    assert exp.excluded == {"two_offers_at_one_wave": 1, "offers_received_outside_waves": 1}
    a = exp.assignments.set_index("unit_id")
    assert len(a) == 4 * 6 - 1 and "m2@0" not in a.index
    assert a.loc["m1@0", "arm"] == "bogo_10_10_7" and a.loc["m3@168", "arm"] == "informational_0_0_3"
    assert a.loc["m4@0", "arm"] == "none" and a.loc["m1@168", "arm"] == "none"
    assert a.loc["m1@0", "propensity"] == pytest.approx(1 / 3)  # wave 0 has m1, m3, m4
    assert a.loc["m4@0", "propensity"] == pytest.approx(2 / 3)
    assert a.groupby("wave")["arm"].size().tolist() == [3, 4, 4, 4, 4, 4]
    assert np.isnan(exp.customers.set_index("customer_id").loc["m4", "age"])


def test_tiny_transcript_window_outcomes(tiny: Path) -> None:
    out = load_starbucks(tiny).outcomes.set_index("unit_id")
    m1 = out.loc["m1@0"]
    assert (m1["spend"], m1["transactions"], m1["buy"], m1["visit"]) == (15.5, 2, 1, 1)
    assert (m1["viewed"], m1["redeem"], m1["reward_cost"], m1["time"]) == (1, 1, 10.0, 72.0)
    m3 = out.loc["m3@0"]
    assert (m3["spend"], m3["buy"], m3["viewed"], m3["redeem"]) == (4.0, 1, 0, 0)
    m3_168 = out.loc["m3@168"]
    assert (m3_168["buy"], m3_168["visit"], m3_168["viewed"], m3_168["spend"]) == (0, 1, 1, 0.0)
    assert out.loc["m4@0", ["visit", "buy", "spend", "redeem"]].eq(0).all()
    wider = load_starbucks(tiny, window_hours=73.0).outcomes.set_index("unit_id")
    assert wider.loc["m1@0", "spend"] == 20.5


def test_tiny_transcript_features_only_see_the_past(tiny: Path) -> None:
    f = load_starbucks(tiny).features
    assert f.loc["m1@0", "frequency"] == 0  # the transaction at hour 0 is not before the wave
    assert f.loc["m1@168", ["frequency", "monetary", "offers_received", "offers_completed"]].tolist() == [
        3,
        20.5,
        1,
        1,
    ]
    assert f.loc["m3@168", "offers_received"] == 0  # the offer at 168 is the treatment, not history
    assert f.loc["m4@168", "offers_received"] == 1
    assert f.loc["m1@0", "tenure_days"] == 1.0  # epoch = the day after the last signup (2018-01-01)


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ({"person": "m1", "value": {"amount": 1.0}, "time": 3}, "event"),
        (rec("m1", "transaction", "three", amount=1.0), "time"),
        (rec("m1", "transaction", float("nan"), amount=1.0), "time"),
        (rec("m1", "offer viewed", 3), "value.offer id"),
        (rec("m1", "transaction", 3, amount=-2.0), "value.amount"),
        (rec("m9", "transaction", 3, amount=2.0), "person"),
        (rec("m1", "offer received", 0, **{"offer id": "zzz"}), "value.offer id"),
    ],
)
def test_malformed_transcript_row_names_column_and_row(tmp_path: Path, row: dict, column: str) -> None:
    folder = write_folder(tmp_path / "bad", [*TRANSCRIPT[:4], row, *TRANSCRIPT[4:]])
    with pytest.raises(SchemaError) as info:
        load_starbucks(folder)
    assert info.value.column == column
    assert info.value.rows == [4]


def test_line_that_is_not_json_is_a_data_error(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "bad", [*TRANSCRIPT[:2], "{not json", *TRANSCRIPT[2:]])
    with pytest.raises(DataError, match="line 2"):
        load_starbucks(folder)


def test_archive_with_unexpected_checksum_is_refused(tmp_path: Path) -> None:
    py7zr = pytest.importorskip("py7zr")
    folder = write_folder(tmp_path / "sb", TRANSCRIPT)
    with py7zr.SevenZipFile(folder / "transcript.7z", "w") as z:
        z.write(folder / "transcript.json", "transcript.json")
    (folder / "transcript.json").unlink()
    with pytest.raises(DataError, match="sha256"):
        load_starbucks(folder)


def test_bad_window_is_a_config_error(tiny: Path) -> None:
    with pytest.raises(ConfigError, match="window_hours"):
        load_starbucks(tiny, window_hours=0)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
        try:
            return load_starbucks()
        except DataNotFoundError as exc:
            pytest.skip(f"Starbucks data not found (set OFFERLIFT_DATA_DIR): {exc}")


@pytest.mark.slow
def test_real_data_has_102000_units_in_11_arms_a_quarter_control(real) -> None:
    s = real.summary()
    assert s["rows"] == 102_000 and len(s["arms"]) == 11 and s["arms"][0] == "none"
    assert 0.24 < s["control_share"] < 0.27
    assert real.excluded == {"two_offers_at_one_wave": 0, "offers_received_outside_waves": 0}
    a = real.assignments
    assert a.groupby("wave")["customer_id"].nunique().eq(17_000).all()
    total = a.drop_duplicates(["wave", "arm"]).groupby("wave")["propensity"].sum()
    np.testing.assert_allclose(total.to_numpy(), 1.0)
    treated = a.loc[a["arm"] != "none", "propensity"]
    assert treated.between(0.06, 0.09).all()
    assert real.meta["load_seconds"] < 60


@pytest.mark.slow
def test_real_data_features_are_point_in_time(real) -> None:
    units = real.units()
    assert units.loc[units["wave"] == 0, ["frequency", "offers_received"]].eq(0).all().all()
    assert units.loc[units["wave"] == 5, "offers_received"].max() <= 5
    assert units["age"].max() < 118 and units["age"].isna().sum() == 2175 * 6
