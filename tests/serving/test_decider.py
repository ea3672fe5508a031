"""The in-process decision engine: decisions logged before they return, rules and budget hold, hot swaps are safe."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offerlift.features.errors import ConfigError, ModelError
from offerlift.features.store import OnlineStore
from offerlift.models.registry import alias_version
from offerlift.models.scoring import ArmScorer
from offerlift.serving.cli_serve import command, environment, prepare
from offerlift.serving.decider import Champion, Checkpointer, Decider, expected_cost, hash_id
from offerlift.serving.policy import holdout_unit
from offerlift.serving.rules import Rules, allowed_arms
from offerlift.serving.settings import SETTINGS_ENV, load_settings, settings_from_env
from offerlift.serving.store_columns import merge_columns
from tests.serving.conftest import API_KEY, fill_store, tiny_spec

SPEC = tiny_spec(seed=0, trees=2)


@pytest.fixture(scope="module")
def specs() -> dict[str, dict]:
    """Version "1": coupons pay; version "2": coupons hurt (so it offers nothing)."""
    return {"1": tiny_spec(seed=0), "2": tiny_spec(seed=1, lift=-1.0)}


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "store.db"
    fill_store(path, n=200)
    return path


def make_decider(tmp_path: Path, store_path: Path, specs: dict, current: dict | None = None, **overrides) -> Decider:
    """A Decider on a fresh decision log, loading specs by version from memory."""
    current = current if current is not None else {"v": "1"}
    data = {
        "insecure": True,
        "decision_log_url": f"sqlite:///{tmp_path / 'decisions.db'}",
        "online_store_path": str(store_path),
        "sqlite_synchronous": "NORMAL",
        "campaign": {"name": "t", "budget": 1e6},
        "registry": {"reload_interval_s": 0},
        **overrides,
    }
    settings = load_settings(overrides=data, environ={})
    decider = Decider(settings, loader=lambda v: ArmScorer(specs[v]), version_of_champion=lambda: current["v"])
    decider.load_champion()
    return decider


def test_decision_is_logged_before_it_returns_and_matches_the_response(tmp_path, store_path, specs):
    decider = make_decider(tmp_path, store_path, specs)
    d = decider.decide("cust00001", {"city": "wuhan"})
    rows = {r["decision_id"]: r for r in decider.log.read()}
    row = rows[d.decision_id]
    assert (row["arm"], row["channel"], row["offer_id"], row["grp"]) == (d.arm, d.channel, d.offer_id, d.group)
    assert row["propensity"] == d.propensity and row["model_version"] == "1"
    assert row["committed_cost"] == d.committed_cost
    assert decider.log.budget("t")["committed"] == pytest.approx(d.committed_cost)
    assert d.arm in decider.champion.arm_ids and 0 < d.propensity <= 1
    assert not d.cold_start


def test_explanation_lists_the_best_allowed_arms_first(tmp_path, store_path, specs):
    decider = make_decider(tmp_path, store_path, specs, policy={"holdout": 0.0, "explore": 0.0, "explain_top": 4})
    for i in range(10):
        d = decider.decide(f"cust{i:05d}")
        profits = [e["expected_incremental_profit"] for e in d.explanation]
        assert 1 <= len(d.explanation) <= 4 and profits == sorted(profits, reverse=True)
        if d.group == "exploit" and d.arm != "none":
            assert d.explanation[0]["arm"] == d.arm  # with no price, the greedy arm is the best explained one


def test_unknown_customer_is_cold_started_and_needs_consent_to_be_contacted(tmp_path, store_path, specs):
    decider = make_decider(tmp_path, store_path, specs, policy={"holdout": 0.0, "explore": 0.5})
    blind = [decider.decide(f"new{i}", {"city": "beijing"}) for i in range(20)]
    assert all(d.cold_start and d.arm == "none" for d in blind)  # no consent flag known: no channel at all
    ctx = {"channels": ["push"], "features": {"consent_push": 1, "age": 25}}
    told = [decider.decide(f"new{i}", ctx) for i in range(20, 60)]
    assert {d.channel for d in told} <= {None, "push"} and any(d.channel == "push" for d in told)


def test_an_opt_out_in_the_store_wins_over_the_context(tmp_path, store_path, specs):
    decider = make_decider(tmp_path, store_path, specs, policy={"holdout": 0.0, "explore": 0.9})
    opted_out = [cid for cid in (f"cust{i:05d}" for i in range(200)) if decider.store.get(cid)["consent_sms"] == 0.0]
    assert len(opted_out) >= 10
    ctx = {"channels": ["sms"], "features": {"consent_sms": 1}}
    assert all(decider.decide(cid, ctx).channel is None for cid in opted_out)


def test_only_the_channels_available_are_used(tmp_path, store_path, specs):
    decider = make_decider(tmp_path, store_path, specs, policy={"holdout": 0.0, "explore": 0.5})
    chosen = [decider.decide(f"cust{i:05d}", {"channels": ["email"]}).channel for i in range(40)]
    assert set(chosen) <= {None, "email"} and "email" in chosen


def test_a_triggers_arms_are_the_only_arms_used_and_its_name_is_logged(tmp_path, store_path, specs):
    decider = make_decider(tmp_path, store_path, specs, policy={"holdout": 0.0, "explore": 0.5})
    ctx = {"arms": ["c5@email", "c10@sms", "c99@nowhere"], "trigger": "quick"}
    decisions = [decider.decide(f"cust{i:05d}", ctx) for i in range(40)]
    assert {d.arm for d in decisions} <= {"none", "c5@email", "c10@sms"} and len({d.arm for d in decisions}) == 3
    contexts = [json.loads(r["context"]) for r in decider.log.read()]
    assert all(c["trigger"] == "quick" and c["arms"] == ctx["arms"] for c in contexts)


def test_holdout_customers_always_get_no_offer(tmp_path, store_path, specs):
    decider = make_decider(tmp_path, store_path, specs, policy={"holdout": 0.5, "explore": 0.2, "experiment": "x"})
    ids = [f"cust{i:05d}" for i in range(60)]
    held = holdout_unit(ids, "x") < 0.5
    for cid, h in zip(ids, held, strict=True):
        d = decider.decide(cid)
        assert (d.group == "holdout") == h
        if h:
            assert d.arm == "none" and d.channel is None and d.committed_cost == 0.0


def test_budget_is_never_exceeded_and_matches_the_log(tmp_path, store_path, specs):
    decider = make_decider(tmp_path, store_path, specs, campaign={"name": "small", "budget": 150.0})
    decisions = [decider.decide(f"cust{i % 200:05d}") for i in range(120)]
    budget = decider.log.budget("small")
    rows = decider.log.read()
    assert budget["committed"] <= 150.0 + 1e-9
    assert budget["committed"] == pytest.approx(sum(r["committed_cost"] for r in rows))
    assert any(d.channel for d in decisions) and decisions[-1].channel is None  # spent, then no more offers


def test_contact_cap_per_customer_holds(tmp_path, store_path, specs):
    decider = make_decider(
        tmp_path, store_path, specs, policy={"holdout": 0.0, "explore": 0.5}, rules={"cap_per_customer": 1}
    )
    for cid in ("cust00003", "cust00004", "cust00005"):
        contacts = [decider.decide(cid).channel for _ in range(6)]
        assert sum(c is not None for c in contacts) <= 1


def test_context_time_drives_the_cap_window_when_enabled(tmp_path, store_path, specs):
    decider = make_decider(
        tmp_path,
        store_path,
        specs,
        use_context_time=True,
        policy={"holdout": 0.0, "explore": 0.0},
        rules={"cap_per_customer": 1, "cap_window_hours": 24},
        campaign={"name": "sim", "budget": None},
    )
    cid = next(c for c in (f"cust{i:05d}" for i in range(200)) if decider.decide(c, {"timestamp": 0}).channel)
    assert decider.decide(cid, {"timestamp": 3600}).channel is None  # capped inside the window
    assert decider.decide(cid, {"timestamp": 3600 * 30}).channel is not None  # window over
    assert sorted(r["ts"] for r in decider.log.read() if r["customer_id"] == cid)[-2:] == [3600.0, 108000.0]


def test_hot_swap_during_decisions_fails_no_request(tmp_path, store_path, specs):
    current = {"v": "1"}
    decider = make_decider(tmp_path, store_path, specs, current=current)
    seen: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer(offset: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                seen.append(decider.decide(f"cust{(offset + i) % 200:05d}").model_version)
            except BaseException as exc:
                errors.append(exc)
            i += 1

    threads = [threading.Thread(target=hammer, args=(k * 50,)) for k in range(3)]
    for t in threads:
        t.start()
    while len(seen) < 20:
        stop.wait(0.01)
    old = decider.champion
    current["v"] = "2"
    assert decider.refresh() and not decider.refresh()  # swapped once
    n_at_swap = len(seen)
    while len(seen) < n_at_swap + 20:
        stop.wait(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert set(seen) == {"1", "2"} and seen[-1] == "2"
    assert seen[n_at_swap:].count("1") <= len(threads)  # only requests in flight at the swap finish on "1"
    assert old.scores(old.scorer.features.encode_records([{}]))[0].shape == (1, 21)  # the old one still works


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["sms", "push", "wechat", "email", "fax"]), st.integers(0, 3)),
    st.none() | st.floats(0.0, 60.0),
    st.none() | st.integers(0, 4),
    st.dictionaries(st.sampled_from(["sms", "push", "email"]), st.integers(0, 2)),
)
def test_fast_cap_mask_equals_the_rules_reference(contacts, budget_left, per_customer, per_channel):
    champ = Champion.build(ArmScorer(SPEC), "1", load_settings(overrides={"insecure": True}, environ={}))
    rules = Rules(cap_per_customer=per_customer, cap_per_channel=per_channel, require_consent=False)
    reference = allowed_arms(champ.scorer.catalog, {}, 1, rules, {k: [v] for k, v in contacts.items()}, budget_left)
    np.testing.assert_array_equal(champ.cap_mask(rules, contacts, budget_left), reference)


FLAGS = st.sampled_from([None, float("nan"), 0, 1, 0.0, 1.0, True, False, "yes", ""])
TIERS = ("bronze", "silver", "gold", "platinum")


@st.composite
def customer_attrs(draw: st.DrawFn) -> dict:
    attrs = {}
    for ch in ("sms", "push", "wechat", "email"):
        for prefix in ("consent_", "reach_"):
            if draw(st.booleans()):
                attrs[prefix + ch] = draw(FLAGS)
    for key, values in (
        ("city", ["shanghai", "wuhan", None]),
        ("tier", [*TIERS, "diamond", None]),
        (draw(st.sampled_from(["lifecycle", "lifecycle_stage"])), ["never_bought", "potential", "loyal", None]),
    ):
        if draw(st.booleans()):
            attrs[key] = draw(st.sampled_from(values))
    return attrs


@settings(max_examples=300, deadline=None)
@given(
    customer_attrs(),
    st.booleans(),
    st.sampled_from([(), ("shanghai",)]),
    st.sampled_from([None, "silver"]),
    st.booleans(),
    st.none() | st.lists(st.sampled_from(["sms", "push", "wechat", "email", "fax"]), max_size=3),
)
def test_fast_rule_mask_equals_the_rules_reference(attrs, new_only, cities, min_tier, consent, channels):
    champ = Champion.build(ArmScorer(SPEC), "1", load_settings(overrides={"insecure": True}, environ={}))
    rules = Rules(new_customers_only=new_only, cities=cities, tiers=TIERS, min_tier=min_tier, require_consent=consent)
    columns = {k: [v] for k, v in attrs.items()}
    if "lifecycle" in columns and "lifecycle_stage" not in columns:
        columns["lifecycle_stage"] = columns["lifecycle"]
    reference = allowed_arms(champ.scorer.catalog, columns, 1, rules)
    if channels is not None:
        reference[0, 1:] &= np.array([c in channels for c in champ.channels[1:]])
    np.testing.assert_array_equal(champ.rule_mask(rules, attrs, channels), reference)


SEGMENT_RULES = st.sampled_from(
    [{}, {"lifecycle": ["never_bought", "potential"]}, {"rfm_segment": "at_risk", "price_sensitivity": {"max": 0.5}}]
)
ABUSE_RULES = st.none() | st.fixed_dictionaries(
    {"exclude_at": st.floats(0.5, 1.0), "cap_at": st.floats(0.0, 0.5), "cap_value": st.sampled_from([0.0, 5.0, 10.0])}
)


@settings(max_examples=300, deadline=None)
@given(
    customer_attrs(),
    st.sampled_from([None, "at_risk", "loyal"]),
    st.sampled_from([None, float("nan"), 0.2, 0.7, "x"]),
    st.none() | st.floats(0.0, 1.0),
    SEGMENT_RULES,
    ABUSE_RULES,
)
def test_fast_rule_mask_with_segments_and_abuse_equals_the_rules_reference(attrs, rfm, price, risk, segments, abuse):
    rules = Rules.from_dict({"segments": segments, "abuse": abuse, "require_consent": False})
    champ = Champion.build(ArmScorer(SPEC), "1", load_settings(overrides={"insecure": True}, environ={}))
    attrs = {**attrs, "rfm_segment": rfm, "price_sensitivity": price, "abuse_risk": risk}
    columns = {k: [v] for k, v in attrs.items()}
    np.testing.assert_array_equal(
        champ.rule_mask(rules, attrs, None), allowed_arms(champ.scorer.catalog, columns, 1, rules)
    )


@pytest.fixture(scope="module")
def abuse_decider(tmp_path_factory, specs) -> Decider:
    """Coupons pay for everyone, half the traffic explores; risk excluded at 0.8, capped to 5 at 0.5."""
    tmp = tmp_path_factory.mktemp("abuse")
    frame = fill_store(tmp / "store.db", n=60)
    risky = frame.iloc[:20].assign(abuse_risk=np.linspace(0.8, 1.0, 20))
    OnlineStore(tmp / "store.db").put_frame(risky, as_of=1.0)
    rules = {"abuse": {"exclude_at": 0.8, "cap_at": 0.5, "cap_value": 5.0}, "cap_per_customer": None}
    decider = make_decider(tmp, tmp / "store.db", specs, rules=rules, policy={"holdout": 0.0, "explore": 0.5})
    yield decider
    decider.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.integers(0, 59),
    st.floats(0.8, 1.0),
    st.none() | st.lists(st.sampled_from(["sms", "push", "wechat", "email"]), min_size=1, max_size=4),
    st.sampled_from([None, 0.0, 0.3]),
)
def test_a_customer_above_the_abuse_threshold_never_gets_a_coupon(abuse_decider, i, risk, channels, claimed):
    """Risk from the store (customers 0-19) or the context (the others); a lower risk claimed by the request
    never wins over the store's."""
    cid = f"cust{i:05d}"
    features = {"consent_sms": 1, "consent_push": 1} if claimed is None else {"abuse_risk": claimed}
    if i >= 20:
        features["abuse_risk"] = risk
    d = abuse_decider.decide(cid, {"channels": channels, "features": features})
    assert d.arm == "none" and d.offer_id is None and d.committed_cost == 0.0


