"""The ROI interval's margin difference: a hybrid score interval, Newcombe's where margins are 0 and 1."""

from decimal import Decimal

import numpy as np
import pytest

from analytics.stats.effects import newcombe_interval, wilson_interval
from analytics.stats.returns import (
    INTERVAL_METHOD,
    WELCH_METHOD,
    margin_difference_interval,
    mean_score_interval,
    spend_return,
)

# Newcombe (1998) Table II, method 10, the examples where at least one arm converted (with no buyer in
# either arm a margin's spread is unknown, as a 0/1 outcome's is not); tests/analytics/test_effects.py
# checks newcombe_interval against the published figures.
WITH_A_BUYER = [(56, 70, 48, 80), (9, 10, 3, 10), (6, 7, 2, 7), (5, 56, 0, 29), (10, 10, 0, 20), (10, 10, 0, 10)]


def _zeros_and_ones(successes: int, trials: int) -> np.ndarray:
    return np.r_[np.ones(successes), np.zeros(trials - successes)]


@pytest.mark.parametrize("counts", WITH_A_BUYER)
def test_with_margins_of_zero_and_one_it_is_newcombes_interval(counts):
    treated_successes, treated_users, control_successes, control_users = counts

    lower, upper = margin_difference_interval(
        _zeros_and_ones(treated_successes, treated_users), _zeros_and_ones(control_successes, control_users)
    )

    assert (lower, upper) == pytest.approx(tuple(float(bound) for bound in newcombe_interval(*counts)), abs=1e-12)


@pytest.mark.parametrize(("successes", "trials"), [(0, 30), (1, 30), (7, 30), (30, 30), (3, 400)])
def test_one_arm_of_zeros_and_ones_gets_wilsons_interval(successes, trials):
    # An arm of zeros is given the spread of a 0/1 outcome (k = 1), as Wilson's interval assumes.
    ratio = 1.0 if successes == 0 else None
    bounds = mean_score_interval(_zeros_and_ones(successes, trials), second_moment_ratio=ratio)

    assert bounds == pytest.approx(tuple(float(bound) for bound in wilson_interval(successes, trials)), abs=1e-12)


def test_the_interval_is_in_the_units_of_the_margin():
    rng = np.random.default_rng(4)
    treated = rng.binomial(1, 0.05, 2_000) * rng.gamma(16, 1 / 16, 2_000)
    control = rng.binomial(1, 0.02, 300) * rng.gamma(16, 1 / 16, 300)

    in_yuan = margin_difference_interval(treated * 199, control * 199)

    assert in_yuan == pytest.approx(tuple(199 * bound for bound in margin_difference_interval(treated, control)))


def test_a_holdout_where_few_bought_is_not_read_as_certain():
    # given a holdout of 300 users of whom 2 bought, and a large treated arm
    rng = np.random.default_rng(8)
    treated = rng.binomial(1, 0.06, 2_000) * np.round(199 * rng.gamma(16, 1 / 16, 2_000), 2)
    control = np.zeros(300)
    control[:2] = [190.0, 210.0]

    lower, upper = margin_difference_interval(treated, control)

    # then the interval reaches further below the estimate than above it: the holdout may well buy more than it did
    difference = treated.mean() - control.mean()
    assert difference - lower > upper - difference > 0
    # and a holdout where nobody bought still leaves room for some buying (the treated buyers' order sizes)
    nobody_lower, _ = margin_difference_interval(treated, np.zeros(300))
    assert nobody_lower < treated.mean() - 1.0


def test_the_report_says_which_interval_it_shows():
    treated = [Decimal("0.00")] * 90 + [Decimal("199.00")] * 10
    control = [Decimal("0.00")] * 48 + [Decimal("150.00"), Decimal("210.00")]

    score = spend_return(Decimal("300.00"), treated, control)
    welch = spend_return(Decimal("300.00"), treated, [*control[:-1], Decimal("-5.00")])

    assert score.interval_method == INTERVAL_METHOD and score.to_dict()["interval_method"] == INTERVAL_METHOD
    assert welch.interval_method == WELCH_METHOD
    # the ROI interval holds the estimate, and reaches further down than up (the holdout's two buyers)
    assert score.roi is not None and score.roi_lower is not None and score.roi_upper is not None
    assert score.roi_lower < score.roi < score.roi_upper
    assert score.roi - score.roi_lower > score.roi_upper - score.roi


