"""Real-time triggers: timers against a naive reference, cancel/restart/cooldown/caps, consent, adapters, replay,
the pure-policy decider and the service's Decider."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offerlift.features.errors import ConfigError, DataError, SchemaError
from offerlift.models.scoring import ArmScorer
from offerlift.serving.decider import Decider
from offerlift.serving.rules import Rules
from offerlift.serving.settings import load_settings
from offerlift.serving.triggers import (
    ACTIVE_NO_ORDER,
    NEW_NO_FIRST_ORDER,
    FileAdapter,
    Message,
    PolicyDecider,
    RoutingAdapter,
    SendResult,
    SqliteState,
    TriggerDecision,
    TriggerEngine,
    TriggerRule,
    constant_scores,
    load_trigger_rules,
    replay,
    signup_events,
)
from offerlift.simworld.config import load_world_spec
from tests.serving.conftest import fill_store, tiny_spec

CATALOG = load_world_spec()[0]
MIN = 1 / 60


class Outbox:
    """A channel adapter that keeps what it sends."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, message: Message) -> SendResult:
        self.messages.append(message)
        return SendResult("sent")


def always(arm: str = "c5@push"):
    """A decision function that always answers `arm` and records its calls."""
    calls = []

    def decide(customer_id, context):
        calls.append((customer_id, dict(context)))
        a = CATALOG.arm(arm)
        return {"arm": arm, "channel": a.channel and a.channel.id, "offer_id": a.offer and a.offer.id}

    decide.calls = calls
    return decide