def test_risky_customers_get_small_coupons_and_the_others_any(abuse_decider):
    values = {"cap": set(), "low": set()}
    for i in range(20, 60):
        for risk, band in ((0.6, "cap"), (0.1, "low")):
            for _ in range(3):
                values[band].add(abuse_decider.decide(f"cust{i:05d}", {"features": {"abuse_risk": risk}}).coupon_value)
    assert max(values["cap"]) <= 5.0 and max(values["low"]) > 5.0


def test_merged_store_columns_keep_the_features_and_reach_the_decider(tmp_path, specs):
    path = tmp_path / "store.db"
    frame = fill_store(path, n=30)
    extra = pd.DataFrame(
        {"abuse_risk": [0.95, np.nan, 0.1], "tags": [("rfm:loyal",), (), ("a", "b")]},
        index=pd.Index(["cust00000", "cust00001", "brand-new"], name="customer_id"),
    )
    assert merge_columns(path, extra, as_of=5.0) == {"updated": 2, "inserted": 1}
    store = OnlineStore(path)
    row = store.get("cust00000")
    assert row["abuse_risk"] == 0.95 and row["tags"] == ["rfm:loyal"]
    assert row["income"] == frame.loc["cust00000", "income"]  # the features stay
    assert "abuse_risk" not in store.get("cust00001")  # NaN: unknown
    assert store.get("brand-new") == {"abuse_risk": 0.1, "tags": ["a", "b"]}
    decider = make_decider(
        tmp_path, path, specs, rules={"abuse": {"exclude_at": 0.9}}, policy={"holdout": 0.0, "explore": 1.0}
    )
    assert all(decider.decide("cust00000", {"features": {"abuse_risk": 0.0}}).arm == "none" for _ in range(10))
    decider.close()


