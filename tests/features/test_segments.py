"""Segments and tags: RFM against a naive reference, the segment rules, shrunk rates, channel credit, filters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from offerlift.features.errors import ConfigError, SchemaError
from offerlift.features.segments import (
    RFM_SEGMENTS,
    build_segments,
    channel_affinity,
    columns_match,
    compile_where,
    has_tags,
    offer_channels,
    price_sensitivity,
    rfm_scores,
    rfm_segment,
    row_matches,
    segment_report,
    select,
    tag_counts,
)
from offerlift.simworld.world import SimWorld


def ev(rows: list[tuple]) -> pd.DataFrame:
    """Events from (customer, time, event, amount, offer, reward, channel) tuples."""
    cols = ["customer_id", "time", "event", "amount", "offer_id", "reward", "channel"]
    return pd.DataFrame(rows, columns=cols)


def naive_quintile(values: np.ndarray, mask: np.ndarray, bins: int = 5) -> np.ndarray:
    """Reference: a value's score is ceil(bins * (average rank among masked rows) / count)."""
    out = np.zeros(values.size, dtype=int)
    sub = values[mask]
    for i in np.flatnonzero(mask):
        less = (sub < values[i]).sum()
        equal = (sub == values[i]).sum()
        avg_rank = less + (equal + 1) / 2.0
        out[i] = int(np.clip(np.ceil(bins * avg_rank / sub.size), 1, bins))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(1, 200), st.integers(0, 100)), min_size=1, max_size=40))
def test_rfm_scores_match_a_naive_average_rank_reference(rows):
    freq = np.array([r[0] for r in rows], dtype=float)
    feats = pd.DataFrame(
        {
            "recency_hours": np.where(freq > 0, [float(r[1]) for r in rows], np.nan),
            "frequency": freq,
            "monetary": np.where(freq > 0, [float(r[2]) for r in rows], 0.0),
        }
    )
    out = rfm_scores(feats)
    bought = freq > 0
    np.testing.assert_array_equal(out["r_score"], naive_quintile(-feats["recency_hours"].to_numpy(), bought))
    np.testing.assert_array_equal(out["f_score"], naive_quintile(freq, bought))
    np.testing.assert_array_equal(out["m_score"], naive_quintile(feats["monetary"].to_numpy(), bought))
    assert (out.loc[~bought, "rfm_segment"] == "never_bought").all()
    assert (out.loc[bought, "rfm_segment"] != "never_bought").all()


@pytest.mark.parametrize(
    ("r", "f", "m", "segment"),
    [
        (0, 0, 0, "never_bought"),
        (5, 5, 4, "champions"),
        (3, 4, 3, "loyal"),
        (5, 1, 2, "promising"),
        (3, 2, 2, "need_attention"),
        (2, 5, 5, "at_risk"),
        (1, 3, 3, "at_risk"),
        (2, 1, 2, "hibernating"),
        (1, 2, 1, "lost"),
    ],
)
def test_rfm_segment_follows_the_documented_rules(r, f, m, segment):
    assert rfm_segment([r], [f], [m])[0] == segment


def test_rfm_scores_name_a_missing_column():
    with pytest.raises(SchemaError, match="monetary"):
        rfm_scores(pd.DataFrame({"recency_hours": [1.0], "frequency": [1]}))


def test_offer_channels_credit_the_latest_receipt_of_the_same_offer_before_the_event():
    events = ev(
        [
            ("a", 0.0, "offer_received", 0.0, "o1", 0.0, "sms"),
            ("a", 5.0, "offer_received", 0.0, "o1", 0.0, "push"),
            ("a", 6.0, "offer_viewed", 0.0, "o1", 0.0, None),
            ("a", 1.0, "offer_viewed", 0.0, "o1", 0.0, None),
            ("a", 2.0, "offer_viewed", 0.0, "o2", 0.0, None),
            ("b", 7.0, "offer_completed", 0.0, "o1", 3.0, None),
        ]
    )
    out = offer_channels(events).sort_values("time")
    assert out["channel"].tolist() == ["sms", None, "push", None]


