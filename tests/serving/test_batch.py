"""Batch decisions: same policy as the service, input order kept, chunked, budgets respected."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.errors import DataError, DataNotFoundError, SchemaError
from features.scoring import ArmScorer
from features.store import OnlineStore
from serving.batch import (
    decide_logged,
    draws,
    input_columns,
    iter_frames,
    record_outcomes_bulk,
    run_batch,
    write_customer_file,
)
from serving.decider import Decider, expected_cost
from serving.decision_log import DecisionLog
from serving.policy import PolicyConfig, decide, holdout_unit
from serving.rules import Rules, allowed_arms
from serving.settings import load_settings
from tests.serving.conftest import customers_frame, tiny_spec

N = 1500
POLICY = PolicyConfig(holdout=0.1, explore=0.2, experiment="batch-test")
RULES = Rules(cap_per_customer=2, cap_per_channel={"sms": 1})


@pytest.fixture(scope="module")
def scorer() -> ArmScorer:
    return ArmScorer(tiny_spec(seed=0, trees=3))


@pytest.fixture(scope="module")
def customers(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("batch") / "customers.parquet"
    write_customer_file(path, N, seed=3, block=600)
    return str(path)


def service_decisions(scorer: ArmScorer, frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Reference: one customer at a time, as the service scores (records, no pandas) and decides."""
    rows = []
    u_all = np.random.default_rng(seed).random((len(frame), 2))  # the batch's stream: PCG64(seed) from row 0
    for i, rec in enumerate(frame.to_dict(orient="records")):
        rec = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
        preds = scorer.predict(scorer.features.encode_records([rec]))
        profit = scorer.profit(preds)
        attrs = {k: [v] for k, v in rec.items()}
        attrs["lifecycle_stage"] = attrs["lifecycle"]
        contacts = {k.removeprefix("contacts_"): [v] for k, v in rec.items() if k.startswith("contacts_")}
        mask = allowed_arms(scorer.catalog, attrs, 1, RULES, contacts)
        hu = holdout_unit([rec["customer_id"]], POLICY.experiment)
        d = decide(profit - profit[:, [0]], expected_cost(scorer, preds), mask, hu, u_all[i : i + 1], POLICY)
        rows.append((rec["customer_id"], scorer.arms[d.arm[0]], d.propensity[0], d.group[0], d.incr[0], d.cost[0]))
    cols = ["customer_id", "arm", "propensity", "group", "expected_incremental_profit", "expected_cost"]
    return pd.DataFrame(rows, columns=cols)


def test_batch_decisions_equal_the_service_policy_one_customer_at_a_time(scorer, customers, tmp_path):
    out = tmp_path / "decisions.parquet"
    run_batch(scorer, customers, out, policy=POLICY, rules=RULES, chunk_rows=400, seed=11, progress=False)
    got = pd.read_parquet(out).iloc[:300]
    want = service_decisions(scorer, pd.read_parquet(customers).iloc[:300], seed=11)
    assert got["customer_id"].tolist() == want["customer_id"].tolist()
    assert got["arm"].tolist() == want["arm"].tolist()
    assert got["group"].tolist() == want["group"].tolist()
    for col in ("propensity", "expected_incremental_profit", "expected_cost"):
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=1e-9, atol=1e-12)
    assert set(got["group"]) == {"holdout", "explore", "exploit"}


def test_output_has_one_row_per_input_row_in_input_order(scorer, customers, tmp_path):
    out = tmp_path / "decisions.parquet"
    summary = run_batch(scorer, customers, out, policy=POLICY, chunk_rows=512, progress=False)
    got = pd.read_parquet(out)
    assert got["customer_id"].tolist() == pd.read_parquet(customers, columns=["customer_id"])["customer_id"].tolist()
    assert summary["rows"] == N == sum(summary["arms"].values()) == sum(summary["groups"].values())
    assert not (tmp_path / "decisions.parquet.partial").exists()


def test_decisions_do_not_depend_on_the_chunk_size(scorer, customers, tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    run_batch(scorer, customers, a, policy=POLICY, chunk_rows=N, seed=5, progress=False)
    run_batch(scorer, customers, b, policy=POLICY, chunk_rows=333, seed=5, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))


def test_the_job_works_in_chunks_and_never_scores_the_whole_file_at_once(scorer, customers, tmp_path, monkeypatch):
    seen: list[int] = []
    real = ArmScorer.predict

    def spy(self, X):
        seen.append(X.shape[0])
        return real(self, X)

    monkeypatch.setattr(ArmScorer, "predict", spy)
    summary = run_batch(scorer, customers, tmp_path / "o.parquet", chunk_rows=400, progress=False)
    assert summary["chunks"] == len(seen) == math.ceil(N / 400)
    assert max(seen) == 400 and sum(seen) == N