def test_segment_rules_hold_in_the_live_decider(tmp_path, store_path, specs):
    decider = make_decider(
        tmp_path,
        store_path,
        specs,
        policy={"holdout": 0.0, "explore": 1.0},
        rules={"segments": {"lifecycle": "potential"}},
    )
    outside = [decider.decide(f"cust{i:05d}", {"features": {"lifecycle": "loyal"}}) for i in range(20)]
    unknown = [decider.decide(f"cust{i:05d}") for i in range(20, 40)]  # the store has no lifecycle: not eligible
    inside = [decider.decide(f"cust{i:05d}", {"features": {"lifecycle": "potential"}}) for i in range(40, 80)]
    assert all(d.arm == "none" for d in outside + unknown) and any(d.arm != "none" for d in inside)
    with pytest.raises(ConfigError, match="segments"):
        load_settings(overrides={"insecure": True, "rules": {"segments": ["loyal"]}}, environ={})


def test_background_checkpoints_keep_the_wal_short_and_the_requests_free_of_them(tmp_path, store_path, specs):
    decider = make_decider(tmp_path, store_path, specs)
    with decider.log.engine.connect() as conn:  # SQLite's own checkpoints only as a safety net
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == Checkpointer.SAFETY_PAGES
    checkpointer = Checkpointer(decider._writer, "NORMAL", restart_frames=40)
    for i in range(30):
        decider.decide(f"cust{i:05d}")
    frames, done = checkpointer.step()
    assert frames > 40 and done == frames  # finished under the writer lock
    decider.decide("cust00100")  # the next writer starts the WAL over
    frames, done = checkpointer.step()
    assert frames < 40 and done == frames
    assert len(decider.log.read()) == 31
    checkpointer.stop()


