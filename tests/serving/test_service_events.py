"""The real service's event stream: ``POST /events`` feeds the triggers, whose decisions go through the same Decider as
``/decide`` (logged, budgeted, consent and caps applied) and out through the file adapter; timers fire on later
events, on ``/events/flush`` and, with the server clock, on the tick; the workers share one set of timers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offerlift.serving.decision_log import DecisionLog
from tests.serving.conftest import Registry, ServiceProcess, fill_store, free_port, service_config
from tests.serving.test_service_fuzz import any_json

pytestmark = pytest.mark.slow

MIN = 1 / 60
QUICK = {"name": "quick", "start": ["app_open"], "wait_minutes": 5, "channels": ["push", "sms"], "cooldown_hours": 0}
WELCOME = {"name": "welcome", "start": ["signup"], "wait_hours": 72, "first_order_only": True}


def event(cid: str, t: float, kind: str, amount: float = 0.0) -> dict:
    return {"customer_id": cid, "time": t, "event": kind, "amount": amount}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("events")


@pytest.fixture(scope="module")
def store(workdir) -> dict:
    """The online store's customers (index cust00000 ...) with their consent flags."""
    return fill_store(workdir / "store.db", n=200).to_dict("index")


@pytest.fixture(scope="module")
def service(workdir, store, registry: Registry):
    """A service (2 workers) whose triggers run on the events' clock; every decision explores, so that offers are
    made whatever the champion of the session's registry is (another module swaps in one where coupons hurt)."""
    config = service_config(
        workdir,
        registry,
        policy={"holdout": 0.0, "explore": 1.0},
        rules={"cap_per_customer": 50},
        campaign={"budget": 100_000.0},
        triggers={"clock": "events", "rules": [QUICK, WELCOME]},
    )
    svc = ServiceProcess(config, free_port(), workdir / "service.log").start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def decision_log(workdir) -> DecisionLog:
    return DecisionLog(f"sqlite:///{workdir / 'decisions.db'}")


def outbox(workdir: Path) -> list[dict]:
    path = workdir / "outbox.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_events_need_the_key_and_json(service):
    body = {"events": [event("cust00001", 1.0, "app_open")]}
    with service.client(key=None) as anon:
        assert anon.post("/events", json=body).status_code == 401
        assert anon.post("/events/flush", json={}).status_code == 401
    with service.client() as c:
        r = c.post("/events", content=b"customer_id=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 415
        assert {"/events", "/events/flush"} <= set(c.get("/docs.json").json()["paths"])


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"customer_id": "x", "event": "app_open"}, "time"),
        ({"customer_id": "x", "time": 1.0, "event": "app_close"}, "event"),
        ({"customer_id": "", "time": 1.0, "event": "app_open"}, "customer_id"),
        ({"customer_id": "x", "time": "noon", "event": "app_open"}, "time"),
        ({"customer_id": "x", "time": 1.0, "event": "transaction", "amount": -5}, "amount"),
        ({"customer_id": "x", "time": 1.0, "event": "app_open", "device": "d1"}, "device"),
    ],
)
def test_a_malformed_event_gets_a_400_naming_its_index_and_field(service, bad, field):
    good = event("cust00002", 1.0, "app_open")
    with service.client() as c:
        r = c.post("/events", json={"events": [good, good, bad]})
    assert r.status_code == 400, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [["events", 2, field]]  # the index and the field