def stream(rows: list[tuple[str, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "time", "event"])


def test_active_without_an_order_fires_five_minutes_later_and_an_order_cancels():
    outbox = Outbox()
    engine = TriggerEngine([ACTIVE_NO_ORDER], always(), outbox)
    events = stream(
        [
            ("a", 0.0, "app_open"),
            ("b", 0.0, "app_open"),
            ("b", 3 * MIN, "transaction"),
            ("c", 0.0, "app_open"),
            ("c", 5 * MIN, "transaction"),  # an order exactly at the deadline is in time
            ("d", 1.0, "app_open"),
        ]
    )
    fired = replay(events, engine, until=2.0)
    assert fired[["customer_id", "status"]].values.tolist() == [["a", "sent"], ["d", "sent"]]
    assert fired["time"].tolist() == pytest.approx([5 * MIN, 1.0 + 5 * MIN])
    assert [m.customer_id for m in outbox.messages] == ["a", "d"] and outbox.messages[0].channel == "push"
    assert engine.pending == 0


@pytest.mark.parametrize(("restart", "due"), [(False, 5 * MIN), (True, 7 * MIN)])
def test_a_second_start_restarts_the_wait_only_when_asked(restart, due):
    rule = TriggerRule("r", start=("app_open",), wait_hours=5 * MIN, restart=restart)
    engine = TriggerEngine([rule], always())
    fired = replay(stream([("a", 0.0, "app_open"), ("a", 2 * MIN, "app_open")]), engine, until=1.0)
    assert fired["time"].tolist() == pytest.approx([due])


def test_new_customer_without_a_first_order_fires_after_three_days_once():
    engine = TriggerEngine([NEW_NO_FIRST_ORDER], always("c10@sms"))
    engine.prime(stream([("old", -500.0, "transaction")]))
    customers = pd.DataFrame({"customer_id": ["new", "buyer", "old", "late"], "signup_time": [0.0, 1.0, 2.0, 500.0]})
    events = pd.concat([signup_events(customers, 0.0, 100.0), stream([("buyer", 48.0, "transaction")])])
    fired = replay(events, engine, until=200.0)
    assert fired[["customer_id", "status", "arm"]].values.tolist() == [["new", "sent", "c10@sms"]]
    assert fired["time"].tolist() == [72.0]


def test_cooldown_and_the_contact_cap_stop_repeated_messages():
    rules = [
        TriggerRule("r1", start=("app_open",), wait_hours=5 * MIN, cooldown_hours=24.0),
        TriggerRule("r2", start=("app_open",), wait_hours=10 * MIN, cooldown_hours=0.0),
    ]
    outbox = Outbox()
    engine = TriggerEngine(rules, always(), outbox, cap_per_customer=2, cap_window_hours=24.0)
    fired = replay(stream([("a", 0.0, "app_open"), ("a", 2.0, "app_open"), ("a", 30.0, "app_open")]), engine, 40.0)
    assert fired[["trigger", "status"]].values.tolist() == [
        ["r1", "sent"],
        ["r2", "sent"],
        ["r1", "cooldown"],
        ["r2", "capped"],
        ["r1", "sent"],  # 30 h later: the cooldown and the cap window have passed
        ["r2", "sent"],
    ]
    assert len(outbox.messages) == 4


def test_consent_and_the_rules_channels_hold_whatever_the_decision_says():
    customers = pd.DataFrame({"customer_id": ["a", "b"], "consent_sms": [False, True], "consent_push": [True, True]})
    outbox = Outbox()
    sms_rule = TriggerRule("sms", start=("app_open",), wait_hours=0.1, channels=("sms",))
    engine = TriggerEngine([sms_rule], always("c5@sms"), outbox, customers=customers)
    fired = replay(stream([("a", 0.0, "app_open"), ("b", 0.0, "app_open")]), engine, 1.0)
    assert fired["status"].tolist() == ["blocked_consent", "sent"]
    assert [m.customer_id for m in outbox.messages] == ["b"]
    engine = TriggerEngine([sms_rule], always("c5@push"), outbox, customers=customers)
    assert replay(stream([("b", 0.0, "app_open")]), engine, 1.0)["status"].tolist() == ["blocked_channel"]
    engine = TriggerEngine([sms_rule], always("none"), outbox)
    assert replay(stream([("b", 0.0, "app_open")]), engine, 1.0)["status"].tolist() == ["no_offer"]


def test_the_decision_gets_the_rules_context():
    decide = always()
    rule = TriggerRule("r", start=("app_open",), wait_hours=0.5, channels=("push",), arms=("c5@push",))
    engine = TriggerEngine([rule], decide)
    engine.on_event({"customer_id": "a", "time": 10.0, "event": "app_open"})
    engine.advance(11.0)
    (cid, ctx), *_ = decide.calls
    assert cid == "a" and ctx["time"] == 10.5 and ctx["timestamp"] == 10.5 * 3600
    assert ctx["channels"] == ["push"] and ctx["arms"] == ["c5@push"] and ctx["trigger"] == "r"


def naive_firings(events: pd.DataFrame, wait: float) -> list[tuple[str, float]]:
    """Reference for a rule without restart, cooldown or caps: walk each customer's events in order."""
    out = []
    for cid, e in events.sort_values("time", kind="stable").groupby("customer_id", sort=False):
        armed = None
        for t, kind in zip(e["time"], e["event"], strict=True):
            if armed is not None and armed + wait < t:
                out.append((cid, armed + wait))
                armed = None
            if kind == "transaction":
                armed = None
            elif kind == "app_open" and armed is None:
                armed = t
        if armed is not None:
            out.append((cid, armed + wait))
    return sorted(out, key=lambda x: (x[1], x[0]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 40), st.sampled_from(["app_open", "transaction", "view"])),
        max_size=40,
    )
)
def test_engine_matches_a_naive_reference_on_random_streams(rows):
    events = stream([(c, t / 4.0, k) for c, t, k in rows])
    rule = TriggerRule("r", start=("app_open",), wait_hours=1.0, cooldown_hours=0.0)
    engine = TriggerEngine([rule], always(), cap_per_customer=None)
    fired = replay(events, engine, until=100.0)
    got = sorted(zip(fired["customer_id"], fired["time"], strict=True), key=lambda x: (x[1], x[0]))
    assert got == naive_firings(events, 1.0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 40), st.sampled_from(["app_open", "transaction", "view"])),
        max_size=30,
    ),
    st.integers(1, 4),
)
def test_sqlite_state_fed_in_batches_matches_the_naive_reference(tmp_path_factory, rows, batches):
    """The service's path: a SQLite state shared by two engines (two workers), batches alternating between them."""
    events = stream([(c, t / 4.0, k) for c, t, k in rows]).sort_values("time", kind="stable")
    rule = TriggerRule("r", start=("app_open",), wait_hours=1.0, cooldown_hours=0.0)
    path = tmp_path_factory.mktemp("state") / "triggers.db"
    engines = [TriggerEngine([rule], always(), cap_per_customer=None, state=SqliteState(path)) for _ in range(2)]
    fired = []
    for k, chunk in enumerate(np.array_split(np.arange(len(events)), batches)):
        fired += engines[k % 2].feed(events.iloc[chunk].to_dict("records")).firings
    fired += engines[1].advance(100.0)
    got = sorted(((f.customer_id, f.time) for f in fired), key=lambda x: (x[1], x[0]))
    assert got == naive_firings(events, 1.0)
    assert engines[0].pending == 0 and engines[0].now == 100.0


class BrokenAdapter:
    def send(self, message: Message) -> SendResult:
        raise OSError("gateway down")


