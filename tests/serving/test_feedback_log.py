"""Outcomes into the decision log and the attribution join kept there: refused when they name unknown decisions,
counted (new, duplicate, unattributed, late), joined exactly once, and a second run changes nothing."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from offerlift.features.errors import SchemaError
from offerlift.serving.decision_log import DecisionLog
from offerlift.serving.decision_log import decisions as decision_table
from offerlift.serving.feedback_log import attributions, ingest_outcomes, join, joined_decisions

H = 3600.0
WINDOW = 24 * H


def _decision(did: str, cid: str, ts: float, arm: str = "none") -> dict:
    return {
        "decision_id": did, "ts": ts, "customer_id": cid, "campaign": "spring", "arm": arm, "offer_id": None,
        "channel": None, "coupon_value": 0.0, "propensity": 0.5, "group_propensity": 0.5, "grp": "exploit",
        "model_version": "1", "expected_incremental_profit": 0.0, "expected_cost": 0.0, "committed_cost": 0.0,
        "context": None,
    }  # fmt: skip


def _event(eid: str, cid: str, ts: float, spend: float = 10.0, decision_id: str | None = None) -> dict:
    return {"event_id": eid, "customer_id": cid, "ts": ts, "visit": 1.0, "buy": 1.0, "spend": spend, "redeem": 0.0,
            "decision_id": decision_id}  # fmt: skip


@pytest.fixture
def dlog(tmp_path) -> DecisionLog:
    log = DecisionLog(f"sqlite:///{tmp_path / 'd.db'}")
    rows = [_decision("d1", "a", 0.0), _decision("d2", "b", 0.0), _decision("d3", "a", 100 * H)]
    with log.engine.begin() as conn:
        conn.execute(decision_table.insert(), rows)
    return log


def test_counts_new_duplicate_unattributed_and_late(dlog):
    first = pd.DataFrame([_event("e1", "a", H), _event("e2", "b", 2 * H), _event("e2", "b", 2 * H),
                          _event("e3", "z", H), _event("e4", "a", 50 * H)])  # fmt: skip
    c = ingest_outcomes(dlog, first, "batch 1", WINDOW)
    # e3: a customer without decisions; e4: after d1's window, before d3: both unattributed
    assert (c.received, c.new, c.duplicate, c.unattributed, c.late) == (5, 4, 1, 2, 0)
    again = ingest_outcomes(dlog, first, "batch 1", WINDOW)
    assert (again.new, again.duplicate, again.unattributed, again.late) == (0, 5, 0, 0)
    j = join(dlog, WINDOW, as_of=30 * H)
    assert (j.joined, j.updated, j.open) == (2, 0, 0)  # d3 is after as_of: not a decision yet
    late = ingest_outcomes(dlog, pd.DataFrame([_event("e5", "b", 3 * H, spend=5.0)]), "batch 2", WINDOW)
    assert (late.new, late.late) == (1, 1)


def test_join_is_exactly_once_and_a_second_run_changes_nothing(dlog):
    ingest_outcomes(dlog, pd.DataFrame([_event("e1", "a", H), _event("e2", "b", 2 * H, spend=4.0)]), "x", WINDOW)
    first = join(dlog, WINDOW, as_of=200 * H)
    assert (first.joined, first.updated, first.unchanged, first.open) == (3, 0, 0, 0)
    with dlog.engine.connect() as conn:
        before = conn.execute(sa.select(attributions).order_by(attributions.c.decision_id)).all()
    second = join(dlog, WINDOW, as_of=300 * H)
    assert (second.joined, second.updated, second.unchanged) == (0, 0, 3)
    with dlog.engine.connect() as conn:
        assert conn.execute(sa.select(attributions).order_by(attributions.c.decision_id)).all() == before
    # a late event of d2 changes d2's row only
    ingest_outcomes(dlog, pd.DataFrame([_event("e9", "b", 3 * H, spend=6.0)]), "late", WINDOW)
    third = join(dlog, WINDOW, as_of=300 * H)
    assert (third.joined, third.updated, third.unchanged) == (0, 1, 2)
    frame, not_joined = joined_decisions(dlog, "spring")
    spend = dict(zip(frame["decision_id"], frame["spend"], strict=True))
    assert spend == {"d1": 10.0, "d2": 10.0, "d3": 0.0} and not_joined == 0
    assert dict(zip(frame["decision_id"], frame["orders"], strict=True))["d2"] == 2.0


def test_an_open_window_is_joined_once_it_closes(dlog):
    ingest_outcomes(dlog, pd.DataFrame([_event("e1", "a", 101 * H)]), "x", WINDOW)
    early = join(dlog, WINDOW, as_of=110 * H)
    assert early.open == 1 and early.joined == 2
    assert joined_decisions(dlog, "spring", start=100 * H)[1] == 1  # d3 not joined yet
    later = join(dlog, WINDOW, as_of=125 * H)
    assert (later.joined, later.open) == (1, 0)
    frame, _ = joined_decisions(dlog, "spring", start=100 * H)
    assert frame["decision_id"].tolist() == ["d3"] and frame["spend"].tolist() == [10.0]


def test_an_event_naming_an_unknown_decision_refuses_the_batch_and_stores_nothing(dlog):
    batch = pd.DataFrame([_event("e1", "a", H, decision_id="d1"), _event("e2", "a", H, decision_id="nope"),
                          _event("e3", "b", H, decision_id="d1")])  # fmt: skip
    with pytest.raises(SchemaError, match=r"'decision_id'.*not in the decision log.*'nope'.*\[2\]") as err:
        ingest_outcomes(dlog, batch, "f.csv", WINDOW)
    assert "f.csv" in str(err.value)
    with pytest.raises(SchemaError, match=r"'customer_id'.*another customer.*\[2\]"):
        ingest_outcomes(dlog, batch.drop(index=1), "f.csv", WINDOW)
    assert dlog.read("outcomes") == []


def test_an_event_that_names_its_decision_joins_it_rather_than_the_last_touch(dlog):
    with dlog.engine.begin() as conn:
        conn.execute(decision_table.insert(), [_decision("d4", "a", 2 * H)])
    ingest_outcomes(dlog, pd.DataFrame([_event("e1", "a", 3 * H, decision_id="d1")]), "x", WINDOW)
    join(dlog, WINDOW, as_of=500 * H)
    frame, _ = joined_decisions(dlog)
    spend = dict(zip(frame["decision_id"], frame["spend"], strict=True))
    assert spend["d1"] == 10.0 and spend["d4"] == 0.0