def test_price_sensitivity_is_the_shrunk_redemption_rate_with_unknown_without_views():
    events = ev(
        [
            ("a", 1.0, "offer_viewed", 0.0, "o1", 0.0, None),
            ("a", 2.0, "offer_completed", 0.0, "o1", 1.0, None),
            ("a", 3.0, "offer_viewed", 0.0, "o2", 0.0, None),
            ("b", 1.0, "offer_viewed", 0.0, "o1", 0.0, None),
            ("b", 9.0, "offer_completed", 0.0, "o1", 1.0, None),  # after `at`: ignored
        ]
    )
    out = price_sensitivity(events, ["a", "b", "c"], at=5.0, prior_strength=2.0)
    prior = 1 / 3  # one completion in three views
    assert out.loc["a", "price_sensitivity"] == pytest.approx((1 + 2 * prior) / (2 + 2))
    assert out.loc["b", "price_sensitivity"] == pytest.approx((0 + 2 * prior) / (1 + 2))
    assert out.loc["c", "price_sensitivity"] == pytest.approx(prior)
    assert out["price_band"].astype(str).tolist() == ["mid", "low", "unknown"]


def test_channel_affinity_is_zero_without_consent_and_best_channel_is_the_best_usable_one():
    events = ev(
        [
            ("a", 0.0, "offer_received", 0.0, "o1", 0.0, "sms"),
            ("a", 1.0, "offer_viewed", 0.0, "o1", 0.0, None),
            ("a", 0.0, "offer_received", 0.0, "o2", 0.0, "push"),
            ("b", 0.0, "offer_received", 0.0, "o1", 0.0, "push"),
            ("b", 2.0, "offer_viewed", 0.0, "o1", 0.0, None),
            ("b", 0.0, "offer_received", 0.0, "o2", 0.0, "sms"),
        ]
    )
    customers = pd.DataFrame(
        {"customer_id": ["a", "b", "c"], "consent_sms": [True, True, False], "consent_push": [True, False, False]}
    )
    out = channel_affinity(events, customers, ["sms", "push"], prior_strength=2.0)
    p_sms, p_push = 1 / 2, 1 / 2
    assert out.loc["a", "affinity_sms"] == pytest.approx((1 + 2 * p_sms) / (1 + 2))
    assert out.loc["a", "affinity_push"] == pytest.approx((0 + 2 * p_push) / (1 + 2))
    assert out.loc["b", "affinity_push"] == 0.0  # viewed on push, but opted out of push
    assert out["best_channel"].tolist() == ["sms", "sms", "none"]


@pytest.fixture(scope="module")
def world() -> SimWorld:
    return SimWorld.default(3000, seed=3)


@pytest.fixture(scope="module")
def segments(world: SimWorld) -> pd.DataFrame:
    return build_segments(world.history_events(), world.customers, at=0.0, channels=world.catalog)


def test_build_segments_has_every_customer_and_column(world, segments):
    assert segments.index.tolist() == world.customers["customer_id"].tolist()
    for col in ("r_score", "rfm_segment", "lifecycle", "price_sensitivity", "price_band", "best_channel", "tags"):
        assert col in segments.columns
    assert set(segments["rfm_segment"].astype(str)) <= set(RFM_SEGMENTS)
    assert segments[[f"affinity_{c.id}" for c in world.catalog.channels]].to_numpy().min() >= 0.0
    assert all(len(t) == 4 for t in segments["tags"])


def test_build_segments_uses_only_events_before_at(world):
    events = world.history_events()
    before = build_segments(events, world.customers, at=-100.0, channels=world.catalog)
    cut = build_segments(events[events["time"] < -100.0], world.customers, at=-100.0, channels=world.catalog)
    pd.testing.assert_frame_equal(before, cut)


def test_channel_affinity_tracks_the_worlds_hidden_open_rates(world, segments):
    """The estimate is noisy (a few contacts per customer) but must rank customers like the truth does."""
    ok = ~world.hidden.abuser
    for j, ch in enumerate(c.id for c in world.catalog.channels):
        aff = segments[f"affinity_{ch}"].to_numpy()
        usable = ok & (aff > 0)
        rho = spearmanr(aff[usable], world.hidden.open_rate[usable, j]).statistic
        assert rho > 0.1, (ch, rho)