def test_sqlite_state_survives_a_restart_and_a_failed_batch_changes_nothing(tmp_path):
    path = tmp_path / "triggers.db"
    engine = TriggerEngine([ACTIVE_NO_ORDER], always(), state=SqliteState(path))
    engine.feed([{"customer_id": "a", "time": 1.0, "event": "app_open"}])
    engine.state.close()
    engine = TriggerEngine([ACTIVE_NO_ORDER], always(), BrokenAdapter(), state=SqliteState(path))
    assert engine.pending == 1 and engine.now == 1.0
    batch = [{"customer_id": "b", "time": 1.05, "event": "app_open"}, {"customer_id": "c", "time": 2.0, "event": "x"}]
    with pytest.raises(OSError, match="gateway"):  # b arms, a's timer fires and the send blows up: all rolled back
        engine.feed(batch)
    with pytest.raises(DataError, match="time order"):
        engine.feed([{"customer_id": "c", "time": 0.5, "event": "app_open"}])
    with pytest.raises(SchemaError):
        engine.feed([{"customer_id": "c", "time": 2.0}])
    assert engine.pending == 1 and engine.now == 1.0
    outbox = Outbox()
    engine = TriggerEngine([ACTIVE_NO_ORDER], always(), outbox, state=SqliteState(path))
    assert [f.customer_id for f in engine.feed(batch).firings] == ["a", "b"] and len(outbox.messages) == 2
    assert engine.pending == 0


def test_late_events_are_applied_without_moving_the_clock_when_asked():
    engine = TriggerEngine([ACTIVE_NO_ORDER], always(), cap_per_customer=None)
    engine.feed([{"customer_id": c, "time": 0.0, "event": "app_open"} for c in "ab"])
    engine.feed([{"customer_id": "z", "time": 4 * MIN, "event": "view"}])
    late = engine.feed([{"customer_id": "a", "time": 1 * MIN, "event": "transaction"}], late="apply")
    assert (late.accepted, late.late, late.firings) == (1, 1, []) and engine.now == 4 * MIN
    assert [f.customer_id for f in engine.advance(1.0)] == ["b"]  # a's late order still cancelled its timer


def test_known_buyers_are_not_new_customers():
    engine = TriggerEngine([NEW_NO_FIRST_ORDER], always(), has_bought=lambda cid: cid == "old")
    engine.feed([{"customer_id": c, "time": 0.0, "event": "signup"} for c in ("old", "new")])
    assert [f.customer_id for f in engine.advance(100.0)] == ["new"]


def test_a_failed_decision_is_a_failed_firing_and_the_others_go_on():
    def flaky(cid, context):
        if cid == "a":
            raise RuntimeError("registry down")
        return always()(cid, context)

    engine = TriggerEngine([ACTIVE_NO_ORDER], flaky)
    fired = replay(stream([("a", 0.0, "app_open"), ("b", 0.0, "app_open")]), engine, until=1.0)
    assert fired["status"].tolist() == ["failed", "sent"] and "registry down" in fired["detail"].iloc[0]


def test_replay_reads_event_files_and_rejects_disorder(tmp_path):
    events = stream([("a", 0.0, "app_open"), ("b", 0.5, "app_open")])
    for suffix, write in ((".csv", events.to_csv), (".parquet", events.to_parquet)):
        path = tmp_path / f"events{suffix}"
        write(path, index=False)
        assert len(replay(path, TriggerEngine([ACTIVE_NO_ORDER], always()), until=1.0)) == 2
    path = tmp_path / "events.jsonl"
    events.to_json(path, orient="records", lines=True)
    assert len(replay(path, TriggerEngine([ACTIVE_NO_ORDER], always()))) == 1  # b's timer is due after the end
    assert len(replay(path, TriggerEngine([ACTIVE_NO_ORDER], always()), until=1.0)) == 2
    with pytest.raises(DataError, match="does not exist"):
        replay(tmp_path / "missing.csv", TriggerEngine([ACTIVE_NO_ORDER], always()))
    engine = TriggerEngine([ACTIVE_NO_ORDER], always())
    engine.on_event({"customer_id": "a", "time": 5.0, "event": "app_open"})
    with pytest.raises(DataError, match="time order"):
        engine.on_event({"customer_id": "a", "time": 4.0, "event": "app_open"})
    with pytest.raises(SchemaError):
        engine.on_event({"customer_id": "a", "event": "app_open"})