def test_refresh_keeps_the_current_model_when_the_new_one_fails(tmp_path, store_path, specs, caplog):
    current = {"v": "1"}
    decider = make_decider(tmp_path, store_path, specs, current=current)
    current["v"] = "3"  # not loadable
    with caplog.at_level(logging.WARNING):
        assert not decider.refresh()
    assert decider.champion.version == "1" and "keeping the current one" in caplog.text
    assert decider.decide("cust00001").model_version == "1"


def test_logs_hash_customer_ids(tmp_path, store_path, specs, caplog):
    decider = make_decider(tmp_path, store_path, specs)
    with caplog.at_level(logging.DEBUG, logger="offerlift.serving"):
        decider.decide("cust00042")
    assert "cust00042" not in caplog.text and hash_id("cust00042") in caplog.text


def test_expected_cost_follows_redeem_then_buy_then_worst_case(specs):
    scorer = ArmScorer(specs["1"])
    p = np.random.default_rng(0).random((3, 21))
    fixed = scorer.contact_cost[None, :]
    np.testing.assert_allclose(
        expected_cost(scorer, {"spend": p, "redeem": p * 2}), scorer.redeem_cost * np.minimum(p * 2, 1) + fixed
    )
    np.testing.assert_allclose(expected_cost(scorer, {"spend": p, "buy": p}), scorer.redeem_cost * p + fixed)
    worst = np.broadcast_to(scorer.redeem_cost + fixed, p.shape)
    np.testing.assert_allclose(expected_cost(scorer, {"spend": p}), worst)