def test_an_app_open_without_an_order_fires_a_logged_decision_sent_to_the_outbox(service, workdir, store, decision_log):
    ids = [f"cust{i:05d}" for i in range(10, 40)]
    buyers = set(ids[::3])
    t0 = 100.0
    batch = [event(c, t0, "app_open") for c in ids] + [event(c, t0 + 2 * MIN, "transaction", 30.0) for c in buyers]
    with service.client() as c:
        first = c.post("/events", json={"events": batch}).json()
        assert first["accepted"] == len(batch) and first["firings"] == [] and first["pending"] >= len(ids) - len(buyers)
        later = c.post("/events", json={"events": [event("cust00199", t0 + 10 * MIN, "offer_viewed")]}).json()
    fired = {f["customer_id"]: f for f in later["firings"] if f["trigger"] == "quick"}
    assert set(fired) == set(ids) - buyers  # an order within 5 minutes cancels; the rest fire once
    assert all(f["time"] == pytest.approx(t0 + 5 * MIN) for f in fired.values())
    logged = {r["decision_id"]: r for r in decision_log.read()}
    assert set(later["decision_ids"]) == {f["decision_id"] for f in fired.values()}
    for f in fired.values():
        row = logged[f["decision_id"]]  # the same decision path as /decide: logged before it is sent
        assert row["arm"] == f["arm"] and row["channel"] == f["channel"]
        assert json.loads(row["context"])["trigger"] == "quick"
        if f["status"] == "sent":
            assert f["channel"] in ("push", "sms") and store[f["customer_id"]][f"consent_{f['channel']}"] == 1.0
        else:
            assert f["status"] == "no_offer" and f["arm"] == "none"
    sent = [f for f in fired.values() if f["status"] == "sent"]
    assert len(sent) >= len(fired) // 2
    box = {(m["customer_id"], m["decision_id"]) for m in outbox(workdir) if m["trigger"] == "quick"}
    assert {(f["customer_id"], f["decision_id"]) for f in sent} <= box


def test_the_workers_share_the_timers(service):
    """Starts and cancels on separate connections (so on either worker): no cancelled timer fires."""
    ids = [f"cust{i:05d}" for i in range(40, 80)]
    t0 = 200.0
    for cid in ids:
        with service.client() as c:
            assert c.post("/events", json={"events": [event(cid, t0, "app_open")]}).status_code == 200
    for cid in ids[:30]:
        with service.client() as c:
            c.post("/events", json={"events": [event(cid, t0 + 1 * MIN, "transaction", 20.0)]})
    with service.client() as c:
        r = c.post("/events/flush", json={"until": t0 + 1.0}).json()
    assert sorted(f["customer_id"] for f in r["firings"]) == ids[30:]


def test_late_orders_still_cancel_and_flush_fires_what_is_due(service):
    t0 = 300.0
    with service.client() as c:
        c.post("/events", json={"events": [event("cust00081", t0, "app_open"), event("cust00082", t0, "app_open")]})
        c.post("/events", json={"events": [event("cust00199", t0 + 4 * MIN, "offer_viewed")]})
        late = c.post("/events", json={"events": [event("cust00081", t0 + 1 * MIN, "transaction", 10.0)]}).json()
        assert late["accepted"] == 1 and late["late"] == 1 and late["firings"] == []
        assert c.post("/events/flush", json={"until": t0 + 4.5 * MIN}).json()["firings"] == []  # not due yet
        done = c.post("/events/flush", json={"until": t0 + 5 * MIN}).json()
        assert [f["customer_id"] for f in done["firings"]] == ["cust00082"]
        again = c.post("/events/flush", json={}).json()
    assert again["firings"] == []  # a timer fires once


def test_new_customers_without_a_first_order_get_the_welcome_after_three_days(service, store):
    t0 = 400.0
    known_buyer = next(c for c, row in store.items() if row["frequency"] > 0)
    new = ["newbie-1", "newbie-2"]
    batch = [event(c, t0, "signup") for c in [*new, known_buyer]] + [event("newbie-2", t0 + 24, "transaction", 9.0)]
    with service.client() as c:
        assert c.post("/events", json={"events": batch}).json()["accepted"] == 4
        r = c.post("/events/flush", json={"until": t0 + 80}).json()
    welcome = [f for f in r["firings"] if f["trigger"] == "welcome"]
    assert [f["customer_id"] for f in welcome] == ["newbie-1"] and welcome[0]["time"] == pytest.approx(t0 + 72)
    # a cold customer: decided from no features; no consent flag is known, so no channel may be used
    assert welcome[0]["status"] == "no_offer" and welcome[0]["decision_id"] is not None