def test_file_adapter_writes_one_json_line_per_message_and_routing_picks_the_channel(tmp_path):
    sms, default = FileAdapter(tmp_path / "sms.jsonl"), FileAdapter(tmp_path / "other.jsonl")
    router = RoutingAdapter({"sms": sms}, default)
    router.send(Message("a", "sms", "c5@sms", "c5", "d1", "r", 1.0))
    router.send(Message("b", "push", "c5@push", "c5", "d2", "r", 2.0))
    assert [json.loads(x)["customer_id"] for x in (tmp_path / "sms.jsonl").read_text().splitlines()] == ["a"]
    assert json.loads((tmp_path / "other.jsonl").read_text())["channel"] == "push"


def test_rules_from_yaml(tmp_path):
    path = tmp_path / "triggers.yaml"
    path.write_text("triggers:\n  - {name: quick, start: app_open, wait_minutes: 5, channels: [push]}\n")
    (rule,) = load_trigger_rules(path)
    assert rule.start == ("app_open",) and rule.wait_hours == pytest.approx(5 * MIN) and rule.channels == ("push",)
    path.write_text("triggers:\n  - {name: quick, start: app_open, wait: 5}\n")
    with pytest.raises(ConfigError, match="wait"):
        load_trigger_rules(path)
    with pytest.raises(ConfigError, match="unique"):
        TriggerEngine([ACTIVE_NO_ORDER, ACTIVE_NO_ORDER], always())


def policy_customers() -> pd.DataFrame:
    frame = pd.DataFrame(index=pd.Index(["a", "b"], name="customer_id"))
    for ch in ("sms", "push", "wechat", "email"):
        frame[f"consent_{ch}"] = [ch != "push", True]
        frame[f"reach_{ch}"] = True
    return frame


def test_policy_decider_takes_the_best_allowed_arm_under_consent_arms_and_caps():
    scores = constant_scores(CATALOG, {"c10@push": 3.0, "c5@push": 2.0, "c5@sms": 1.0})
    decider = PolicyDecider(CATALOG, policy_customers(), scores, Rules(cap_per_channel={"sms": 1}))
    assert decider("b", {}).arm == "c10@push"
    assert decider("a", {}).arm == "c5@sms"  # no consent for push
    assert decider("b", {"arms": ["c5@push", "c5@sms"]}).arm == "c5@push"
    assert decider("b", {"channels": ["sms"]}).arm == "c5@sms"
    assert decider("a", {"contacts": {"sms": 1}}).arm == "none"  # the sms cap is used up
    assert decider("stranger", {}).arm == "none"
    masked = PolicyDecider(CATALOG, policy_customers(), scores, extra_mask=lambda ids: np.arange(21)[None, :] == 0)
    assert masked("b", {}) == TriggerDecision("none", None, None, "pd-00000001")
    many = decider.decide_many(["a", "b", "stranger"], {"channel": "sms"})
    assert many["arm"].tolist() == ["c5@sms", "c5@sms", "none"]
    assert many["cost"].tolist() == pytest.approx([5.05, 5.05, 0.0])
    with pytest.raises(ConfigError, match="c99"):
        constant_scores(CATALOG, {"c99@sms": 1.0})


def test_triggers_through_the_services_decider(tmp_path):
    """The Decider logs each decision before the trigger sends it; its store's opt-outs hold."""
    store = tmp_path / "store.db"
    customers = fill_store(store, n=20)
    settings = load_settings(
        overrides={
            "insecure": True,
            "decision_log_url": f"sqlite:///{tmp_path / 'decisions.db'}",
            "online_store_path": str(store),
            "use_context_time": True,
            "campaign": {"name": "t", "budget": 1e6},
            "policy": {"holdout": 0.0, "explore": 0.0},
            "registry": {"reload_interval_s": 0},
        },
        environ={},
    )
    decider = Decider(settings, loader=lambda v: ArmScorer(tiny_spec(seed=0, trees=2)), version_of_champion=lambda: "1")
    decider.load_champion()
    outbox = Outbox()
    rule = TriggerRule("quick", start=("app_open",), wait_hours=5 * MIN, channels=("sms", "email"))
    engine = TriggerEngine([rule], decider.decide, outbox, customers=customers.reset_index())
    ids = customers.index[:10].tolist()
    fired = replay(stream([(c, 0.0, "app_open") for c in ids]), engine, until=1.0)
    logged = {r["decision_id"]: r for r in decider.log.read()}
    assert len(logged) == 10
    for f in fired.itertuples():
        assert f.decision_id in logged and logged[f.decision_id]["arm"] == f.arm
    for m in outbox.messages:
        assert m.channel in ("sms", "email") and customers.loc[m.customer_id, f"consent_{m.channel}"] == 1.0
    decider.close()
