"""The service's decisions for many customers in one transaction: exactly what `Decider.decide` makes one
customer after the other."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerlift.features.store import OnlineStore
from offerlift.models.scoring import ArmScorer
from offerlift.serving.decide_many import decide_logged
from offerlift.serving.decider import Decider
from offerlift.serving.settings import load_settings
from tests.serving.conftest import customers_frame, tiny_spec

LOGGED_N = 120
HOUR = 3600.0


def logged_decider(tmp_path, store_path, name: str, spec: dict, **overrides) -> Decider:
    """A Decider on its own decision log, with a cap per customer and per channel, deciding at context time."""
    data = {
        "insecure": True,
        "use_context_time": True,
        "decision_log_url": f"sqlite:///{tmp_path / f'{name}.db'}",
        "online_store_path": str(store_path),
        "sqlite_synchronous": "NORMAL",
        "campaign": {"name": "t", "budget": None},
        "pacing": {"enabled": False},
        "policy": {"holdout": 0.1, "explore": 0.3, "experiment": "logged", "explain_top": 0},
        "rules": {"cap_per_customer": 2, "cap_per_channel": {"sms": 1}, "cap_window_hours": 24.0},
        "registry": {"reload_interval_s": 0},
        **overrides,
    }
    decider = Decider(
        load_settings(overrides=data, environ={}), loader=lambda v: ArmScorer(spec), version_of_champion=lambda: "7"
    )
    decider.load_champion()
    return decider


def seeded(decider: Decider, seed: int) -> Decider:
    decider._local.rng = np.random.default_rng(seed)  # the draws of Decider.decide, made reproducible
    return decider


def history(decider: Decider, ids: list[str]) -> None:
    """Earlier decisions (some inside the cap window of the test's decisions, some before it)."""
    seeded(decider, 99)
    for i, cid in enumerate(ids[:60]):
        decider.decide(cid, {"timestamp": (100.0 - (2 if i % 2 else 30)) * HOUR})
        decider.decide(cid, {"timestamp": (100.0 - 1) * HOUR})


@pytest.fixture()
def logged_setup(tmp_path):
    store = tmp_path / "store.db"
    frame = customers_frame(LOGGED_N - 10, seed=0)
    frame["abuse_risk"] = np.random.default_rng(2).random(len(frame))  # the abuse rule excludes and caps some
    OnlineStore(store).put_frame(frame, as_of=0.0)
    ids = [f"cust{i:05d}" for i in range(LOGGED_N)]  # the last 10 are unknown to the store: cold starts
    ids = [ids[i] for i in np.random.default_rng(1).permutation(LOGGED_N)]
    return store, ids, tiny_spec(seed=0, trees=3)


def comparable(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.drop(columns=["decision_id"]).reset_index(drop=True)


@pytest.mark.parametrize(("budget", "arms"), [(None, None), (1e6, None), (None, ("c5@sms", "c10@push", "c3@email"))])
def test_logged_batch_makes_and_logs_exactly_the_decisions_of_decide(tmp_path, logged_setup, budget, arms):
    store, ids, spec = logged_setup
    abuse = {"exclude_at": 0.8, "cap_at": 0.5, "cap_value": 5.0}
    rules = {"cap_per_customer": 2, "cap_per_channel": {"sms": 1}, "cap_window_hours": 24.0, "abuse": abuse}
    one = logged_decider(tmp_path, store, "one", spec, campaign={"name": "t", "budget": budget}, rules=rules)
    many = logged_decider(tmp_path, store, "many", spec, campaign={"name": "t", "budget": budget}, rules=rules)
    history(one, ids)
    history(many, ids)
    ctx = {"timestamp": 100.0 * HOUR, **({"arms": list(arms)} if arms else {})}
    seeded(one, 5)
    made = [one.decide(cid, ctx).decision_id for cid in ids]
    want = pd.DataFrame(one.log.read()).set_index("decision_id").loc[made].reset_index()
    got = decide_logged(many, ids, ctx, u=np.random.default_rng(5).random((len(ids), 2)))
    assert got.one_transaction
    pd.testing.assert_frame_equal(comparable(got.rows), comparable(want[got.rows.columns]))
    logged = pd.DataFrame(many.log.read()).set_index("decision_id").loc[got.rows["decision_id"]].reset_index()
    pd.testing.assert_frame_equal(comparable(logged[got.rows.columns]), comparable(got.rows))
    before = pd.DataFrame(one.log.read())
    recent = before[(before["ts"] > 76.0 * HOUR) & (before["ts"] < 100.0 * HOUR) & before["channel"].notna()]
    counts = recent.groupby("customer_id").size()
    capped = want["customer_id"].isin(counts.index[counts >= 2])  # two contacts inside the window: no offer
    assert capped.sum() >= 5
    assert (want.loc[capped & (want["grp"] != "holdout"), "arm"] == "none").all()
    assert set(want["grp"]) == {"holdout", "explore", "exploit"}
    risky = want["customer_id"].isin(
        [f"cust{i:05d}" for i in np.flatnonzero(many.store.to_frame()["abuse_risk"] >= 0.8)]
    )
    assert risky.sum() > 0 and (want.loc[risky, "arm"] == "none").all()  # excluded by the abuse rule
    if arms:
        assert set(want["arm"]) <= {"none", *arms}
    if budget is not None:
        assert many.log.budget("t")["committed"] == one.log.budget("t")["committed"] > 0


def test_logged_batch_scores_and_rule_masks_are_the_champions(tmp_path, logged_setup):
    store, ids, spec = logged_setup
    d = logged_decider(tmp_path, store, "s", spec)
    got = decide_logged(d, ids[:20], {"timestamp": 5.0 * HOUR})
    attrs = [d.store.get(c) or {} for c in ids[:20]]
    incr, _ = d.champion.scores(d.champion.scorer.features.encode_records(attrs))
    np.testing.assert_array_equal(got.incr, incr)
    want = np.vstack([d.champion.rule_mask(d.rules, a, None) for a in attrs])
    np.testing.assert_array_equal(got.rule_mask, want)


def test_logged_batch_falls_back_to_decide_when_the_budget_could_run_out(tmp_path, logged_setup):
    store, ids, spec = logged_setup
    d = logged_decider(tmp_path, store, "tight", spec, campaign={"name": "t", "budget": 150.0})
    got = decide_logged(d, ids, {"timestamp": 100.0 * HOUR})
    assert not got.one_transaction and len(got.rows) == len(ids)
    assert got.rows["customer_id"].tolist() == ids
    assert d.log.budget("t")["committed"] <= 150.0 + 1e-9
    assert got.rows["committed_cost"].sum() == pytest.approx(d.log.budget("t")["committed"])


def test_logged_batch_with_pacing_goes_one_by_one_and_a_repeated_customer_too(tmp_path, logged_setup):
    store, ids, spec = logged_setup
    paced = logged_decider(tmp_path, store, "paced", spec, campaign={"name": "t", "budget": 1e6}, pacing={})
    assert not decide_logged(paced, ids[:5], {"timestamp": 1.0 * HOUR}).one_transaction
    twice = logged_decider(tmp_path, store, "twice", spec)
    got = decide_logged(twice, [ids[0], ids[0]], {"timestamp": 1.0 * HOUR})
    assert not got.one_transaction and len(got.rows) == 2


def test_logged_batch_with_a_challenger_makes_the_decisions_of_decide(tmp_path, logged_setup):
    store, ids, spec = logged_setup
    specs = {"7": spec, "8": tiny_spec(seed=4, trees=3)}
    policy = {"holdout": 0.1, "explore": 0.3, "experiment": "logged", "explain_top": 0, "challenger_share": 0.5,
              "explore_scheme": "softmax", "temperature": 0.3}  # fmt: skip

    def make(name):
        data = {
            "insecure": True,
            "use_context_time": True,
            "decision_log_url": f"sqlite:///{tmp_path / f'{name}.db'}",
            "online_store_path": str(store),
            "campaign": {"name": "t", "budget": None},
            "pacing": {"enabled": False},
            "policy": policy,
            "rules": {"cap_per_customer": 2, "cap_window_hours": 24.0},
            "registry": {"reload_interval_s": 0},
        }
        d = Decider(load_settings(overrides=data, environ={}), loader=lambda v: ArmScorer(specs[v]),
                    version_of_champion=lambda: "7", version_of_challenger=lambda: "8")  # fmt: skip
        d.load_champion()
        return d

    one, many = make("one"), make("many")
    ctx = {"timestamp": 100.0 * HOUR}
    seeded(one, 5)
    made = [one.decide(cid, ctx).decision_id for cid in ids]
    want = pd.DataFrame(one.log.read()).set_index("decision_id").loc[made].reset_index()
    got = decide_logged(many, ids, ctx, u=np.random.default_rng(5).random((len(ids), 2)))
    assert got.one_transaction and got.challenger_incr is not None
    pd.testing.assert_frame_equal(comparable(got.rows), comparable(want[got.rows.columns]))
    assert set(want["policy"]) == {"champion", "challenger"}
    assert set(want.loc[want["policy"] == "challenger", "model_version"]) == {"8"}
