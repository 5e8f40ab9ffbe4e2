"""Check analytics.stats.effects against published values, other implementations and simulation truth."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test, multivariate_logrank_test
from scipy import optimize, stats
from scipy.stats.contingency import relative_risk

from analytics.stats.effects import (
    ArmData,
    bootstrap_interval,
    campaign_return,
    compare_arms,
    conversion_uplift,
    newcombe_interval,
    relative_uplift_interval,
    retention_comparison,
    revenue_uplift,
    sample_ratio_mismatch,
    welch_interval,
    wilson_interval,
)

Z95 = stats.norm.ppf(0.975)


def _json_round_trip(data: dict) -> dict:
    """Return data after a strict JSON round trip, failing on NaN, infinity or odd types."""
    return json.loads(json.dumps(data, allow_nan=False))


def _zero_inflated_lognormal(rng: np.random.Generator, conversion: float, size: tuple[int, ...] | int) -> np.ndarray:
    """Return revenue per user: a lognormal basket for buyers, zero for everyone else."""
    return rng.binomial(1, conversion, size) * rng.lognormal(LOG_MEAN, LOG_SIGMA, size)


LOG_MEAN, LOG_SIGMA = 3.0, 1.0
BASKET_MEAN = math.exp(LOG_MEAN + LOG_SIGMA**2 / 2)


# --------------------------------------------------------------------------- Newcombe

# Newcombe (1998) Stat Med 17:873-890, Table II, method 10, examples (a)-(h). The paper
# itself was not at hand; these figures agree across several independent secondary
# copies (e.g. DescTools' regression tests), and test_newcombe_matches_an_independent_path
# recomputes every one of them from scipy's Wilson interval.
NEWCOMBE_TABLE_II = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
    ((10, 10, 0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize(("counts", "published"), NEWCOMBE_TABLE_II)
def test_newcombe_reproduces_table_ii_to_four_places(counts, published):
    lower, upper = newcombe_interval(*counts)
    # Four printed decimals pin the true value to within half a unit in the last place.
    assert float(lower) == pytest.approx(published[0], abs=5.001e-5)
    assert float(upper) == pytest.approx(published[1], abs=5.001e-5)


def test_newcombe_worked_example_difference_is_one_fifth():
    result = conversion_uplift(56, 70, 48, 80)
    assert result.rate_treated == pytest.approx(0.8)
    assert result.rate_control == pytest.approx(0.6)
    assert result.difference == pytest.approx(0.2)
    assert (round(result.difference_lower, 4), round(result.difference_upper, 4)) == (0.0524, 0.3339)


def _wilson_by_root_finding(successes: int, trials: int) -> tuple[float, float]:
    """Solve (p_hat - pi)^2 = z^2 pi (1 - pi) / n for pi on each side of p_hat."""
    rate = successes / trials

    def score_gap(proportion: float) -> float:
        return (rate - proportion) ** 2 - Z95**2 * proportion * (1 - proportion) / trials

    # At p_hat = 0 or 1 the quadratic also has a root at p_hat itself; bracket past it.
    inside_low, inside_high = max(rate, 1e-300), min(rate, 1.0 - 1e-16)
    lower = 0.0 if successes == 0 else optimize.brentq(score_gap, 0.0, inside_high, xtol=1e-15)
    upper = 1.0 if successes == trials else optimize.brentq(score_gap, inside_low, 1.0, xtol=1e-15)
    return lower, upper


def _newcombe_from_wilson(wilson, counts: tuple[int, int, int, int]) -> tuple[float, float]:
    """Combine two Wilson intervals by Newcombe's square-and-add, written out by hand."""
    treated_successes, treated_trials, control_successes, control_trials = counts
    p1, p2 = treated_successes / treated_trials, control_successes / control_trials
    l1, u1 = wilson(treated_successes, treated_trials)
    l2, u2 = wilson(control_successes, control_trials)
    return (
        p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def _scipy_wilson(successes: int, trials: int) -> tuple[float, float]:
    """Return scipy's Wilson score interval (no continuity correction)."""
    interval = stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    return interval.low, interval.high


@pytest.mark.parametrize(
    "counts",
    [counts for counts, _ in NEWCOMBE_TABLE_II] + [(84, 101, 89, 105), (600, 10_000, 500, 10_000), (1, 3, 2, 3)],
)
@pytest.mark.parametrize("wilson", [_scipy_wilson, _wilson_by_root_finding], ids=["scipy", "root"])
def test_newcombe_matches_an_independent_path(counts, wilson):
    expected = _newcombe_from_wilson(wilson, counts)
    assert tuple(float(bound) for bound in newcombe_interval(*counts)) == pytest.approx(expected, abs=1e-9)


def test_wilson_interval_is_vectorised_and_matches_scipy():
    successes = np.array([0, 3, 50, 100])
    lower, upper = wilson_interval(successes, 100)
    for index, count in enumerate(successes):
        assert (lower[index], upper[index]) == pytest.approx(_scipy_wilson(int(count), 100), abs=1e-12)


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
)
def test_newcombe_contains_estimate_stays_in_range_and_flips_sign_on_swap(treated, control):
    lower, upper = (float(bound) for bound in newcombe_interval(*treated, *control))
    difference = treated[0] / treated[1] - control[0] / control[1]
    assert -1.0 <= lower <= difference + 1e-12
    assert difference - 1e-12 <= upper <= 1.0
    swapped_lower, swapped_upper = newcombe_interval(*control, *treated)
    assert (float(swapped_lower), float(swapped_upper)) == pytest.approx((-upper, -lower), abs=1e-12)