def test_select_combines_membership_bounds_and_tags(segments):
    where = {"rfm_segment": ["champions", "loyal"], "price_sensitivity": {"min": 0.1}, "tags": ["channel:sms"]}
    got = select(segments, where)
    ref = (
        segments["rfm_segment"].isin(["champions", "loyal"]).to_numpy()
        & (segments["price_sensitivity"].to_numpy() >= 0.1)
        & (segments["best_channel"] == "sms").to_numpy()
    )
    np.testing.assert_array_equal(got, ref)
    assert got.any()
    np.testing.assert_array_equal(select(segments, {"price_band": "high"}), segments["price_band"] == "high")
    assert select(segments, None).all()


def test_select_names_an_unknown_column_or_bound(segments):
    with pytest.raises(ConfigError, match="no_such"):
        select(segments, {"no_such": 1})
    with pytest.raises(ConfigError, match="above"):
        select(segments, {"monetary": {"above": 1}})


def test_reports_count_every_customer(segments):
    report = segment_report(segments)
    assert report["customers"].sum() == len(segments)
    assert list(report.index.astype(str)) == list(RFM_SEGMENTS)
    counts = tag_counts(segments)
    assert counts[[t for t in counts.index if t.startswith("rfm:")]].sum() == len(segments)
    assert has_tags(segments["tags"], ["rfm:champions"]).sum() == (segments["rfm_segment"] == "champions").sum()


def test_activity_events_beyond_the_canonical_kinds_are_ignored(world):
    events = world.history_events()
    extra = pd.DataFrame(
        {"customer_id": events["customer_id"].iloc[:50], "time": events["time"].iloc[:50], "event": "app_open"}
    ).assign(amount=0.0, offer_id=None, reward=0.0, channel=None)
    mixed = pd.concat([events, extra], ignore_index=True)
    got = build_segments(mixed, world.customers, at=0.0, channels=world.catalog)
    pd.testing.assert_frame_equal(got, build_segments(events, world.customers, at=0.0, channels=world.catalog))


SEGMENT_VALUES = st.sampled_from([None, float("nan"), "at_risk", "champions", "loyal", 0, 1.5, 3.0, "7"])
TAG_VALUES = st.none() | st.lists(st.sampled_from(["rfm:loyal", "price:high", "channel:push"]), max_size=3).map(tuple)
SPECS = st.dictionaries(
    st.sampled_from(["rfm_segment", "score", "lifecycle_stage", "tags"]),
    st.sampled_from(["at_risk", ["champions", "loyal"], {"min": 1.0}, {"max": 2.0, "min": 0}, [0, "7"]]),
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"rfm_segment": SEGMENT_VALUES, "score": SEGMENT_VALUES, "lifecycle": SEGMENT_VALUES, "tags": TAG_VALUES}
        ),
        min_size=1,
        max_size=8,
    ),
    SPECS,
)
def test_one_customers_segment_match_equals_the_column_match_and_select(rows, spec):
    """The service decides one customer at a time (row_matches), batch jobs on columns: both the same rule."""
    spec = {k: (v if k != "tags" or isinstance(v, str) else ["rfm:loyal"]) for k, v in spec.items()}
    conditions = compile_where(spec)
    frame = pd.DataFrame(rows)
    columns = {c: frame[c].to_numpy(dtype=object) for c in frame.columns}  # lifecycle_stage falls back to lifecycle
    want = np.array([row_matches(r, conditions) for r in rows], dtype=bool)
    np.testing.assert_array_equal(columns_match(columns, len(rows), conditions), want)
    if "lifecycle_stage" not in spec:
        np.testing.assert_array_equal(select(frame, spec), want)
    for r, ok in zip(rows, want, strict=True):  # the reference: every condition by hand
        for col, cond in spec.items():
            v = r["lifecycle"] if col == "lifecycle_stage" else r[col]
            if col == "tags":
                good = v is not None and set([cond] if isinstance(cond, str) else cond) <= set(v)
            elif isinstance(cond, dict):
                x = float(v) if isinstance(v, int | float) or (isinstance(v, str) and v.isdigit()) else np.nan
                good = cond.get("min", -np.inf) <= x <= cond.get("max", np.inf)
            else:
                good = v is not None and v == v and v in ([cond] if isinstance(cond, str) else cond)
            if not good:
                assert not ok
                break
        else:
            assert ok


def test_compile_where_names_bad_bounds():
    with pytest.raises(ConfigError, match="bounds must be numbers"):
        compile_where({"score": {"min": "high"}})
    with pytest.raises(ConfigError, match="unknown bounds"):
        compile_where({"score": {"above": 1}})