def test_settings_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"policy\.holdout"):
        load_settings(overrides={"insecure": True, "policy": {"holdout": 1.5}}, environ={})
    with pytest.raises(ConfigError, match="unknown keys.*cap_per_custmer"):
        load_settings(overrides={"insecure": True, "rules": {"cap_per_custmer": 2}}, environ={})
    with pytest.raises(ConfigError, match=r"OFFERLIFT_API_KEY.*--insecure"):
        load_settings(environ={})


def test_settings_travel_to_the_workers_without_the_key():
    over = {"workers": 3, "campaign": {"name": "c9"}}
    settings = load_settings(overrides=over, environ={"OFFERLIFT_API_KEY": API_KEY})
    env = environment(settings, base={})
    assert API_KEY not in env[SETTINGS_ENV] and env["OFFERLIFT_API_KEY"] == API_KEY
    assert '"workers": 3' in env["BENTOML_CONFIG_OVERRIDES"]
    again = settings_from_env(env)
    assert again == settings and again.api_key.get_secret_value() == API_KEY
    assert command(settings)[2:] == ["offerlift.serving.service:OfferLift", "--host", "127.0.0.1", "--port", "3000"]


def test_real_registry_loads_the_champion_and_serve_refuses_without_one(tmp_path, store_path, registry, monkeypatch):
    monkeypatch.delenv("OFFERLIFT_API_KEY", raising=False)
    reg = {"tracking_uri": registry.tracking_uri, "reload_interval_s": 0}
    over = {
        "insecure": True,
        "registry": reg,
        "decision_log_url": f"sqlite:///{tmp_path / 'd.db'}",
        "online_store_path": str(store_path),
    }
    decider = Decider(load_settings(overrides=over, environ={}))
    champion = alias_version(registry.settings)  # "1", or later if another module registered a new champion
    assert decider.load_champion().version == champion and decider.decide("cust00001").model_version == champion
    assert prepare(overrides=over).registry.tracking_uri == registry.tracking_uri
    with pytest.raises(ModelError, match="has the alias 'nope'"):
        prepare(overrides={**over, "registry": {**reg, "alias": "nope"}})
    with pytest.raises(ConfigError, match="OFFERLIFT_API_KEY"):
        prepare(overrides={"registry": reg})