def test_newcombe_and_relative_intervals_cover_the_truth_about_95_percent():
    rng = np.random.default_rng(20240601)
    experiments, users = 1000, 2000
    control_rate, treated_rate = 0.05, 0.06
    treated = rng.binomial(users, treated_rate, experiments)
    control = rng.binomial(users, control_rate, experiments)

    lower, upper = newcombe_interval(treated, users, control, users)
    true_difference = treated_rate - control_rate
    assert 0.93 <= np.mean((lower <= true_difference) & (true_difference <= upper)) <= 0.97

    _, relative_lower, relative_upper, _ = relative_uplift_interval(treated, users, control, users)
    true_relative = treated_rate / control_rate - 1
    assert 0.93 <= np.mean((relative_lower <= true_relative) & (true_relative <= relative_upper)) <= 0.97

    estimate = treated / users - control / users
    standard_error = np.sqrt(
        treated / users * (1 - treated / users) / users + control / users * (1 - control / users) / users
    )
    # Normal theory puts 99.73% within three standard errors.
    assert np.mean(np.abs(estimate - true_difference) <= 3 * standard_error) >= 0.99


def test_conversion_uplift_standard_error_and_z_test_by_hand():
    result = conversion_uplift(600, 10_000, 500, 10_000)
    assert result.standard_error == pytest.approx(math.sqrt(0.06 * 0.94 / 10_000 + 0.05 * 0.95 / 10_000))
    pooled = 0.055
    z = 0.01 / math.sqrt(pooled * (1 - pooled) * 2 / 10_000)
    assert result.z == pytest.approx(z)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(z))
    assert _json_round_trip(result.to_dict())["relative_corrected"] is False


def test_conversion_uplift_with_no_conversions_anywhere_is_sane():
    result = conversion_uplift(0, 500, 0, 400)
    assert (result.difference, result.z, result.p_value) == (0.0, 0.0, 1.0)
    assert result.relative_corrected
    # 0.5 added to every cell: (0.5 / 501) / (0.5 / 401) - 1.
    assert result.relative_uplift == pytest.approx(401 / 501 - 1)
    assert result.relative_lower < result.relative_uplift < result.relative_upper
    assert all(math.isfinite(value) for value in (result.relative_lower, result.relative_upper))


# --------------------------------------------------------------------------- relative uplift


@pytest.mark.parametrize("counts", [(56, 70, 48, 80), (120, 2000, 100, 2000), (3, 40, 9, 41)])
def test_relative_uplift_matches_scipy_katz_interval(counts):
    relative, lower, upper, corrected = relative_uplift_interval(*counts)
    reference = relative_risk(*counts)
    interval = reference.confidence_interval(confidence_level=0.95)
    assert float(relative) == pytest.approx(reference.relative_risk - 1, rel=1e-12)
    assert (float(lower), float(upper)) == pytest.approx((interval.low - 1, interval.high - 1), rel=1e-10)
    assert not corrected


