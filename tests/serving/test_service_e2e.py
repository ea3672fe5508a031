"""The real service over HTTP: decisions and outcomes reach the log, the key is required, bad bodies get a 4xx
naming the field, a new champion is picked up without a restart, and a SIGKILL loses no answered decision."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from offerlift.models.registry import alias_version
from offerlift.serving.decision_log import DecisionLog
from tests.serving.conftest import (
    API_KEY,
    REPO,
    Registry,
    ServiceProcess,
    fill_store,
    free_port,
    service_config,
    tiny_spec,
)

pytestmark = pytest.mark.slow

BUDGET = 2000.0
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SECRET = "secret-cust-"  # prefix of customer ids that must never show up in the service's log


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def service(workdir, registry: Registry):
    """One real service (2 workers) for the module; the SIGKILL test restarts it in place."""
    fill_store(workdir / "store.db", n=200)
    config = service_config(workdir, registry, campaign={"budget": BUDGET})
    svc = ServiceProcess(config, free_port(), workdir / "service.log").start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def decision_log(workdir) -> DecisionLog:
    return DecisionLog(f"sqlite:///{workdir / 'decisions.db'}")


def test_decisions_and_outcomes_round_trip_through_the_log(service, decision_log, registry):
    with service.client() as c:
        answers = [c.post("/decide", json={"customer_id": f"cust{i:05d}"}) for i in range(15)]
        new = [{"customer_id": f"{SECRET}new{i}", "context": {"city": "wuhan"}} for i in range(5)]
        answers += [c.post("/decide", json=b) for b in new]
        assert [r.status_code for r in answers] == [200] * 20
        body = [r.json() for r in answers]
        events = [
            {"customer_id": f"cust{i:05d}", "ts": 1.0 + i, "visit": 1, "buy": i % 2, "spend": 10.0 * (i % 2),
             "redeem": 0, "event_id": f"ev{i}", "decision_id": body[i]["decision_id"]}
            for i in range(15)
        ]  # fmt: skip
        assert c.post("/outcomes", json={"events": events}).json() == {"received": 15, "new": 15}
        assert c.post("/outcomes", json={"events": events[:3]}).json() == {"received": 3, "new": 0}
    logged = {r["decision_id"]: r for r in decision_log.read()}
    for b in body:
        row = logged[b["decision_id"]]
        assert (row["arm"], row["offer_id"], row["channel"], row["grp"]) == (
            b["arm"], b["offer_id"], b["channel"], b["group"]
        )  # fmt: skip
        assert row["propensity"] == b["propensity"]
        assert row["model_version"] == b["model_version"] == alias_version(registry.settings)
        assert {"coupon_value", "expected_incremental_profit", "explanation"} <= set(b)
    assert [b["cold_start"] for b in body] == [False] * 15 + [True] * 5
    outcomes = {o["event_id"]: o for o in decision_log.read("outcomes")}
    assert all(outcomes[f"ev{i}"]["decision_id"] == body[i]["decision_id"] for i in range(15))


def test_requests_without_the_right_key_get_401_and_health_is_open(service):
    body = {"customer_id": "cust00001"}
    with service.client(key=None) as anon, service.client(key="wrong-key-123456") as wrong:
        assert anon.post("/decide", json=body).status_code == 401
        assert anon.post("/outcomes", json={"events": []}).status_code == 401
        assert wrong.post("/decide", json=body).status_code == 401
        assert anon.post("/decide", json=body, headers={"Authorization": "cust00001"}).status_code == 401
        assert anon.get("/livez").status_code == 200 and anon.get("/readyz").status_code == 200
        paths = anon.get("/docs.json").json()["paths"]
        assert {"/decide", "/outcomes"} <= set(paths)
    with service.client(key=None) as c:  # the scheme name is case-insensitive (RFC 7235)
        for scheme in ("bearer", "BEARER", "Bearer"):
            assert c.post("/decide", json=body, headers={"Authorization": f"{scheme} {API_KEY}"}).status_code == 200


def test_unknown_fields_and_values_get_a_400_that_names_them(service):
    with service.client() as c:
        r = c.post("/decide", json={"customer_id": "cust00001", "contxt": {"channels": ["sms"]}})
        assert r.status_code == 400 and "'contxt'" in r.json()["error"]
        r = c.post("/decide", json={"customer_id": "cust00001", "context": {"channels": ["sms", "fax"]}})
        assert r.status_code == 400 and "fax" in r.text and "sms" not in r.text.split("known")[0]
        r = c.post("/outcomes", json={"events": [], "evnts": []})
        assert r.status_code == 400 and "'evnts'" in r.text
        assert c.post("/decide", json={"customer_id": "cust00001", "context": {"channels": ["sms"]}}).status_code == 200


def test_a_request_city_never_replaces_the_stored_one(registry, tmp_path):
    """With eligibility by city, known customers of another city stay ineligible whatever context.city says (with
    full exploration an eligible customer would get one of the 20 arms); an unknown customer's context.city counts,
    as nothing is stored for it."""
    frame = fill_store(tmp_path / "store.db", n=80)
    outsiders = [cid for cid, city in frame["city"].items() if city != "shanghai"][:12]
    config = service_config(
        tmp_path,
        registry,
        rules={"cities": ["shanghai"], "require_consent": False},
        policy={"holdout": 0.0, "explore": 1.0},
    )
    svc = ServiceProcess(config, free_port(), tmp_path / "service.log").start()
    try:
        with svc.client() as c:
            arms = [
                c.post("/decide", json={"customer_id": cid, "context": {"city": "shanghai"}}).json()["arm"]
                for cid in outsiders
            ]
            news = [
                c.post("/decide", json={"customer_id": f"new{i}", "context": {"city": "shanghai"}}).json()["arm"]
                for i in range(12)
            ]
    finally:
        svc.stop()
    assert arms == ["none"] * len(outsiders)
    assert any(a != "none" for a in news)  # the context city does count where nothing is stored


def test_the_documented_spec_and_docs_page(service):
    with service.client(key=None) as c:
        spec = c.get("/openapi.json").json()
        assert c.get("/docs.json").json() == spec
        page = c.get("/docs")
        assert page.status_code == 200 and "/openapi.json" in page.text
        scripts = [m.split('"')[1] for m in page.text.split("<script src=")[1:]]
        assert scripts and all(s.startswith("/static_content/") for s in scripts)  # no third-party script
        assert all(c.get(s).status_code == 200 for s in scripts)  # and the local ones load
        assert c.get("/", follow_redirects=False).headers["location"] == "/docs"
    assert spec["openapi"].startswith("3.1") and spec["info"]["title"] == "offerlift decision API"
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert spec["paths"]["/decide"]["post"]["security"] == [{"bearer": []}]
    response = spec["components"]["schemas"]["decide_response"]["properties"]
    for nullable in ("offer_id", "channel"):
        assert {"type": "null"} in response[nullable]["anyOf"]
    assert "bentoml" not in str(spec["info"]).lower()


BAD_BODIES = [
    ({}, "customer_id"),
    ({"customer_id": 5}, "customer_id"),
    ({"customer_id": ""}, "customer_id"),
    ({"customer_id": f"{SECRET}bad1", "context": {"cty": "x"}}, "cty"),
    ({"customer_id": f"{SECRET}bad2", "context": {"channels": "sms"}}, "channels"),
    ({"customer_id": f"{SECRET}bad3", "context": {"timestamp": "yesterday"}}, "timestamp"),
    ({"customer_id": f"{SECRET}bad4", "context": {"features": {"age": "old"}}}, "age"),
    ({"customer_id": f"{SECRET}bad5", "context": []}, "context"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_malformed_decide_bodies_get_a_4xx_naming_the_field(service, body, field):
    with service.client() as c:
        r = c.post("/decide", json=body)
    assert 400 <= r.status_code < 500 and field in r.text


def test_malformed_outcomes_and_json_get_a_4xx_naming_the_problem(service):
    event = {"customer_id": f"{SECRET}o", "ts": 1.0, "visit": 1, "buy": 0, "redeem": 0, "event_id": "e-bad"}
    with service.client() as c:
        r = c.post("/outcomes", json={"events": [event]})
        assert r.status_code == 400 and "spend" in r.text
        r = c.post("/outcomes", json={"events": [{**event, "spend": -1}]})
        assert r.status_code == 400 and "spend" in r.text
        r = c.post("/decide", content=b'{"customer_id": ', headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "json" in r.text.lower()


def test_new_champion_is_picked_up_without_restart_or_failed_requests(service, registry):
    codes: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with service.client() as c:
            i = 0
            while not stop.is_set():
                r = c.post("/decide", json={"customer_id": f"cust{i % 200:05d}"})
                codes.append(r.status_code)
                if r.status_code == 200:
                    versions.append(r.json()["model_version"])
                i += 1

    old = alias_version(registry.settings)
    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        new = registry.register(tiny_spec(seed=1, lift=-1.0))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and versions[-30:].count(new) < 30:
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(codes) == {200}, f"failed requests during the swap: {sorted(set(codes))}"
    assert versions[0] == old != new and versions[-30:] == [new] * 30  # every worker serves the new champion


def test_serve_entry_point_starts_on_loopback_and_stops_everything_on_sigterm(workdir, registry, tmp_path):
    """`offerlift.serving.cli_serve.serve` (what `offerlift serve` runs): settings via the environment, a clean stop."""
    port = free_port()
    config = service_config(tmp_path, registry, registry={"reload_interval_s": 0}, workers=1)
    code = (
        f"from offerlift.serving.cli_serve import serve; raise SystemExit(serve(port={port}, config={str(config)!r}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"OFFERLIFT_API_KEY": API_KEY, "BENTOML_DO_NOT_TRACK": "true"})
    with open(tmp_path / "serve.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        assert len(family) >= 3  # our process, the arbiter, one worker
        r = httpx.post(f"http://127.0.0.1:{port}/decide", json={"customer_id": "c1"}, headers=AUTH, timeout=30)
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"left running: {alive}"


def test_customer_ids_never_appear_in_the_service_log(service):
    with service.client() as c:  # a request whose validation error would quote the body
        c.post("/decide", json={"customer_id": f"{SECRET}quoted", "context": {"city": 7}})
    deadline = time.monotonic() + 60  # the second worker may still be starting on a busy machine
    while True:
        text = service.log_path.read_text(errors="replace")
        done = "invalid request fields" in text and text.count("TCP_NODELAY True") >= 2
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "invalid request fields" in text  # the errors are logged, without their input
    assert SECRET not in text and "cust000" not in text
    assert text.count("TCP_NODELAY True") == 2  # both workers tuned their listening socket


def test_sigkill_during_a_burst_loses_no_answered_decision(service, decision_log):
    answered: list[str] = []
    stop = threading.Event()

    def burst(k: int) -> None:
        with httpx.Client(base_url=service.url, headers=service.client().headers, timeout=10) as c:
            i = 0
            while not stop.is_set():
                try:
                    r = c.post("/decide", json={"customer_id": f"cust{(k * 37 + i) % 200:05d}"})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    answered.append(r.json()["decision_id"])
                i += 1

    threads = [threading.Thread(target=burst, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(answered) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = service.kill()  # SIGKILL to the arbiter and both workers while requests are in flight
    stop.set()
    for t in threads:
        t.join()
    assert len(killed) >= 3 and not any(p.is_running() for p in killed)  # arbiter and 2 workers, all gone
    assert len(answered) >= 150
    service.start()
    with service.client() as c:
        assert c.post("/decide", json={"customer_id": "cust00007"}).status_code == 200
    rows = decision_log.read()
    missing = set(answered) - {r["decision_id"] for r in rows}
    assert not missing, f"{len(missing)} answered decisions are not in the log"
    budget = decision_log.budget("test")
    assert budget["committed"] == pytest.approx(sum(r["committed_cost"] for r in rows))
    assert budget["committed"] <= BUDGET + 1e-9