def test_draws_are_one_stream_whatever_the_chunks():
    whole = draws(9, 0, 100)
    assert np.array_equal(np.vstack([draws(9, 0, 37), draws(9, 37, 63)]), whole)
    assert np.array_equal(whole, np.random.default_rng(9).random((100, 2)))


def test_budget_is_never_exceeded_and_the_plan_is_what_is_spent(scorer, customers, tmp_path):
    free = run_batch(scorer, customers, tmp_path / "free.parquet", policy=POLICY, progress=False)
    budget = 0.3 * free["expected_cost"]
    out = tmp_path / "budget.parquet"
    summary = run_batch(scorer, customers, out, budget=budget, policy=POLICY, chunk_rows=500, progress=False)
    decisions = pd.read_parquet(out)
    spent = decisions["expected_cost"].sum()
    assert spent <= budget
    assert spent == pytest.approx(summary["planned_spend"], rel=1e-9)
    assert spent >= 0.98 * budget  # the fill uses what the price leaves over
    assert summary["price"] > 0
    assert summary["chunks"] == 2 * math.ceil(N / 500)
    assert decisions["expected_incremental_profit"].sum() < free["expected_incremental_profit"]
    free_rows = pd.read_parquet(tmp_path / "free.parquet")
    fixed = decisions["group"] != "exploit"
    assert decisions.loc[fixed, "arm"].tolist() == free_rows.loc[fixed, "arm"].tolist()  # price-free groups


def test_missing_feature_column_and_missing_file_are_named(scorer, customers, tmp_path):
    frame = pd.read_parquet(customers).drop(columns=["monetary"])
    bad = tmp_path / "bad.parquet"
    frame.to_parquet(bad)
    with pytest.raises(SchemaError, match="monetary"):
        run_batch(scorer, bad, tmp_path / "o.parquet", progress=False)
    with pytest.raises(DataNotFoundError, match="nowhere"):
        run_batch(scorer, tmp_path / "nowhere.parquet", tmp_path / "o.parquet", progress=False)


def test_customer_file_has_model_rule_and_contact_columns(scorer, customers):
    schema = pq.ParquetFile(customers).schema_arrow
    cols = input_columns(schema, scorer)
    assert cols[0] == "customer_id"
    assert {"consent_sms", "reach_push", "city", "tier", "lifecycle", "contacts_sms"} <= set(cols)
    assert pq.ParquetFile(customers).metadata.num_row_groups == math.ceil(N / 600)
    starts = [s for s, _ in iter_frames(customers, 700, ["customer_id"])]
    assert starts == [0, 700, 1400]


def test_compiled_trees_give_identical_decisions_and_are_cached(scorer, customers, tmp_path):
    compiled_mod = pytest.importorskip("serving.compiled")
    if not compiled_mod.available():
        pytest.skip("lleaves is not installed")
    cache = tmp_path / "compiled"
    fast = compiled_mod.compile_scorer(scorer, cache)
    objects = sorted(cache.glob("*.o"))
    assert len(objects) == sum(len(o.boosters) for o in scorer.outcomes.values())
    mtimes = [p.stat().st_mtime_ns for p in objects]
    compiled_mod.compile_scorer(scorer, cache)  # loads the cached object files
    assert [p.stat().st_mtime_ns for p in objects] == mtimes
    X = scorer.features.encode(pd.read_parquet(customers).iloc[:500])
    assert compiled_mod.max_difference(scorer, fast, X) < 1e-9
    a, b = tmp_path / "plain.parquet", tmp_path / "fast.parquet"
    run_batch(scorer, customers, a, policy=POLICY, rules=RULES, progress=False)
    run_batch(fast, customers, b, policy=POLICY, rules=RULES, progress=False)
    plain, quick = pd.read_parquet(a), pd.read_parquet(b)
    assert plain["arm"].tolist() == quick["arm"].tolist()
    np.testing.assert_allclose(plain["expected_cost"], quick["expected_cost"], rtol=1e-9)


# --- decide_logged: the service's decisions for many customers in one transaction -------------------------------

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


def test_bulk_outcomes_store_what_add_outcomes_stores_once(tmp_path):
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
    one, bulk = DecisionLog(f"sqlite:///{tmp_path / 'a.db'}"), DecisionLog(f"sqlite:///{tmp_path / 'b.db'}")
    assert one.add_outcomes(events[:40]) == record_outcomes_bulk(bulk, events[:40], chunk=7) == 40
    assert one.add_outcomes(events) == record_outcomes_bulk(bulk, events, chunk=7) == 30
    assert record_outcomes_bulk(bulk, events) == 0

    def stored(log):
        return pd.DataFrame(log.read("outcomes")).drop(columns="received_ts").sort_values("event_id")

    pd.testing.assert_frame_equal(stored(one).reset_index(drop=True), stored(bulk).reset_index(drop=True))
    with pytest.raises(DataError, match="spend"):
        record_outcomes_bulk(bulk, [{k: v for k, v in events[0].items() if k != "spend"}])