def test_a_running_campaigns_margin_interval_is_the_always_valid_one_of_the_margin_difference_scaled_to_the_arm():
    from analytics.stats.experiments import always_valid_interval, difference_variance

    # given 800 treated and 200 held-out users, 10% and 6% of whom bought, with some coupon margin observed
    rng = np.random.default_rng(12)
    treated = np.where(rng.random(800) < 0.10, rng.gamma(3.0, 40.0, 800), 0.0).round(2)
    held = np.where(rng.random(200) < 0.06, rng.gamma(3.0, 40.0, 200), 0.0).round(2)
    margins_t, margins_c = [Decimal(f"{value:.2f}") for value in treated], [Decimal(f"{value:.2f}") for value in held]

    # when the return is set against 1,500 CNY spent while the campaign runs
    running = spend_return("1500.00", margins_t, margins_c, 0.95, observed_margin="120.00", always_valid=True)
    ended = spend_return("1500.00", margins_t, margins_c, 0.95, observed_margin="120.00")

    # then its interval is the mixture SPRT's on the margin per user's difference (the revenue interval the daily
    # A/A looks of tests/analytics/test_experiments.py hold to 5%), scaled to the treated users, around the same
    # incremental margin as the fixed-horizon one, and wider than it: the price of reading it every day
    difference, variance = difference_variance(treated, held)
    half = always_valid_interval(difference, variance, 1_000, confidence=0.95).upper - difference
    assert float(running.incremental_margin) == pytest.approx(difference * 800 + 120, abs=0.01)
    assert float(running.incremental_margin_upper - running.incremental_margin) == pytest.approx(half * 800, abs=0.01)
    assert float(running.incremental_margin - running.incremental_margin_lower) == pytest.approx(half * 800, abs=0.01)
    assert running.incremental_margin == ended.incremental_margin and running.roi == ended.roi
    assert running.roi_lower is not None and running.roi_upper is not None
    assert ended.roi_lower is not None and ended.roi_upper is not None
    assert running.roi_lower < ended.roi_lower and running.roi_upper > ended.roi_upper
    assert (running.interval_kind, ended.interval_kind) == ("always-valid", "fixed-horizon")


def test_a_running_campaign_whose_users_all_have_the_same_margin_gets_the_score_interval_named_fixed_horizon():
    # given nobody bought yet in either arm: no variance for an always-valid interval to work with
    running = spend_return("30.00", [0] * 21, [0] * 9, 0.95, always_valid=True)
    # then the fixed-horizon interval is given, and the report says so and why
    ended = spend_return("30.00", [0] * 21, [0] * 9, 0.95)
    assert running.interval_kind == "fixed-horizon" and "no margin varies yet" in running.interval_method
    assert (running.incremental_margin_lower, running.incremental_margin_upper, running.roi) == (
        ended.incremental_margin_lower,
        ended.incremental_margin_upper,
        ended.roi,
    )


def test_a_running_campaigns_margin_interval_holds_the_fixed_horizon_one_when_the_holdout_has_no_buyer_yet():
    # given 5,000 treated users of whom 5% bought and 100 held out of whom none did yet
    rng = np.random.default_rng(4)
    treated = [
        Decimal(f"{value:.2f}") for value in np.where(rng.random(5_000) < 0.05, rng.gamma(3.0, 40.0, 5_000), 0.0)
    ]
    held = [Decimal("0.00")] * 100

    # when the return is read while the campaign runs, and once it has settled
    running = spend_return("2000.00", treated, held, 0.95, always_valid=True)
    ended = spend_return("2000.00", treated, held, 0.95)

    # then the running interval is no narrower on either side: a holdout without buyers is not read as certain
    assert running.interval_kind == "always-valid"
    assert running.incremental_margin_lower <= ended.incremental_margin_lower
    assert running.incremental_margin_upper >= ended.incremental_margin_upper
    assert running.roi_lower is not None and ended.roi_lower is not None
    assert running.roi_lower <= ended.roi_lower
