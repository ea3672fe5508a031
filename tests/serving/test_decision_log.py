"""The decision log never overspends or breaks a cap, even with several processes at once, and loses nothing.

Every test runs on SQLite and on a real PostgreSQL server (`postgres_server` in conftest.py)."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pandas as pd
import pytest

from offerlift.features.errors import DataError
from offerlift.serving.decision_log import DecisionLog, LedgerState

CAP = 2


def _row(state: LedgerState, cost: float) -> dict:
    """Contact on 'sms' when budget and cap allow, else no offer (what the service's rules do)."""
    ok = (state.budget_left is None or state.budget_left >= cost) and state.contacts.get("sms", 0) < CAP
    return {
        "arm": "c5@sms" if ok else "none",
        "offer_id": "c5" if ok else None,
        "channel": "sms" if ok else None,
        "coupon_value": 5.0 if ok else 0.0,
        "propensity": 1.0,
        "group_propensity": 1.0,
        "grp": "exploit",
        "model_version": "1",
        "expected_incremental_profit": 0.1,
        "expected_cost": 1.0 if ok else 0.0,
        "committed_cost": cost if ok else 0.0,
        "context": {"k": 1},
    }


def _worker(url: str, worker: int, n: int) -> None:
    log = DecisionLog(url, synchronous="NORMAL")
    for i in range(n):
        log.commit("camp", f"c{(worker * 7 + i) % 13}", 24.0, lambda s: _row(s, 3.0), now=1000.0 + i)
    log.dispose()


def test_concurrent_processes_never_overspend_or_break_caps(log_url):
    url = log_url
    log = DecisionLog(url)
    log.set_budget("camp", total=50.0, start_ts=0.0, end_ts=10_000.0)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(url, w, 30)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = log.read()
    assert len(rows) == 120
    contacted = [r for r in rows if r["channel"] == "sms"]
    assert sum(r["committed_cost"] for r in contacted) <= 50.0
    assert len(contacted) == 16  # floor(50 / 3): the budget is used up exactly, never beyond
    per_customer: dict[str, int] = {}
    for r in contacted:
        per_customer[r["customer_id"]] = per_customer.get(r["customer_id"], 0) + 1
    assert max(per_customer.values()) <= CAP
    assert log.budget("camp")["committed"] == pytest.approx(sum(r["committed_cost"] for r in contacted))


def test_outcomes_are_idempotent_and_validated(log_url):
    log = DecisionLog(log_url)
    ev = {"event_id": "e1", "customer_id": "c1", "ts": 5.0, "visit": 1, "buy": 1, "spend": 20.0, "redeem": 0}
    assert log.add_outcomes([ev, ev]) == 1
    assert log.add_outcomes([ev]) == 0
    with pytest.raises(DataError, match="'spend'"):
        log.add_outcomes([{k: v for k, v in ev.items() if k != "spend"} | {"event_id": "e2"}])


def test_contacts_outside_the_window_do_not_count(log_url):
    log = DecisionLog(log_url)
    seen = []
    for t in (0.0, 3600.0, 3 * 3600.0):
        log.commit("camp", "c1", 1.5, lambda s: (seen.append(s.contacts.get("sms", 0)), _row(s, 0.0))[1], now=t)
    assert seen == [0, 1, 0]  # at 3 h the contacts at 0 h and 1 h are older than 1.5 h


def test_outcomes_in_bulk_store_what_one_at_a_time_inserts_would_once(log_url):
    """Reference: insert each event unless its event_id is already stored (first one wins), one at a time."""
    rng = np.random.default_rng(0)
    events = [
        {
            "event_id": f"e{i % 70}",
            "decision_id": f"d{i}" if i % 3 else None,
            "customer_id": f"c{i % 13}",
            "ts": float(i),
            "visit": 1.0,
            "buy": float(rng.random() < 0.3),
            "spend": float(rng.gamma(2.0, 20.0)),
            "redeem": 0.0,
        }
        for i in range(100)
    ]
    reference: dict[str, dict] = {}
    for e in events:
        reference.setdefault(e["event_id"], e)
    log = DecisionLog(log_url)
    assert log.add_outcomes(events[:40], chunk=7) == 40
    assert log.add_outcomes(events, chunk=7) == 30
    assert log.add_outcomes(events) == 0
    got = pd.DataFrame(log.read("outcomes")).drop(columns="received_ts").sort_values("event_id")
    want = pd.DataFrame(list(reference.values())).sort_values("event_id")
    pd.testing.assert_frame_equal(got[want.columns].reset_index(drop=True), want.reset_index(drop=True))