def challenger_decider(tmp_path, store_path, specs, challenger: str | None, share: float = 0.5, **policy):
    data = {
        "insecure": True,
        "use_context_time": True,
        "decision_log_url": f"sqlite:///{tmp_path / 'cc.db'}",
        "online_store_path": str(store_path),
        "campaign": {"name": "t", "budget": None},
        "policy": {"holdout": 0.0, "explore": 0.0, "challenger_share": share, **policy},
        "registry": {"reload_interval_s": 0},
    }
    asked = []

    def version_of_challenger():
        asked.append(1)
        return challenger

    decider = Decider(
        load_settings(overrides=data, environ={}),
        loader=lambda v: ArmScorer(specs[v]),
        version_of_champion=lambda: "1",
        version_of_challenger=version_of_challenger,
    )
    decider.load_champion()
    return decider, asked


def test_the_challenger_decides_for_its_share_and_both_greedy_arms_are_logged(tmp_path, store_path, specs):
    # champion "1" offers coupons, challenger "2" offers nothing (coupons hurt in its model)
    decider, _ = challenger_decider(tmp_path, store_path, specs, "2")
    assert decider.challenger is not None and decider.challenger.version == "2"
    ids = [f"cust{i:05d}" for i in range(200)]
    made = [decider.decide(c, {"timestamp": 10.0 * 3600}) for c in ids]
    rows = pd.DataFrame(decider.log.read()).set_index("decision_id").loc[[d.decision_id for d in made]]
    by_challenger = rows["policy"] == "challenger"
    assert 60 <= by_challenger.sum() <= 140  # half of 200, give or take 4.5 sd
    assert (rows.loc[by_challenger, "model_version"] == "2").all()
    assert (rows.loc[~by_challenger, "model_version"] == "1").all()
    # each model's customers get what that model alone would choose (no exploration, no holdout)
    alone = {}
    for version in ("1", "2"):
        (tmp_path / version).mkdir()
        plain = {"policy": {"holdout": 0.0, "explore": 0.0}, "campaign": {"name": "t", "budget": None}}
        solo = make_decider(tmp_path / version, store_path, specs, current={"v": version}, **plain)
        alone[version] = [solo.decide(c).arm for c in ids]
    expected = np.where(by_challenger.to_numpy(), alone["2"], alone["1"])
    assert rows["arm"].tolist() == expected.tolist()
    assert rows["champion_arm"].tolist() == alone["1"] and rows["challenger_arm"].tolist() == alone["2"]
    assert (rows.loc[by_challenger, "arm"] != "none").mean() < (rows.loc[~by_challenger, "arm"] != "none").mean()
    # the split is stable inside a period and drawn again in the next one
    again = [decider.decide(c, {"timestamp": 20.0 * 3600}).model_version for c in ids]
    assert again == rows["model_version"].tolist()
    later = [decider.decide(c, {"timestamp": 200.0 * 3600}).model_version for c in ids]
    assert later != again


