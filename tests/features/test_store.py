"""The online store keeps the latest features per customer, exactly as written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerlift.features.errors import DataError
from offerlift.features.store import OnlineStore, records_equal


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"recency": [1.5, np.nan, 7.0], "city": ["a", None, "c"], "n": [1, 2, 3]},
        index=pd.Index(["c1", "c2", "c3"], name="customer_id"),
    )


def test_round_trip_keeps_values_and_missing(tmp_path):
    store = OnlineStore(tmp_path / "s.db")
    assert store.put_frame(frame(), as_of=5.0) == 3
    assert store.get("c1") == {"recency": 1.5, "city": "a", "n": 1}
    assert store.get("c2") == {"recency": None, "city": None, "n": 2}
    assert store.get("nobody") is None
    assert set(store.get_many(["c1", "c3", "zz"])) == {"c1", "c3"}
    back = store.to_frame()
    pd.testing.assert_series_equal(back["recency"], frame()["recency"], check_names=False)


def test_older_features_never_overwrite_newer(tmp_path):
    store = OnlineStore(tmp_path / "s.db")
    store.put_frame(frame(), as_of=10.0)
    stale = frame().assign(recency=[99.0, 99.0, 99.0])
    store.put_frame(stale, as_of=3.0)
    assert store.get("c1")["recency"] == 1.5
    store.put_frame(stale, as_of=11.0)
    assert store.get("c1")["recency"] == 99.0


def test_duplicate_customers_are_rejected(tmp_path):
    store = OnlineStore(tmp_path / "s.db")
    dup = pd.concat([frame(), frame().iloc[:1]])
    with pytest.raises(DataError, match="c1"):
        store.put_frame(dup, as_of=1.0)


def test_records_equal_tolerates_float_noise_not_differences():
    assert records_equal({"a": 1.0, "b": None}, {"a": 1.0 + 1e-12, "b": float("nan")})
    assert not records_equal({"a": 1.0}, {"a": 1.1})
    assert not records_equal({"a": 1.0}, {"b": 1.0})


def test_store_serves_exactly_what_the_offline_builder_computes(tmp_path):
    """Training features (offline builder at time t) equal the online store's features refreshed at t."""
    from offerlift.features.build import build_features
    from offerlift.features.store import refresh_store
    from offerlift.simworld.world import SimWorld

    world = SimWorld.default(n_customers=400, seed=5)
    events = world.history_events()
    store = OnlineStore(tmp_path / "s.db")
    assert refresh_store(store, events, world.customers, at=0.0) == 400
    ids = world.customers["customer_id"].astype(str).to_numpy()
    offline = build_features(events, world.customers, pd.DataFrame({"unit_id": ids, "customer_id": ids, "time": 0.0}))
    online = store.get_many(ids)
    for cid in ids[:: max(1, len(ids) // 50)]:
        row = offline.loc[cid].to_dict()
        assert records_equal(
            {k: (None if pd.isna(v) else (str(v) if isinstance(v, str) else v)) for k, v in row.items()}, online[cid]
        ), cid


def test_refresh_keeps_columns_the_builder_does_not_make(tmp_path):
    """A refresh replaces the builder's features but keeps merged-in columns such as the abuse risk."""
    from offerlift.features.store import refresh_store
    from offerlift.simworld.world import SimWorld

    world = SimWorld.default(n_customers=200, seed=6)
    events = world.history_events()
    store = OnlineStore(tmp_path / "s.db")
    refresh_store(store, events, world.customers, at=0.0)
    ids = world.customers["customer_id"].astype(str).to_numpy()
    risk = pd.DataFrame({"abuse_risk": np.linspace(0, 1, len(ids))}, index=pd.Index(ids, name="customer_id"))
    store.put_frame(store.to_frame().join(risk), as_of=0.0)
    refresh_store(store, events, world.customers, at=24.0)
    after = store.get_many(ids)
    assert [after[c]["abuse_risk"] for c in ids] == pytest.approx(risk["abuse_risk"].tolist())
    fresh = OnlineStore(tmp_path / "fresh.db")
    refresh_store(fresh, events, world.customers, at=24.0)
    plain = fresh.get_many(ids)
    assert all(records_equal({k: v for k, v in after[c].items() if k != "abuse_risk"}, plain[c]) for c in ids)
    refresh_store(store, events, world.customers, at=48.0, keep_extra=False)
    assert all("abuse_risk" not in store.get(c) for c in ids)
