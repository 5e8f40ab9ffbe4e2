"""Check analytics.stats.experiments against references (regression, the mSPRT paper, Holm by hand) and simulation.

Every simulation is seeded and states its size; the larger runs behind these numbers are in
the campaign report's README section.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from lifelines import CoxPHFitter
from scipy import stats

from analytics.stats.effects import NotEnoughData
from analytics.stats.experiments import (
    ALWAYS_VALID,
    always_valid_interval,
    churn_hazard_ratio,
    covariate_columns,
    cuped_difference,
    holm_adjust,
    holm_adjust_array,
    mixture_tuning_ratio,
    mixture_variance,
    msprt_half_width,
    msprt_likelihood_ratio,
    rollback_rate,
)

Z95 = stats.norm.ppf(0.975)


# --------------------------------------------------------------------------- Holm


def test_holm_matches_a_hand_worked_example():
    # given four p-values; sorted 0.005, 0.01, 0.03, 0.04 are multiplied by 4, 3, 2, 1:
    # 0.02, 0.03, 0.06, 0.04 -> running maximum 0.02, 0.03, 0.06, 0.06
    raw = [0.01, 0.04, 0.03, 0.005]
    # when
    adjusted = holm_adjust(raw)
    # then, in the order given
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust_array(np.array([raw])) == pytest.approx(np.array([[0.03, 0.06, 0.06, 0.02]]))


def test_holm_leaves_missing_tests_out_of_the_family_and_caps_at_one():
    assert holm_adjust([0.5, None, 0.02, float("nan")]) == [pytest.approx(0.5), None, pytest.approx(0.04), None]
    assert holm_adjust([0.6, 0.7, 0.9]) == pytest.approx([1.0, 1.0, 1.0])
    assert holm_adjust([]) == []
    with pytest.raises(ValueError, match="between 0 and 1"):
        holm_adjust([1.5])


def test_holm_equals_its_textbook_formula_on_random_families():
    # The adjusted k-th smallest p is max over j <= k of (m - j + 1) p_(j), capped at 1 (Holm 1979).
    rng = np.random.default_rng(7)
    for _ in range(50):
        raw = rng.uniform(0, 0.2, size=rng.integers(1, 9))
        ordered = np.sort(raw)
        m = len(raw)
        expected_sorted = [min(1.0, max((m - j) * ordered[j] for j in range(k + 1))) for k in range(m)]
        adjusted = holm_adjust(list(raw))
        for value, p in zip(adjusted, raw, strict=True):
            assert value == pytest.approx(expected_sorted[int(np.searchsorted(ordered, p))])


def test_holm_keeps_the_family_wise_error_at_five_percent_over_four_arm_null_campaigns():
    # given 1,000 null campaigns, four treated arms against one holdout (2,000 users each, 5% conversion),
    # conversion and revenue per user tested for each arm: a family of eight tests per campaign
    rng = np.random.default_rng(2024)
    campaigns, arms, users = 1_000, 5, 2_000
    conversions = rng.binomial(users, 0.05, size=(campaigns, arms))
    rate = conversions / users
    treated, control = rate[:, 1:], rate[:, :1]
    z_conversion = (treated - control) / np.sqrt((treated * (1 - treated) + control * (1 - control)) / users)
    # revenue per user: each converter spends a lognormal amount; the sums are drawn per arm
    amounts = rng.lognormal(4.0, 1.0, size=(campaigns, arms, 150))
    present = np.arange(150)[None, None, :] < conversions[:, :, None]
    spend = np.where(present, amounts, 0.0)
    mean = spend.sum(axis=2) / users
    variance = ((spend**2).sum(axis=2) - users * mean**2) / (users - 1)
    z_revenue = (mean[:, 1:] - mean[:, :1]) / np.sqrt((variance[:, 1:] + variance[:, :1]) / users)
    p = 2 * stats.norm.sf(np.abs(np.hstack([z_conversion, z_revenue])))
    # when
    holm_error = (holm_adjust_array(p) <= 0.05).any(axis=1).mean()
    raw_error = (p <= 0.05).any(axis=1).mean()
    # then Holm holds the family-wise error; unadjusted p-values would not
    assert holm_error <= 0.05
    assert raw_error > 0.15


# --------------------------------------------------------------------------- mSPRT


def _paper_closed_form(mean_difference, sigma2, n, tau2, theta0=0.0):
    """Johari et al. (2017, KDD), the normal mixture for n pairs: both arms of n users with variance sigma^2."""
    return math.sqrt(2 * sigma2 / (2 * sigma2 + n * tau2)) * math.exp(
        n**2 * tau2 * (mean_difference - theta0) ** 2 / (4 * sigma2 * (2 * sigma2 + n * tau2))
    )


@pytest.mark.parametrize(
    ("mean_difference", "sigma2", "n", "tau2", "theta0"),
    [
        (0.0, 1.0, 100, 0.01, 0.0),
        (0.3, 2.5, 400, 0.05, 0.0),
        (-0.02, 0.05, 5_000, 1e-4, 0.01),
        (1.2, 9.0, 30, 1.0, 0.5),
    ],
)
def test_msprt_ratio_is_the_papers_closed_form(mean_difference, sigma2, n, tau2, theta0):
    ours = msprt_likelihood_ratio(mean_difference, 2 * sigma2 / n, tau2, null=theta0)
    assert float(ours) == pytest.approx(_paper_closed_form(mean_difference, sigma2, n, tau2, theta0), rel=1e-12)


def test_always_valid_interval_is_where_the_ratio_crosses_one_over_alpha():
    # given an estimate and variance
    result = always_valid_interval(0.012, 4e-5, 8_000, confidence=0.95, tuning_users=10_000)
    # then the bounds are the two null values whose mixture ratio is exactly 1/alpha
    for bound in (result.lower, result.upper):
        assert float(msprt_likelihood_ratio(0.012, 4e-5, result.mixture_variance, null=bound)) == pytest.approx(20.0)
    assert result.p_value == pytest.approx(1 / float(msprt_likelihood_ratio(0.012, 4e-5, result.mixture_variance)))
    assert result.interval_kind == ALWAYS_VALID
    # and it is wider than the fixed-horizon interval, as the price of looking any time
    assert result.upper - result.lower > 2 * Z95 * math.sqrt(4e-5)
    json.dumps(result.to_dict(), allow_nan=False)


def test_mixture_is_tuned_to_be_narrowest_at_the_tuning_users():
    alpha, per_user_variance = 0.05, 0.2
    ratio = mixture_tuning_ratio(alpha)

    def width(users, tuning):
        variance = per_user_variance / users
        return float(msprt_half_width(variance, mixture_variance(variance, users, tuning, alpha), alpha))

    assert width(5_000, 5_000) < width(5_000, 1_000)
    assert width(5_000, 5_000) < width(5_000, 25_000)
    assert ratio > 1


def test_always_valid_needs_a_spread():
    with pytest.raises(NotEnoughData, match="spread"):
        always_valid_interval(0.0, 0.0, 10)


def _aa_daily_looks(rng, campaigns, days, users_per_day, metric):
    """Return the cumulative difference and its variance after each day of A/A campaigns (campaigns, days)."""
    users = users_per_day * np.arange(1, days + 1)
    if metric == "conversion":
        counts = [rng.binomial(users_per_day, 0.05, size=(campaigns, days)).cumsum(axis=1) for _ in range(2)]
        rates = [count / users for count in counts]
        estimate = rates[0] - rates[1]
        variance = sum(rate * (1 - rate) for rate in rates) / users
    else:
        sums = []
        for _ in range(2):
            bought = rng.random((campaigns, days, users_per_day)) < 0.1
            amount = np.where(bought, rng.lognormal(4.0, 1.0, size=bought.shape), 0.0)
            sums.append((amount.sum(axis=2).cumsum(axis=1), (amount**2).sum(axis=2).cumsum(axis=1)))
        means = [total / users for total, _ in sums]
        variances = [(squares - users * mean**2) / (users - 1) for (_, squares), mean in zip(sums, means, strict=True)]
        estimate = means[0] - means[1]
        variance = (variances[0] + variances[1]) / users
    return estimate, variance, 2 * users


@pytest.mark.parametrize("metric", ["conversion", "revenue"])
def test_always_valid_holds_five_percent_when_looked_at_daily_and_fixed_horizon_does_not(metric):
    # given 1,000 A/A campaigns (conversion) or 500 (revenue, 10% buyers spending lognormal amounts),
    # 100 users per arm per day, looked at every day for 30 days
    rng = np.random.default_rng(30)
    campaigns = 1_000 if metric == "conversion" else 500
    estimate, variance, users = _aa_daily_looks(rng, campaigns, 30, 100, metric)
    # when the manager stops at the first look whose interval excludes zero
    tau2 = mixture_variance(variance, users, 10_000, 0.05)
    always_valid = (msprt_likelihood_ratio(estimate, variance, tau2) >= 20).any(axis=1).mean()
    fixed_peeked = (np.abs(estimate) / np.sqrt(variance) > Z95).any(axis=1).mean()
    fixed_once = (np.abs(estimate[:, -1]) / np.sqrt(variance[:, -1]) > Z95).mean()
    # then the always-valid test keeps its promise; the fixed-horizon test keeps it only when looked at once
    assert always_valid <= 0.05
    assert fixed_peeked > 0.15
    assert fixed_once < 0.08


def test_always_valid_interval_covers_a_planted_effect_at_every_look():
    # given 500 campaigns with a planted conversion lift (5% -> 8%), 100 users per arm per day for 30 days
    rng = np.random.default_rng(31)
    users = 100 * np.arange(1, 31)
    counts = [rng.binomial(100, rate, size=(500, 30)).cumsum(axis=1) for rate in (0.08, 0.05)]
    rates = [count / users for count in counts]
    estimate = rates[0] - rates[1]
    variance = sum(rate * (1 - rate) for rate in rates) / users
    tau2 = mixture_variance(variance, 2 * users, 10_000, 0.05)
    half = msprt_half_width(variance, tau2, 0.05)
    # then the sequence covers the truth at every one of the 30 looks in at least 95% of campaigns
    covered_throughout = (np.abs(estimate - 0.03) <= half).all(axis=1).mean()
    assert covered_throughout >= 0.95
    # and a real effect is found by the end in most of them
    assert (np.abs(estimate[:, -1]) > half[:, -1]).mean() > 0.5


# --------------------------------------------------------------------------- CUPED


def _planted_world(rng, users, effect, *, informative=True, without_history=0.2):
    """Return outcomes and pre-period covariates of two arms whose pre-period spend predicts revenue."""
    arms = []
    for lift in (effect, 0.0):
        pre_spend = rng.gamma(2.0, 30.0, size=users)
        pre_purchases = rng.poisson(pre_spend / 30.0)
        history = rng.random(users) >= without_history
        base = 0.8 * pre_spend if informative else 0.8 * rng.gamma(2.0, 30.0, size=users)
        # new users (no history) spend differently from the average spender
        revenue = np.where(history, base, 20.0) + lift + rng.normal(0, 25.0, size=users)
        if not informative:
            pre_spend = rng.gamma(2.0, 30.0, size=users)
        columns = {"pre_revenue": np.where(history, pre_spend, np.nan), "pre_purchases": pre_purchases}
        arms.append((revenue, columns, history))
    return arms


def _design(arms):
    """Build one covariate matrix over both arms so the no-history indicator is shared."""
    (_, columns_t, history_t), (_, columns_c, history_c) = arms
    both = {name: np.concatenate([columns_t[name], columns_c[name]]) for name in columns_t}
    matrix, names = covariate_columns(both, np.concatenate([history_t, history_c]))
    return matrix[: len(history_t)], matrix[len(history_t) :], names


def test_cuped_estimate_is_the_regression_adjustments_treatment_coefficient():
    # given a planted world of 1,500 users per arm
    rng = np.random.default_rng(5)
    arms = _planted_world(rng, 1_500, 3.0)
    x_t, x_c, names = _design(arms)
    (y_t, _, _), (y_c, _, _) = arms
    # when
    result = cuped_difference(y_t, y_c, x_t, x_c, covariate_names=names)
    # then it equals the treatment coefficient of y ~ 1 + treated + covariates by least squares
    design = np.column_stack(
        [np.ones(len(y_t) + len(y_c)), np.r_[np.ones(len(y_t)), np.zeros(len(y_c))], np.vstack([x_t, x_c])]
    )
    coefficients = np.linalg.lstsq(design, np.r_[y_t, y_c], rcond=None)[0]
    assert result.estimate == pytest.approx(coefficients[1], rel=1e-10)
    assert result.theta == pytest.approx(tuple(coefficients[2:]), rel=1e-8)
    assert names == ("pre_revenue", "pre_purchases", "no_history")
    # and the unadjusted figure is the plain difference of means
    assert result.unadjusted_estimate == pytest.approx(y_t.mean() - y_c.mean())
    json.dumps(result.to_dict(), allow_nan=False)


def test_cuped_narrows_the_interval_and_keeps_its_coverage_on_a_planted_world():
    # given 200 replications of a world (1,000 users per arm, 20% without history) whose pre-period spend
    # predicts revenue, with a planted lift of 3 CNY per user
    rng = np.random.default_rng(11)
    covered, widths, raw_widths, reductions = 0, [], [], []
    for _ in range(200):
        arms = _planted_world(rng, 1_000, 3.0)
        x_t, x_c, names = _design(arms)
        result = cuped_difference(arms[0][0], arms[1][0], x_t, x_c, covariate_names=names)
        covered += result.lower <= 3.0 <= result.upper
        widths.append(result.upper - result.lower)
        raw_widths.append(result.unadjusted_upper - result.unadjusted_lower)
        reductions.append(result.variance_reduction)
    # then the interval is at least 20% narrower and still covers 95% +- 3 points
    assert np.mean(widths) <= 0.8 * np.mean(raw_widths)
    assert 0.92 <= covered / 200 <= 0.98
    assert np.mean(reductions) > 0.36


def test_cuped_on_a_useless_covariate_changes_nothing():
    # given 200 replications of 1,000 users per arm whose covariates predict nothing
    rng = np.random.default_rng(12)
    reductions, shifts = [], []
    for _ in range(200):
        arms = _planted_world(rng, 1_000, 3.0, informative=False, without_history=0.0)
        x_t, x_c, names = _design(arms)
        result = cuped_difference(arms[0][0], arms[1][0], x_t, x_c, covariate_names=names)
        reductions.append(result.variance_reduction)
        shifts.append(abs(result.estimate - result.unadjusted_estimate) / result.unadjusted_standard_error)
    # then about 0% reduction, and the same estimate within a small share of its standard error
    assert abs(np.mean(reductions)) < 0.01
    assert np.mean(shifts) < 0.1
    assert "no_history" not in names  # nobody lacks history: the indicator is constant and dropped


def test_cuped_adjusts_conversion_by_pre_period_purchases():
    # given 1,000 users per arm whose pre-period purchases predict conversion, no planted effect
    rng = np.random.default_rng(13)
    arms = []
    for _ in range(2):
        purchases = rng.poisson(1.0, size=1_000)
        converted = rng.random(1_000) < 0.02 + 0.2 * np.minimum(purchases, 3)
        arms.append((converted.astype(float), purchases))
    x_t, x_c = arms[0][1], arms[1][1]
    # when
    result = cuped_difference(arms[0][0], arms[1][0], x_t, x_c, covariate_names=["pre_purchases"])
    # then the variance falls and the interval still covers zero
    assert result.variance_reduction > 0.1
    assert result.upper - result.lower < result.unadjusted_upper - result.unadjusted_lower
    assert result.lower < 0 < result.upper


def test_users_without_history_get_an_indicator_not_a_zero():
    matrix, names = covariate_columns(
        {"pre_revenue": np.array([10.0, np.nan, 0.0, 5.0])}, has_history=np.array([True, True, False, True])
    )
    assert names == ("pre_revenue", "no_history")
    assert matrix.tolist() == [[10.0, 0.0], [0.0, 1.0], [0.0, 1.0], [5.0, 0.0]]


def test_cuped_needs_two_users_per_arm():
    with pytest.raises(NotEnoughData):
        cuped_difference([1.0], [1.0, 2.0], [[0.0]], [[0.0], [1.0]])


# --------------------------------------------------------------------------- guardrails


def test_churn_hazard_ratio_matches_lifelines_and_recovers_a_planted_harm():
    # given 1,500 members per arm, churn hazard 0.02/day in the holdout and twice that among the treated,
    # followed for 60 days
    rng = np.random.default_rng(21)
    times = [rng.exponential(1 / hazard, size=1_500) for hazard in (0.04, 0.02)]
    durations = [np.minimum(time, 60.0) for time in times]
    churned = [time < 60.0 for time in times]
    # when
    result = churn_hazard_ratio(durations[0], churned[0], durations[1], churned[1])
    # then the planted ratio 2 lies in the interval, the interval lies above 1, and harm is flagged
    assert result.lower < 2.0 < result.upper
    assert result.harm
    fitter = CoxPHFitter().fit(
        __import__("pandas").DataFrame(
            {
                "d": np.r_[durations[0], durations[1]],
                "e": np.r_[churned[0], churned[1]],
                "t": np.r_[np.ones(1_500), np.zeros(1_500)],
            }
        ),
        "d",
        "e",
    )
    assert result.hazard_ratio == pytest.approx(math.exp(fitter.params_["t"]), rel=1e-6)


def test_churn_hazard_ratio_flags_no_harm_without_one():
    rng = np.random.default_rng(22)
    times = [rng.exponential(50.0, size=1_000) for _ in range(2)]
    result = churn_hazard_ratio(np.minimum(times[0], 60), times[0] < 60, np.minimum(times[1], 60), times[1] < 60)
    assert result.lower < 1.0 < result.upper
    assert not result.harm


def test_rollback_rate_is_harmful_only_when_its_interval_clears_the_tolerance():
    assert rollback_rate(1_000, 80, tolerance=0.02).harm
    assert not rollback_rate(1_000, 25, tolerance=0.02).harm
    assert not rollback_rate(20, 1, tolerance=0.02).harm  # 5% of 20 is noise
    with pytest.raises(NotEnoughData, match="redeemed"):
        rollback_rate(0, 0)