def test_relative_uplift_with_zero_control_conversions_uses_half_cell_correction():
    relative, lower, upper, corrected = relative_uplift_interval(5, 56, 0, 29)
    ratio = (5.5 / 57) / (0.5 / 30)
    standard_error = math.sqrt(1 / 5.5 - 1 / 57 + 1 / 0.5 - 1 / 30)
    assert bool(corrected)
    assert float(relative) == pytest.approx(ratio - 1)
    assert float(lower) == pytest.approx(ratio * math.exp(-Z95 * standard_error) - 1)
    assert float(upper) == pytest.approx(ratio * math.exp(Z95 * standard_error) - 1)


def test_relative_uplift_with_zero_treated_conversions_keeps_estimate_inside_interval():
    result = conversion_uplift(0, 80, 4, 80)
    assert result.relative_corrected
    assert -1 < result.relative_lower < result.relative_uplift < result.relative_upper


def test_conversion_inputs_are_checked():
    with pytest.raises(ValueError):
        conversion_uplift(11, 10, 1, 10)
    with pytest.raises(ValueError):
        conversion_uplift(0, 0, 1, 10)
    with pytest.raises(TypeError):
        conversion_uplift(True, 10, 1, 10)
    with pytest.raises(ValueError):
        newcombe_interval(1.5, 10, 1, 10)


# --------------------------------------------------------------------------- Welch and bootstrap


def test_welch_matches_scipy_ttest_ind_unequal_variances():
    rng = np.random.default_rng(3)
    treated = _zero_inflated_lognormal(rng, 0.3, 300)
    control = _zero_inflated_lognormal(rng, 0.25, 450)
    reference = stats.ttest_ind(treated, control, equal_var=False)
    reference_interval = reference.confidence_interval(0.95)

    lower, upper = welch_interval(treated, control)
    assert (float(lower), float(upper)) == pytest.approx((reference_interval.low, reference_interval.high), rel=1e-10)

    result = revenue_uplift(treated, control, resamples=200)
    assert result.t == pytest.approx(reference.statistic, rel=1e-10)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-8)
    assert result.degrees_of_freedom == pytest.approx(reference.df, rel=1e-10)
    # The cent bounds are scipy's bounds rounded half-up to the cent.
    assert abs(float(result.welch_lower) - reference_interval.low) <= 0.005 + 1e-9
    assert abs(float(result.welch_upper) - reference_interval.high) <= 0.005 + 1e-9


def test_welch_interval_on_skewed_revenue_covers_the_truth_about_95_percent():
    rng = np.random.default_rng(97)
    experiments, users = 1000, 4000
    control_conversion, treated_conversion = 0.05, 0.055
    treated = _zero_inflated_lognormal(rng, treated_conversion, (experiments, users))
    control = _zero_inflated_lognormal(rng, control_conversion, (experiments, users))
    true_difference = (treated_conversion - control_conversion) * BASKET_MEAN

    lower, upper = welch_interval(treated, control)
    assert lower.shape == (experiments,)
    assert 0.93 <= np.mean((lower <= true_difference) & (true_difference <= upper)) <= 0.97


def test_percentile_bootstrap_on_skewed_revenue_covers_the_truth_about_95_percent():
    rng = np.random.default_rng(11)
    experiments, users = 1000, 400
    control_conversion, treated_conversion = 0.2, 0.25
    true_difference = (treated_conversion - control_conversion) * BASKET_MEAN
    covered = 0
    for experiment in range(experiments):
        treated = _zero_inflated_lognormal(rng, treated_conversion, users)
        control = _zero_inflated_lognormal(rng, control_conversion, users)
        lower, upper = bootstrap_interval(treated, control, resamples=1000, seed=experiment)
        covered += lower <= true_difference <= upper
    assert 0.93 <= covered / experiments <= 0.97


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_agrees_with_scipy_bootstrap(method):
    rng = np.random.default_rng(5)
    treated = _zero_inflated_lognormal(rng, 0.25, 300)
    control = _zero_inflated_lognormal(rng, 0.2, 350)
    reference = stats.bootstrap(
        (treated, control),
        lambda first, second, axis: first.mean(axis=axis) - second.mean(axis=axis),
        n_resamples=20_000,
        method="BCa" if method == "bca" else "percentile",
        rng=np.random.default_rng(1),
        vectorized=True,
    ).confidence_interval
    lower, upper = bootstrap_interval(treated, control, resamples=20_000, seed=2, method=method)
    # Different random draws: allow Monte Carlo error of a few percent of the width.
    tolerance = 0.04 * (reference.high - reference.low)
    assert lower == pytest.approx(reference.low, abs=tolerance)
    assert upper == pytest.approx(reference.high, abs=tolerance)


