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
