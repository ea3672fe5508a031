"""Uplift metrics against loop-based references, against sklift 0.5.1 numbers, and on known cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from offerlift.features.errors import ConfigError, DataError
from offerlift.training.metrics import (
    perfect_qini_curve,
    perfect_uplift_curve,
    qini_auc_score,
    qini_curve,
    qini_curve_band,
    uplift_at_k,
    uplift_auc_score,
    uplift_by_decile,
    uplift_calibration,
    uplift_curve,
)

# Fixed cases. Expected numbers were produced by scikit-uplift 0.5.1 (sklift.metrics, with scikit-learn
# 1.9.1 and numpy 2.4.6) in a throwaway venv: qini_auc_score, qini_auc_score(negative_effect=False),
# uplift_auc_score, uplift_at_k, qini_curve, uplift_curve, perfect_*_curve, uplift_by_percentile(bins=4).
Y_A = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1]
U_A = [0.5, 0.5, 0.2, 0.9, -0.1, 0.2, 0.2, 0.9, 0.0, 0.3, 0.5, -0.4]
T_A = [1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 0]
# fmt: off
Y_D = [0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1, 0,
       0, 0, 0, 0, 0, 0, 1, 0, 1, 0]
U_D = [0.0, 1.5, 0.5, -0.5, -0.2, 0.5, 1.9, -0.3, -0.2, 1.0, -0.9, -0.3, 0.9, 0.6, 0.1, 0.7, -2.8, 1.0,
       -1.0, -1.7, 0.3, 0.7, -0.4, -1.1, 0.0, -0.1, 1.4, 0.7, 0.2, 1.1, -0.2, -0.9, 0.6, 0.6, -0.2, -0.8,
       0.2, -2.5, 0.7, 0.5]
T_D = [1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1,
       1, 0, 0, 1, 1, 1, 1, 0]
# fmt: on
SKLIFT = {
    "A": {
        "qini": 0.3192307692307691,
        "qini_no_negative": 0.8299999999999997,
        "uplift_auc": 0.398,
        "at_k": {
            ("overall", 0.3): 0.5,
            ("overall", 5): 0.6666666666666666,
            ("by_group", 0.3): 1.0,
            ("by_group", 5): 0.39999999999999997,
        },
        "qini_curve": ([0, 2, 5, 6, 9, 10, 11, 12], [0.0, 1.0, 2.0, 2.0, 1.75, 2.5, 2.8, 2.0]),
        "uplift_curve": (
            [0, 2, 5, 6, 9, 10, 11, 12],
            [0.0, 2.0, 3.333333333333333, 4.0, 3.15, 4.166666666666666, 5.133333333333333, 4.0],
        ),
        "perfect_qini": ([0, 4, 10, 12], [0.0, 4.0, 4.0, 2.0]),
        "perfect_uplift": ([0, 4, 8, 10, 12], [0.0, 4.0, 8.0, 6.666666666666666, 4.0]),
        "by_4": [[2, 1, 0.5, 0.0, 0.5], [1, 2, 1.0, 0.0, 1.0], [2, 1, 0.5, 1.0, -0.5], [1, 2, 1.0, 0.5, 0.5]],
    },
    "D": {
        "qini": 0.24555797266349821,
        "uplift_auc": 0.19698465935431178,
        "at_k": {
            ("overall", 0.3): 0.3714285714285714,
            ("overall", 5): 0.75,
            ("by_group", 0.3): 0.26666666666666666,
            ("by_group", 5): 0.39999999999999997,
        },
        "perfect_qini": ([0, 6, 33, 40], [0.0, 6.0, 6.0, -0.33333333333333304]),
        "perfect_uplift": ([0, 6, 20, 33, 40], [0.0, 6.0, 20.0, 10.421052631578947, -0.7017543859649122]),
        "by_4_uplift": [0.571429, -0.238095, -0.285714, -0.083333],
        "by_4_se": [0.187044, 0.330242, 0.170747, 0.264619],
    },
}
CASES = {"A": (Y_A, U_A, T_A), "D": (Y_D, U_D, T_D)}


# ---------------------------------------------------------------- loop references
def ref_curves(y, u, t):
    """Qini and uplift curves by brute force: one point per distinct score, all units at or above it."""
    xs, qini, upl = [0], [0.0], [0.0]
    for s in sorted(set(u), reverse=True):
        sel = [i for i in range(len(u)) if u[i] >= s]
        n_t = sum(1 for i in sel if t[i] == 1)
        n_c = len(sel) - n_t
        y_t = sum(y[i] for i in sel if t[i] == 1)
        y_c = sum(y[i] for i in sel if t[i] == 0)
        xs.append(len(sel))
        qini.append(y_t - (y_c * n_t / n_c if n_c else 0.0))
        upl.append(((y_t / n_t if n_t else 0.0) - (y_c / n_c if n_c else 0.0)) * len(sel))
    return xs, qini, upl


def ref_area(xs, vs):
    return sum((xs[i + 1] - xs[i]) * (vs[i] + vs[i + 1]) / 2 for i in range(len(xs) - 1))


def ref_normalised(xs, vs, pxs, pvs):
    base = pxs[-1] * pvs[-1] / 2
    best = ref_area(pxs, pvs) - base
    return (ref_area(xs, vs) - base) / best if best else float("nan")


def ref_scores(y, u, t):
    """(qini AUC, uplift AUC) from the brute-force curves and the perfect rankings written out by hand."""
    xs, q, up = ref_curves(y, u, t)
    qini_perfect = [
        1 if (yi == 1 and ti == 1) else -1 if (yi == 1 and ti == 0) else 0 for yi, ti in zip(y, t, strict=True)
    ]
    pxs, pq, _ = ref_curves(y, qini_perfect, t)
    control_resp = sum(1 for yi, ti in zip(y, t, strict=True) if yi == 1 and ti == 0)
    treated_nonresp = sum(1 for yi, ti in zip(y, t, strict=True) if yi == 0 and ti == 1)
    extra = y if control_resp > treated_nonresp else t
    upl_perfect = [2 * (yi == ti) + e for yi, ti, e in zip(y, t, extra, strict=True)]
    uxs, _, pu = ref_curves(y, upl_perfect, t)
    return ref_normalised(xs, q, pxs, pq), ref_normalised(xs, up, uxs, pu)


def ref_uplift_at_k(y, u, t, k, strategy):
    ranked = sorted(range(len(u)), key=lambda i: (-u[i], -i))  # ties: later unit first

    def mean(vals):
        return sum(vals) / len(vals) if vals else float("nan")

    if strategy == "overall":
        top = ranked[: (k if isinstance(k, int) else int(len(u) * k))]
        return mean([y[i] for i in top if t[i] == 1]) - mean([y[i] for i in top if t[i] == 0])
    tr = [i for i in ranked if t[i] == 1]
    co = [i for i in ranked if t[i] == 0]
    k_t, k_c = (k, k) if isinstance(k, int) else (int(len(tr) * k), int(len(co) * k))
    return mean([y[i] for i in tr[:k_t]]) - mean([y[i] for i in co[:k_c]])


def ref_deciles(y, u, t, bins):
    ranked = sorted(range(len(u)), key=lambda i: (-u[i], -i))
    size, extra = divmod(len(u), bins)
    rows, start = [], 0
    for b in range(bins):
        part = ranked[start : start + size + (1 if b < extra else 0)]
        start += len(part)
        yt = [y[i] for i in part if t[i] == 1]
        yc = [y[i] for i in part if t[i] == 0]
        rate_t = sum(yt) / len(yt) if yt else float("nan")
        rate_c = sum(yc) / len(yc) if yc else float("nan")
        rows.append((len(yt), len(yc), rate_t - rate_c, sum(u[i] for i in part) / len(part)))
    return rows


# ---------------------------------------------------------------- fixed cases
@pytest.mark.parametrize("case", ["A", "D"])
def test_scores_match_sklift_0_5_1_numbers(case):
    y, u, t = CASES[case]
    exp = SKLIFT[case]
    assert qini_auc_score(y, u, t) == pytest.approx(exp["qini"], abs=1e-12)
    assert uplift_auc_score(y, u, t) == pytest.approx(exp["uplift_auc"], abs=1e-12)
    for (strategy, k), value in exp["at_k"].items():
        assert uplift_at_k(y, u, t, k=k, strategy=strategy) == pytest.approx(value, abs=1e-12)
    for name, fn in (("perfect_qini", perfect_qini_curve), ("perfect_uplift", perfect_uplift_curve)):
        x, v = fn(y, t)
        np.testing.assert_allclose(x, exp[name][0])
        np.testing.assert_allclose(v, exp[name][1], atol=1e-12)


def test_curves_and_table_match_sklift_on_case_a():
    exp = SKLIFT["A"]
    assert qini_auc_score(Y_A, U_A, T_A, negative_effect=False) == pytest.approx(exp["qini_no_negative"])
    for name, fn in (("qini_curve", qini_curve), ("uplift_curve", uplift_curve)):
        x, v = fn(Y_A, U_A, T_A)
        np.testing.assert_allclose(x, exp[name][0])
        np.testing.assert_allclose(v, exp[name][1], atol=1e-12)
    table = uplift_by_decile(Y_A, U_A, T_A, bins=4)
    cols = ["n_treated", "n_control", "response_rate_treated", "response_rate_control", "uplift"]
    np.testing.assert_allclose(table[cols].to_numpy(float), np.array(exp["by_4"], float))


def test_decile_uplift_and_se_match_sklift_on_case_d():
    table = uplift_by_decile(Y_D, U_D, T_D, bins=4)
    np.testing.assert_allclose(table["uplift"], SKLIFT["D"]["by_4_uplift"], atol=1e-6)
    np.testing.assert_allclose(table["uplift_se"], SKLIFT["D"]["by_4_se"], atol=1e-6)


@pytest.mark.parametrize("case", ["A", "D"])
def test_fixed_cases_match_loop_reference(case):
    y, u, t = CASES[case]
    _, q, up = ref_curves(y, u, t)
    np.testing.assert_allclose(qini_curve(y, u, t)[1], q, atol=1e-12)
    np.testing.assert_allclose(uplift_curve(y, u, t)[1], up, atol=1e-12)
    ref_q, ref_u = ref_scores(y, u, t)
    assert qini_auc_score(y, u, t) == pytest.approx(ref_q)
    assert uplift_auc_score(y, u, t) == pytest.approx(ref_u)


def test_negative_effect_false_rejects_a_negative_total_effect():
    with pytest.raises(DataError, match="negative_effect=False"):
        qini_auc_score(Y_D, U_D, T_D, negative_effect=False)


# ---------------------------------------------------------------- property tests
units = st.integers(min_value=6, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        st.lists(st.integers(-3, 3), min_size=n, max_size=n),  # few values: many ties
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(units)
def test_curves_and_scores_equal_loop_reference(data):
    y, u, t = data
    assume(0 < sum(t) < len(t))
    xs, q, up = ref_curves(y, u, t)
    x, v = qini_curve(y, u, t)
    np.testing.assert_array_equal(x, xs)
    np.testing.assert_allclose(v, q, atol=1e-9)
    np.testing.assert_allclose(uplift_curve(y, u, t)[1], up, atol=1e-9)
    for k in (0.3, 0.5, 3):
        for strategy in ("overall", "by_group"):
            if strategy == "by_group" and isinstance(k, int) and k > min(sum(t), len(t) - sum(t)):
                continue
            got, want = uplift_at_k(y, u, t, k=k, strategy=strategy), ref_uplift_at_k(y, u, t, k, strategy)
            assert got == pytest.approx(want, nan_ok=True)
    assume(0 < sum(y) < len(y))
    ref_q, ref_u = ref_scores(y, u, t)
    for got, want in ((qini_auc_score(y, u, t), ref_q), (uplift_auc_score(y, u, t), ref_u)):
        assert got == pytest.approx(want, nan_ok=True, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(units, st.integers(2, 5))
def test_deciles_equal_loop_reference(data, bins):
    y, u, t = data
    assume(bins < len(y))
    assume(0 < sum(t) < len(t))
    ref = ref_deciles(y, u, t, bins)
    table = uplift_by_decile(y, u, t, bins=bins)
    got = table[["n_treated", "n_control", "uplift", "mean_predicted_uplift"]].to_numpy(float)
    np.testing.assert_allclose(got, np.array(ref, float), atol=1e-12, equal_nan=True)


@settings(max_examples=30, deadline=None)
@given(units, st.randoms(use_true_random=False))
def test_scores_do_not_depend_on_unit_order_or_monotone_rescaling(data, rnd):
    y, u, t = data
    assume(0 < sum(t) < len(t) and 0 < sum(y) < len(y))
    perm = list(range(len(y)))
    rnd.shuffle(perm)
    yp, up, tp = ([a[i] for i in perm] for a in (y, u, t))
    rescaled = np.exp(np.asarray(up, float))
    assert qini_auc_score(yp, rescaled, tp) == pytest.approx(qini_auc_score(y, u, t), nan_ok=True)
    assert uplift_auc_score(yp, rescaled, tp) == pytest.approx(uplift_auc_score(y, u, t), nan_ok=True)


# ---------------------------------------------------------------- random and perfect
def _rct(n: int, seed: int, effect: float):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.integers(0, 2, n)
    tau = effect * (x > 0)
    y = (rng.random(n) < 0.3 + t * tau).astype(int)
    return x, y, t, tau


def test_perfect_rankings_score_one():
    _, y, t, _ = _rct(500, 1, 0.2)
    assert qini_auc_score(y, y * t - y * (1 - t), t) == pytest.approx(1.0)
    extra = y if np.sum((y == 1) & (t == 0)) > np.sum((y == 0) & (t == 1)) else t
    assert uplift_auc_score(y, 2 * (y == t) + extra, t) == pytest.approx(1.0)


def test_all_tied_scores_are_exactly_random():
    _, y, t, _ = _rct(300, 2, 0.2)
    flat = np.zeros(y.size)
    assert qini_auc_score(y, flat, t) == pytest.approx(0.0, abs=1e-12)
    assert uplift_auc_score(y, flat, t) == pytest.approx(0.0, abs=1e-12)


def test_random_scores_average_near_zero_and_informative_scores_do_better():
    x, y, t, _ = _rct(3000, 3, 0.15)
    rng = np.random.default_rng(0)
    scorings = [rng.random(y.size) for _ in range(20)]
    for score in (qini_auc_score, uplift_auc_score):
        random_scores = [score(y, s, t) for s in scorings]
        assert abs(np.mean(random_scores)) < 0.02
        assert score(y, x, t) > max(random_scores)


# ---------------------------------------------------------------- calibration and band
def test_calibration_of_true_uplift_covers_most_deciles_and_ci_is_symmetric():
    x, y, t, tau = _rct(20000, 4, 0.2)
    cal = uplift_calibration(y, tau + 0.0 * x, t, bins=5, level=0.95)
    assert list(cal["decile"]) == [1, 2, 3, 4, 5]
    assert cal["n"].sum() == y.size
    np.testing.assert_allclose(cal["ci_high"] - cal["observed_uplift"], cal["observed_uplift"] - cal["ci_low"])
    np.testing.assert_allclose((cal["ci_high"] - cal["ci_low"]) / (2 * cal["se"]), 1.959964, rtol=1e-5)
    assert cal["covered"].sum() >= 4
    biased = uplift_calibration(y, tau + 0.3, t, bins=5)
    assert not biased["covered"].any()


def test_qini_band_holds_the_curve_starts_at_zero_and_is_reproducible():
    x, y, t, _ = _rct(2000, 5, 0.15)
    band = qini_curve_band(y, x, t, n_boot=50, seed=3, n_grid=21)
    assert len(band) == 21 and band["share"].iloc[-1] == 1.0
    assert band.loc[0, ["qini", "low", "high"]].tolist() == [0.0, 0.0, 0.0]
    assert (band["low"] <= band["high"]).all()
    inside = (band["low"] <= band["qini"]) & (band["qini"] <= band["high"])
    assert inside.mean() > 0.9
    assert band["qini"].iloc[-1] == pytest.approx(qini_curve(y, x, t)[1][-1])
    assert band.equals(qini_curve_band(y, x, t, n_boot=50, seed=3, n_grid=21))


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: qini_curve([0, 1], [0.1, 0.2, 0.3], [0, 1]), DataError, "length mismatch"),
        (lambda: qini_curve([0, 1, 1], [0.1, 0.2, 0.3], [0, 2, 1]), DataError, "treatment"),
        (lambda: qini_curve([0, 1, 1], [0.1, 0.2, 0.3], [1, 1, 1]), DataError, "treatment"),
        (lambda: qini_auc_score([0, 2, 1], [0.1, 0.2, 0.3], [0, 1, 1]), DataError, "y must be binary"),
        (lambda: qini_curve([0, 1, 1], [0.1, np.nan, 0.3], [0, 1, 1]), DataError, "uplift"),
        (lambda: uplift_at_k(Y_A, U_A, T_A, k=1.5), ConfigError, "k=1.5"),
        (lambda: uplift_at_k(Y_A, U_A, T_A, k=12), ConfigError, "k=12"),
        (lambda: uplift_at_k(Y_A, U_A, T_A, strategy="top"), ConfigError, "'top'"),
        (lambda: uplift_by_decile(Y_A, U_A, T_A, bins=12), ConfigError, "bins"),
        (lambda: qini_auc_score(Y_A, U_A, T_A, negative_effect=1), ConfigError, "negative_effect"),
    ],
)
def test_bad_inputs_raise_errors_naming_them(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_curves_accept_a_continuous_outcome():
    x, v = qini_curve([2.5, 0.0, 10.0, 1.0], [0.9, 0.1, 0.5, 0.3], [1, 0, 1, 0])
    np.testing.assert_allclose(x, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(v, [0.0, 2.5, 12.5, 12.5 - 1.0 * 2 / 1, 12.5 - 1.0])