def test_bootstrap_is_reproducible_from_its_seed():
    rng = np.random.default_rng(8)
    treated = _zero_inflated_lognormal(rng, 0.1, 1000)
    control = _zero_inflated_lognormal(rng, 0.1, 1000)
    first = bootstrap_interval(treated, control, resamples=500, seed=42)
    assert bootstrap_interval(treated, control, resamples=500, seed=42) == first
    assert bootstrap_interval(treated, control, resamples=500, seed=43) != first


def test_bootstrap_of_all_zero_revenue_is_a_point_at_zero():
    zeros = np.zeros(50)
    for method in ("percentile", "bca"):
        assert bootstrap_interval(zeros, zeros, resamples=100, method=method) == (0.0, 0.0)


# --------------------------------------------------------------------------- money handling


def test_decimal_and_float_revenue_give_the_same_statistics():
    rng = np.random.default_rng(21)
    cents = (rng.binomial(1, 0.2, 400) * rng.integers(100, 50_000, 400)).tolist()
    as_decimal = [Decimal(amount) / 100 for amount in cents]
    treated_decimal, control_decimal = as_decimal[:200], as_decimal[200:]
    floats = np.array(cents, dtype=float) / 100

    from_decimal = revenue_uplift(treated_decimal, control_decimal, resamples=300, seed=9)
    from_float = revenue_uplift(floats[:200], floats[200:], resamples=300, seed=9)

    assert from_decimal.total_treated == sum(treated_decimal)
    assert from_decimal.total_control == sum(control_decimal)
    for name in ("t", "p_value", "degrees_of_freedom", "standard_error"):
        assert getattr(from_decimal, name) == pytest.approx(getattr(from_float, name), rel=1e-12)
    for name in ("mean_treated", "difference", "welch_lower", "bootstrap_upper"):
        value = getattr(from_decimal, name)
        assert isinstance(value, Decimal) and value.as_tuple().exponent == -2
        assert value == getattr(from_float, name)


def test_money_rounds_half_up_and_reads_floats_by_their_repr():
    half_cent = revenue_uplift([Decimal("0.01"), Decimal("0.00")], [Decimal("0"), Decimal("0")], resamples=50)
    # Banker's rounding would give 0.00.
    assert half_cent.mean_treated == Decimal("0.01")
    assert half_cent.difference == Decimal("0.01")
    # Decimal(2.675) is 2.67499999...; the amount meant is 2.675, which rounds up.
    from_float = revenue_uplift([2.675, 2.675], [0.0, 1.0], resamples=50)
    assert from_float.mean_treated == Decimal("2.68")


def test_revenue_inputs_are_checked():
    with pytest.raises(ValueError):
        revenue_uplift([Decimal("NaN"), Decimal("1")], [Decimal("1"), Decimal("2")])
    with pytest.raises(ValueError):
        revenue_uplift([math.inf, 1.0], [1.0, 2.0])
    with pytest.raises(TypeError):
        revenue_uplift([True, False], [1, 2])
    with pytest.raises(TypeError):
        revenue_uplift(["1.00", "2.00"], [1, 2])  # type: ignore[list-item]  # the wrong type is the point
    with pytest.raises(ValueError):
        revenue_uplift([Decimal("1")], [Decimal("1"), Decimal("2")])


def test_revenue_with_no_spread_is_json_safe():
    result = revenue_uplift([Decimal("5")] * 3, [Decimal("2")] * 3, resamples=50)
    assert result.t == math.inf and result.p_value == 0.0
    data = _json_round_trip(result.to_dict())
    assert data["t"] is None
    assert data["difference"] == "3.00"


