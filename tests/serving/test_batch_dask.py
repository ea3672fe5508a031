"""The batch job on dask.distributed equals the single-machine job, with and without a budget."""

from __future__ import annotations

import pandas as pd
import pytest

from offerlift.models.scoring import ArmScorer
from offerlift.serving.batch import run_batch
from offerlift.serving.batch_dask import partitions, run_batch_dask
from offerlift.serving.policy import PolicyConfig
from offerlift.serving.rules import Rules
from offerlift.simworld.customers import write_customer_file
from tests.serving.conftest import tiny_spec

pytest.importorskip("distributed")

N = 1200
POLICY = PolicyConfig(holdout=0.1, explore=0.15, experiment="dask-test")
RULES = Rules(cap_per_customer=2)


@pytest.fixture(scope="module")
def scorer() -> ArmScorer:
    return ArmScorer(tiny_spec(seed=1, trees=3))


@pytest.fixture(scope="module")
def customers(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("dask") / "customers.parquet"
    write_customer_file(path, N, seed=4, block=300)
    return str(path)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0")
    with cluster, Client(cluster) as c:
        yield c


def read_parts(folder) -> pd.DataFrame:
    files = sorted(folder.glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def test_partitions_follow_row_groups_and_cover_the_file(customers):
    parts = partitions(customers, 500)
    assert [p.row_groups for p in parts] == [(0, 1), (2, 3)]
    assert [p.start for p in parts] == [0, 600]
    assert sum(p.rows for p in parts) == N


@pytest.mark.parametrize("budget_share", [None, 0.3])
def test_dask_result_equals_the_single_machine_result(scorer, customers, client, tmp_path, budget_share):
    single = tmp_path / "single.parquet"
    free = run_batch(scorer, customers, single, policy=POLICY, rules=RULES, chunk_rows=250, seed=2, progress=False)
    budget = None if budget_share is None else budget_share * free["expected_cost"]
    if budget is not None:
        free = run_batch(scorer, customers, single, budget, POLICY, RULES, chunk_rows=250, seed=2, progress=False)
    out = tmp_path / "parts"
    summary = run_batch_dask(
        scorer, customers, out, budget, POLICY, RULES, chunk_rows=250, seed=2, client=client, partition_rows=300
    )
    pd.testing.assert_frame_equal(read_parts(out), pd.read_parquet(single))
    assert summary["partitions"] == 4 and summary["rows"] == N
    assert summary["expected_cost"] == pytest.approx(free["expected_cost"], rel=1e-12)
    if budget is not None:
        assert summary["price"] == free["price"]
        assert summary["expected_cost"] <= budget


def test_embedded_local_cluster_is_started_and_closed(scorer, customers, tmp_path):
    summary = run_batch_dask(scorer, customers, tmp_path / "parts", processes=False, n_workers=1, partition_rows=600)
    assert summary["workers"] == 1 and summary["rows"] == N
    assert len(list((tmp_path / "parts").glob("part-*.parquet"))) == 2
