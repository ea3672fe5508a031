"""Batch decisions: same policy as the service, input order kept, chunked, budgets respected."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from offerlift.features.errors import DataNotFoundError, SchemaError
from offerlift.models.scoring import ArmScorer
from offerlift.serving.batch import draws, input_columns, iter_frames, run_batch
from offerlift.serving.decider import expected_cost
from offerlift.serving.policy import PolicyConfig, decide, holdout_unit
from offerlift.serving.rules import Rules, allowed_arms
from offerlift.simworld.customers import write_customer_file
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
    compiled_mod = pytest.importorskip("offerlift.models.compiled")
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


def test_batch_reads_the_segment_and_abuse_columns_its_rules_name(scorer, tmp_path):
    """A risk at or above exclude_at gets no coupon, one above cap_at only small coupons, and a segment rule
    limits offers to its segment: in batch exactly as in the service's rule mask."""
    frame = customers_frame(600, seed=4)
    rng = np.random.default_rng(4)
    frame["abuse_risk"] = rng.choice([0.0, 0.6, 0.9], len(frame))
    frame["rfm_segment"] = rng.choice(["champions", "lost"], len(frame))
    path = tmp_path / "c.parquet"
    frame.reset_index().to_parquet(path)
    rules = Rules.from_dict(
        {"segments": {"rfm_segment": ["champions"]}, "abuse": {"exclude_at": 0.8, "cap_at": 0.5, "cap_value": 5}}
    )
    assert {"abuse_risk", "rfm_segment"} <= set(input_columns(pq.read_schema(path), scorer, rules))
    out = tmp_path / "d.parquet"
    run_batch(scorer, path, out, policy=PolicyConfig(holdout=0.0, explore=1.0), rules=rules, seed=2, progress=False)
    got = pq.read_table(out).to_pandas().set_index("customer_id").loc[frame.index]
    values = {a.id: a.coupon_value for a in scorer.catalog.arms}
    coupon = got["arm"].map(values).fillna(0).to_numpy()
    offered = got["arm"].to_numpy() != scorer.catalog.control_arm
    assert not offered[(frame["abuse_risk"] >= 0.8).to_numpy()].any()
    assert (coupon[(frame["abuse_risk"] == 0.6).to_numpy()] <= 5).all()
    assert not offered[(frame["rfm_segment"] == "lost").to_numpy()].any()
    ok = ((frame["rfm_segment"] == "champions") & (frame["abuse_risk"] == 0.0)).to_numpy()
    assert offered[ok].mean() > 0.5  # full exploration: the allowed customers do get offers