def _uplift_pair(treated_revenue, control_revenue, treated_conversions, control_conversions):
    conversion = conversion_uplift(treated_conversions, len(treated_revenue), control_conversions, len(control_revenue))
    return conversion, revenue_uplift(treated_revenue, control_revenue, resamples=200)


def test_campaign_return_by_hand():
    treated = [Decimal("100.00")] * 10 + [Decimal("0")] * 90
    control = [Decimal("100.00")] * 9 + [Decimal("0")] * 91
    conversion, revenue = _uplift_pair(treated, control, 10, 9)
    result = campaign_return(Decimal("50"), conversion, revenue)

    assert result.incremental_revenue == Decimal("100.00")
    assert result.roi == Decimal("1.0000")
    assert result.incremental_conversions == pytest.approx(1.0)
    assert result.incremental_conversions_lower == pytest.approx(conversion.difference_lower * 100)

    reference = stats.ttest_ind(
        np.array(treated, dtype=float), np.array(control, dtype=float), equal_var=False
    ).confidence_interval(0.95)
    assert float(result.incremental_revenue_lower) == pytest.approx(reference.low * 100, abs=0.005 + 1e-9)
    assert float(result.incremental_revenue_upper) == pytest.approx(reference.high * 100, abs=0.005 + 1e-9)
    expected_roi_lower = (Decimal(repr(float(reference.low) * 100)) - 50) / 50
    assert result.roi_lower is not None
    assert abs(result.roi_lower - expected_roi_lower) <= Decimal("0.0001")
    assert result.note is None
    assert _json_round_trip(result.to_dict())["roi"] == "1.0000"


def test_campaign_return_does_not_multiply_cent_rounding_by_the_user_count():
    treated = [Decimal("10.00"), Decimal("0"), Decimal("0")]
    control = [Decimal("10.00")] + [Decimal("0")] * 6
    conversion, revenue = _uplift_pair(treated, control, 1, 1)
    # 10 - 10 * 3 / 7 = 5.714..., whereas the rounded per-user difference 1.90 x 3 = 5.70.
    assert revenue.difference == Decimal("1.90")
    assert campaign_return(Decimal("1"), conversion, revenue).incremental_revenue == Decimal("5.71")


def test_campaign_return_with_zero_cost_has_no_roi():
    conversion, revenue = _uplift_pair([Decimal("3"), Decimal("0")], [Decimal("1"), Decimal("0")], 1, 1)
    result = campaign_return(0, conversion, revenue)
    assert result.roi is None and result.roi_lower is None and result.roi_upper is None
    assert result.note is not None and "zero" in result.note
    assert result.cost == Decimal("0.00")
    with pytest.raises(TypeError):
        campaign_return(12.5, conversion, revenue)  # type: ignore[arg-type]  # the wrong type is the point
    with pytest.raises(ValueError):
        campaign_return(Decimal("-1"), conversion, revenue)


# --------------------------------------------------------------------------- sample ratio


def test_srm_flags_45_55_on_ten_thousand_users():
    result = sample_ratio_mismatch({"control": 4500, "treated": 5500}, {"control": 0.5, "treated": 0.5})
    # (500^2 / 5000) * 2 = 100 on one degree of freedom.
    assert result.statistic == pytest.approx(100.0)
    assert result.p_value == pytest.approx(stats.chi2.sf(100.0, 1))
    assert result.mismatch
    assert result.warning is not None
    assert "Sample ratio mismatch" in result.warning and "4,500" in result.warning
    assert _json_round_trip(result.to_dict())["mismatch"] is True


def test_srm_does_not_flag_5010_4990():
    result = sample_ratio_mismatch({"control": 5010, "treated": 4990}, {"control": 50, "treated": 50})
    assert result.statistic == pytest.approx(0.04)
    assert result.p_value == pytest.approx(stats.chi2.sf(0.04, 1))
    assert not result.mismatch and result.warning is None