def test_decide_is_unchanged_and_takes_no_trigger_fields(service):
    with service.client() as c:
        assert c.post("/decide", json={"customer_id": "cust00001"}).status_code == 200
        r = c.post("/decide", json={"customer_id": "cust00001", "context": {"arms": ["c5@sms"]}})
    assert r.status_code == 400 and "arms" in r.text


def test_the_server_clock_ticks_timers_and_refuses_times_in_another_unit(tmp_path, registry):
    fill_store(tmp_path / "store.db", n=20)
    rule = {**QUICK, "wait_minutes": 0.02}  # 1.2 seconds
    config = service_config(
        tmp_path,
        registry,
        workers=1,
        policy={"holdout": 0.0, "explore": 0.0},
        triggers={"clock": "server", "tick_seconds": 0.2, "rules": [rule]},
    )
    svc = ServiceProcess(config, free_port(), tmp_path / "service.log").start()
    try:
        now = time.time() / 3600
        with svc.client() as c:
            r = c.post("/events", json={"events": [event("cust00001", now, "app_open"), event("x", 10.0, "app_open")]})
            assert r.status_code == 400 and "events.1.time" in r.text and "unix epoch" in r.text
            assert c.post("/events/flush", json={"until": now + 1.0}).status_code == 400  # would fire early
            r = c.post("/events", json={"events": [event(f"cust{i:05d}", now, "app_open") for i in range(5)]})
            assert r.status_code == 200 and r.json()["pending"] == 5
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and c.post("/events/flush", json={"until": now}).json()["pending"]:
                time.sleep(0.2)  # (this flush fires nothing: "until" is the events' own time)
            assert c.post("/events/flush", json={"until": now}).json()["pending"] == 0  # the tick fired them
        with DecisionLog(f"sqlite:///{tmp_path / 'decisions.db'}").engine.connect() as conn:
            contexts = [json.loads(x) for (x,) in conn.exec_driver_sql("SELECT context FROM decisions")]
        assert sum(ctx.get("trigger") == "quick" for ctx in contexts) == 5
    finally:
        svc.stop()


# The fuzz tests come last: their random times move the shared stream's clock, which the tests above rely on.
KINDS = ["transaction", "offer_received", "offer_viewed", "offer_completed", "app_open", "signup"]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
finite = st.floats(-1e12, 1e12, allow_nan=False)
valid_event = st.fixed_dictionaries(
    {"customer_id": st.text(min_size=1, max_size=20), "time": finite, "event": st.sampled_from(KINDS)},
    optional={
        "amount": st.floats(0, 1e9),
        "offer_id": st.none() | st.text(max_size=10),
        "reward": st.floats(0, 100),
        "channel": st.none() | st.sampled_from(["sms", "push"]),
    },
)


@FUZZ
@given(st.lists(valid_event, max_size=6))
def test_valid_event_batches_are_answered(service, events):
    with service.client() as c:
        r = c.post("/events", json={"events": events})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["accepted"] == len(events) and body["late"] <= len(events)
    assert set(body["decision_ids"]) <= {f["decision_id"] for f in body["firings"]}


@FUZZ
@given(st.data())
def test_mutated_and_arbitrary_event_bodies_never_get_a_5xx(service, data):
    events = data.draw(st.lists(valid_event, min_size=1, max_size=3))
    i = data.draw(st.integers(0, len(events) - 1))
    key = data.draw(st.sampled_from(["customer_id", "time", "event", "amount", "reward", "offer_id", "extra"]))
    events[i][key] = data.draw(any_json)
    body = data.draw(st.sampled_from([{"events": events}, events, {"events": events[0]}, {"until": events[0]}]))
    path = data.draw(st.sampled_from(["/events", "/events/flush"]))
    with service.client() as c:
        r = c.post(path, json=body)
    assert r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
