"""Held-out uplift claims: the Qini interval, cross-fitting folds, and choices valued on randomised outcomes.

Checked against planted truth over many seeds: the intervals cover what was planted about as
often as they claim, and a ranking that knows nothing is not declared better than chance.
"""

import numpy as np
import pytest

from analytics.stats.uplift import uplift_curves
from analytics.stats.uplift_validation import (
    RandomisedRows,
    compare_choices,
    crossfit_folds,
    margin_terms,
    qini_interval,
)


def _experiment(rng: np.random.Generator, n: int):
    """A randomised experiment: x uniform, base conversion 10%, the offer adds 0.2 * x (half the users treated)."""
    x = rng.random(n)
    treated = rng.random(n) < 0.5
    converted = (rng.random(n) < 0.10 + 0.20 * x * treated).astype(float)
    return x, treated, converted


def test_the_point_estimate_is_uplift_curves_qini_coefficient_ties_included():
    rng = np.random.default_rng(3)
    x, treated, converted = _experiment(rng, 3000)
    for score in (x, np.round(x, 1), -x):
        expected = uplift_curves(score, treated, converted, n_points=21).qini_coefficient
        assert qini_interval(score, treated, converted, n_points=21, replicates=50).coefficient == pytest.approx(
            expected, abs=1e-12
        )


def test_the_qini_interval_covers_the_planted_coefficient_about_95_times_in_100():
    # given the Qini coefficient of ranking by x in a planted world, measured on 1,000,000 users
    truth = uplift_curves(*_experiment(np.random.default_rng(0), 1_000_000)).qini_coefficient
    assert truth > 0.004

    # when 100 experiments of 3,000 users each get a 95% interval (200 bootstrap replicates each)
    covered, above_zero = 0, 0
    for seed in range(1, 101):
        interval = qini_interval(*_experiment(np.random.default_rng(seed), 3000), replicates=200, seed=seed)
        covered += interval.lower <= truth <= interval.upper
        above_zero += interval.above_zero

    # then about 95 in 100 cover it (the percentile bootstrap of a ranking statistic runs a little narrow)
    assert 88 <= covered <= 99, covered
    # and a ranking this good is shown to beat chance in most experiments
    assert above_zero >= 75, above_zero


def test_a_ranking_that_knows_nothing_is_rarely_declared_better_than_chance():
    # given 100 experiments whose offer changes everyone alike, ranked by a score unrelated to anything
    declared = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        treated = rng.random(3000) < 0.5
        converted = (rng.random(3000) < 0.10 + 0.05 * treated).astype(float)
        declared += qini_interval(rng.random(3000), treated, converted, replicates=200, seed=seed).above_zero

    # then the interval lies above zero in at most 6 of them (2.5% nominal: one side of a 95% interval)
    assert declared <= 6, declared


def test_folds_are_stable_balanced_and_keep_a_users_rows_together():
    ids = np.arange(1, 30_001)
    folds = crossfit_folds(ids, 5)
    assert set(folds.tolist()) == {0, 1, 2, 3, 4}
    assert np.all(np.abs(np.bincount(folds) - 6000) < 300)
    assert np.array_equal(folds, crossfit_folds(ids, 5))
    repeated = np.array([7, 7, 7, 12, 12])
    assert len(set(crossfit_folds(repeated, 5)[:3].tolist())) == 1
    with pytest.raises(ValueError):
        crossfit_folds(ids, 1)


def _randomised(rng: np.random.Generator, n: int):
    """Two packages, each randomised with its own treatment share; x sets who each package changes."""
    x = rng.random(n)
    package = (rng.random(n) < 0.5).astype(int)  # which package each user's experiment randomised
    share = np.where(package == 0, 0.8, 0.6)
    treated = rng.random(n) < share
    base = 0.10
    uplift = np.where(package == 0, 0.25 * x, 0.25 * (1 - x))
    converted = (rng.random(n) < base + uplift * treated).astype(float)
    informative = np.column_stack([package == 0, package == 1])
    shares = np.column_stack([np.full(n, 0.8), np.full(n, 0.6)])
    rows = RandomisedRows(treated=treated, share=shares, converted=converted, informative=informative)
    return x, rows


PRICE, DISCOUNT, COST = 100.0, np.array([20.0, 10.0]), np.array([23.0, 35.0])


def _true_per_cny(x: np.ndarray, choice: np.ndarray) -> float:
    """Return the planted incremental margin per CNY of giving each user the chosen package (-1: nothing)."""
    uplift = np.column_stack([0.25 * x, 0.25 * (1 - x)])
    rows = np.flatnonzero(choice >= 0)
    j = choice[rows]
    margin = (0.10 + uplift[rows, j]) * (PRICE - DISCOUNT[j]) - 0.10 * PRICE
    return float(margin.sum() / COST[j].sum())


def test_the_horvitz_thompson_term_averages_to_the_planted_incremental_margin():
    x, rows = _randomised(np.random.default_rng(5), 400_000)
    terms = margin_terms(rows, price=PRICE, discount=DISCOUNT)
    first = rows.informative[:, 0]
    expected = (0.10 + 0.25 * x[first]) * (PRICE - DISCOUNT[0]) - 0.10 * PRICE
    assert terms[first, 0].mean() == pytest.approx(expected.mean(), abs=0.1)
    assert not terms[~first, 0].any()


def test_choices_valued_on_randomised_outcomes_cover_the_planted_margin_per_cny_and_their_difference():
    # given a rule that gives everyone package 0, and a choice that gives each user the package that changes them
    covered = {"rules": 0, "chosen": 0, "difference": 0}
    positive = 0
    for seed in range(100):
        x, rows = _randomised(np.random.default_rng(100 + seed), 6000)
        rules = np.zeros(len(x), dtype=np.int64)
        chosen = np.where(x > 0.5, 0, 1)

        # when both are valued on the randomised outcomes (each counts the users whose experiment randomised its pick)
        result = compare_choices(
            rows, rules, chosen, price=PRICE, discount=DISCOUNT, cost=COST, replicates=200, seed=seed
        )

        # then the intervals cover the planted margin per CNY of each choice over the users it counts
        counted_rules = np.where(rows.informative[:, 0], rules, -1)
        counted_chosen = np.where(rows.informative[np.arange(len(x)), chosen], chosen, -1)
        truth = {"rules": _true_per_cny(x, counted_rules), "chosen": _true_per_cny(x, counted_chosen)}
        assert result.first.lower is not None and result.first.upper is not None
        assert result.second.lower is not None and result.second.upper is not None
        assert result.difference_lower is not None and result.difference_upper is not None
        covered["rules"] += result.first.lower <= truth["rules"] <= result.first.upper
        covered["chosen"] += result.second.lower <= truth["chosen"] <= result.second.upper
        difference = truth["chosen"] - truth["rules"]
        covered["difference"] += result.difference_lower <= difference <= result.difference_upper
        positive += result.difference_lower > 0
    for name, count in covered.items():
        assert 88 <= count <= 99, (name, count)
    # and the better choice is shown to be better in most experiments
    assert positive >= 60, positive