def test_srm_handles_many_arms_and_a_custom_threshold():
    observed = {"control": 2000, "email": 4000, "sms": 4000}
    perfect = sample_ratio_mismatch(observed, {"control": 20, "email": 40, "sms": 40})
    assert perfect.degrees_of_freedom == 2 and perfect.p_value == pytest.approx(1.0)
    assert perfect.configured_shares == pytest.approx((0.2, 0.4, 0.4))

    # 2 * 130^2 / 5000 = 6.76, p about 0.0093: a warning at 1% but not at 0.1%.
    drifted = {"control": 5130, "treated": 4870}
    shares = {"control": 1, "treated": 1}
    assert not sample_ratio_mismatch(drifted, shares).mismatch
    assert sample_ratio_mismatch(drifted, shares, threshold=0.01).mismatch


def test_srm_inputs_are_checked():
    with pytest.raises(ValueError):
        sample_ratio_mismatch({"control": 10, "treated": 10}, {"control": 1, "other": 1})
    with pytest.raises(ValueError):
        sample_ratio_mismatch({"control": 10, "treated": 10}, {"control": 1, "treated": 0})
    empty = sample_ratio_mismatch({"control": 0, "treated": 0}, {"control": 1, "treated": 1})
    assert empty.p_value == 1.0 and not empty.mismatch


# --------------------------------------------------------------------------- retention

# Arm a churns at days 1, 2, 3, 4. Arm b churns at days 2, 3, 6 and is still active at day 5.
TINY_DURATIONS = {"a": [1, 2, 3, 4], "b": [2, 3, 5, 6]}
TINY_CHURNED = {"a": [True, True, True, True], "b": [True, True, False, True]}


def test_kaplan_meier_by_hand():
    result = retention_comparison(TINY_DURATIONS, TINY_CHURNED)
    first, second = result.curves
    assert first.times == (0.0, 1.0, 2.0, 3.0, 4.0)
    assert first.survival == pytest.approx((1, 3 / 4, 3 / 4 * 2 / 3, 3 / 4 * 2 / 3 * 1 / 2, 0))
    assert first.at_risk == (4, 4, 3, 2, 1)
    assert second.times == (0.0, 2.0, 3.0, 5.0, 6.0)
    assert second.survival == pytest.approx((1, 3 / 4, 1 / 2, 1 / 2, 0))
    assert second.at_risk == (4, 4, 3, 2, 1)
    assert (first.median_time, second.median_time) == (2.0, 3.0)
    assert all(low <= s <= high for low, s, high in zip(first.lower, first.survival, first.upper, strict=True))


def test_log_rank_by_hand_and_against_lifelines():
    # Event times 1, 2, 3, 4, 6 (day 5 is censoring). For arm a:
    #   t  at risk a/all  deaths  expected a       variance d (na/N)(1 - na/N)(N - d)/(N - 1)
    #   1  4/8            1       1 * 4/8 = 1/2    1/4
    #   2  3/7            2       2 * 3/7 = 6/7    20/49
    #   3  2/5            2       2 * 2/5 = 4/5    9/25
    #   4  1/3            1       1/3              2/9
    #   6  0/1            1       0                0
    observed = 4
    expected = Fraction(1, 2) + Fraction(6, 7) + Fraction(4, 5) + Fraction(1, 3)
    variance = Fraction(1, 4) + Fraction(20, 49) + Fraction(9, 25) + Fraction(2, 9)
    by_hand = float((observed - expected) ** 2 / variance)

    result = retention_comparison(TINY_DURATIONS, TINY_CHURNED).log_rank
    direct = logrank_test(TINY_DURATIONS["a"], TINY_DURATIONS["b"], TINY_CHURNED["a"], TINY_CHURNED["b"])
    assert result.statistic == pytest.approx(by_hand, rel=1e-12)
    assert result.statistic == pytest.approx(direct.test_statistic, rel=1e-12)
    assert result.p_value == pytest.approx(stats.chi2.sf(by_hand, 1), rel=1e-9)
    assert result.degrees_of_freedom == 1