def test_both_greedy_arms_are_logged_for_holdout_customers_too(tmp_path, store_path, specs):
    decider, _ = challenger_decider(tmp_path, store_path, specs, "2", holdout=0.5)
    ids = [f"cust{i:05d}" for i in range(200)]
    made = [decider.decide(c, {"timestamp": 10.0 * 3600}) for c in ids]
    rows = pd.DataFrame(decider.log.read()).set_index("decision_id").loc[[d.decision_id for d in made]]
    alone = {}
    for version in ("1", "2"):
        (tmp_path / version).mkdir()
        plain = {"policy": {"holdout": 0.0, "explore": 0.0}, "campaign": {"name": "t", "budget": None}}
        solo = make_decider(tmp_path / version, store_path, specs, current={"v": version}, **plain)
        alone[version] = [solo.decide(c).arm for c in ids]
    held = (rows["grp"] == "holdout").to_numpy()
    assert 60 <= held.sum() <= 140 and (rows.loc[held, "policy"] == "champion").all()
    assert rows["champion_arm"].tolist() == alone["1"] and rows["challenger_arm"].tolist() == alone["2"]


def test_no_challenger_without_a_share_or_with_the_champions_version(tmp_path, store_path, specs):
    decider, asked = challenger_decider(tmp_path, store_path, specs, "2", share=0.0)
    assert decider.challenger is None and not asked
    d = decider.decide("cust00001")
    row = {r["decision_id"]: r for r in decider.log.read()}[d.decision_id]
    assert row["policy"] == "champion" and row["challenger_arm"] is None and row["champion_arm"] == d.arm
    same, _ = challenger_decider(tmp_path, store_path, specs, "1")
    assert same.challenger is None


def test_an_old_decision_log_gets_the_new_columns(tmp_path):
    import sqlalchemy as sa

    from offerlift.serving.decision_log import DecisionLog, add_missing_columns

    url = f"sqlite:///{tmp_path / 'old.db'}"
    DecisionLog(url).dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the table as an older version wrote it
        for col in ("policy", "champion_arm", "challenger_arm"):
            conn.exec_driver_sql(f"ALTER TABLE decisions DROP COLUMN {col}")
        conn.exec_driver_sql("INSERT INTO decisions (decision_id, ts, customer_id, campaign, arm, coupon_value, "
                             "propensity, group_propensity, grp, model_version, expected_incremental_profit, "
                             "expected_cost, committed_cost) VALUES ('d1', 1, 'c', 't', 'none', 0, 1, 1, 'exploit', "
                             "'1', 0, 0, 0)")  # fmt: skip
    log = DecisionLog(url)
    cols = {c["name"] for c in sa.inspect(log.engine).get_columns("decisions")}
    assert {"policy", "champion_arm", "challenger_arm"} <= cols
    assert add_missing_columns(log.engine) == []
    (row,) = log.read()
    assert row["decision_id"] == "d1" and row["policy"] is None
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_decisions_customer_ts")
        conn.exec_driver_sql("ALTER TABLE decisions DROP COLUMN customer_id")
    with pytest.raises(ConfigError, match="customer_id"):
        DecisionLog(url)