def test_retention_with_three_arms_uses_the_multivariate_log_rank_and_is_json_safe():
    rng = np.random.default_rng(4)
    durations, churned = {}, {}
    for arm, scale in (("control", 30.0), ("email", 40.0), ("sms", 35.0)):
        times = rng.exponential(scale, 200)
        durations[arm] = np.minimum(times, 60.0).tolist()
        churned[arm] = (times < 60.0).tolist()
    result = retention_comparison(durations, churned)
    direct = multivariate_logrank_test(
        [duration for arm_durations in durations.values() for duration in arm_durations],
        [arm for arm in durations for _ in range(200)],
        [flag for arm_churned in churned.values() for flag in arm_churned],
    )
    assert result.log_rank.statistic == pytest.approx(direct.test_statistic, rel=1e-10)
    assert result.log_rank.degrees_of_freedom == 2
    fitted = KaplanMeierFitter().fit(durations["email"], churned["email"])
    assert result.curves[1].survival == pytest.approx(tuple(fitted.survival_function_.iloc[:, 0]))
    data = _json_round_trip(result.to_dict())
    assert [curve["arm"] for curve in data["curves"]] == ["control", "email", "sms"]
    assert len(data["curves"][0]["times"]) == len(data["curves"][0]["at_risk"])


# --------------------------------------------------------------------------- many arms


def _simulated_arm(rng: np.random.Generator, users: int, conversion: float, cost: str) -> ArmData:
    converted = rng.random(users) < conversion
    baskets = np.round(rng.lognormal(LOG_MEAN, LOG_SIGMA, users), 2)
    revenue = [
        Decimal(repr(float(amount))) if bought else Decimal("0")
        for amount, bought in zip(baskets, converted, strict=True)
    ]
    return ArmData(users=users, conversions=int(converted.sum()), revenue=revenue, cost=Decimal(cost))


def test_compare_arms_compares_each_treated_arm_with_the_control():
    rng = np.random.default_rng(2024)
    planted = {"control": 0.05, "email": 0.06, "sms": 0.05}
    arms = {
        "control": _simulated_arm(rng, 6000, planted["control"], "0"),
        "email": _simulated_arm(rng, 6000, planted["email"], "1500"),
        "sms": _simulated_arm(rng, 6000, planted["sms"], "0"),
    }
    evaluation = compare_arms(arms, "control", configured_shares={"control": 1, "email": 1, "sms": 1}, resamples=400)
    assert [comparison.arm for comparison in evaluation.comparisons] == ["email", "sms"]
    assert evaluation.sample_ratio is not None and not evaluation.sample_ratio.mismatch
    assert evaluation.retention is None
    for comparison in evaluation.comparisons:
        true_difference = planted[comparison.arm] - planted["control"]
        conversion = comparison.conversion
        assert conversion is not None
        assert abs(conversion.difference - true_difference) <= 3 * conversion.standard_error
        revenue = comparison.revenue
        assert revenue is not None
        assert abs(float(revenue.difference) - true_difference * BASKET_MEAN) <= 3 * revenue.standard_error
    sms_return = evaluation.comparisons[1].campaign_return
    assert sms_return is not None
    assert sms_return.roi is None and sms_return.note

    data = _json_round_trip(evaluation.to_dict())
    assert data["comparisons"][0]["campaign_return"]["cost"] == "1500.00"

    reordered = compare_arms({name: arms[name] for name in ("sms", "control", "email")}, "control", resamples=400)
    by_arm = {comparison.arm: comparison for comparison in reordered.comparisons}
    assert by_arm["email"].revenue == evaluation.comparisons[0].revenue


def test_compare_arms_runs_retention_when_every_arm_has_it():
    arms = {
        name: ArmData(
            users=4,
            conversions=1,
            revenue=[Decimal("9.90"), 0, 0, 0],
            retention_durations=TINY_DURATIONS[name],
            retention_churned=TINY_CHURNED[name],
        )
        for name in ("a", "b")
    }
    evaluation = compare_arms(arms, "a", resamples=100)
    assert evaluation.retention is not None
    assert evaluation.retention.log_rank.statistic == pytest.approx(1.8370596515603, rel=1e-9)


def test_compare_arms_inputs_are_checked():
    arm = ArmData(users=3, conversions=1, revenue=[Decimal("1"), 0, 0])
    with pytest.raises(ValueError):
        compare_arms({"a": arm, "b": arm}, "holdout")
    with pytest.raises(ValueError):
        compare_arms({"a": arm, "b": ArmData(users=4, conversions=1, revenue=[1, 0, 0])}, "a")
    with pytest.raises(ValueError):
        half_retention = ArmData(users=3, conversions=1, revenue=[1, 0, 0], retention_durations=[1, 2, 3])
        compare_arms({"a": arm, "b": half_retention}, "a")
