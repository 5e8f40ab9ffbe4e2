"""Check the Markov-chain CLV against closed forms and simulated chains."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from analytics.stats.markov_clv import (
    activity_states,
    current_states,
    customer_lifetime_values,
    estimate_transition_matrix,
    expected_margin_per_state,
    state_lifetime_values,
    state_matrix_from_long_table,
)

STATES = ("active", "lapsed", "churned")
TRUE_TRANSITIONS = np.array(
    [
        [0.70, 0.25, 0.05],
        [0.30, 0.50, 0.20],
        [0.00, 0.00, 1.00],
    ]
)


def simulate_state_matrix(
    rng: np.random.Generator, transition_matrix: np.ndarray, *, n_customers: int, n_months: int
) -> np.ndarray:
    """Simulate monthly state labels; customers join in a random month, starting active."""
    cumulative = transition_matrix.cumsum(axis=1)
    joined_in = rng.integers(0, n_months // 2, size=n_customers)
    codes = np.zeros((n_customers, n_months), dtype=int)
    for month in range(1, n_months):
        draws = rng.random(n_customers)[:, np.newaxis]
        moved = (draws > cumulative[codes[:, month - 1]]).sum(axis=1)
        codes[:, month] = np.where(month > joined_in, moved, 0)
    labels = np.array(STATES, dtype=object)[codes]
    labels[np.arange(n_months) < joined_in[:, np.newaxis]] = None
    return labels


def test_estimated_transition_matrix_recovers_the_simulated_one() -> None:
    rng = np.random.default_rng(2000)
    labels = simulate_state_matrix(rng, TRUE_TRANSITIONS, n_customers=20_000, n_months=24)

    model = estimate_transition_matrix(labels, states=STATES, absorbing_states=("churned",))

    transitions_observed = model.transition_counts.sum(axis=1, keepdims=True)
    binomial_se = np.sqrt(TRUE_TRANSITIONS * (1 - TRUE_TRANSITIONS) / transitions_observed)
    assert np.all(np.abs(model.transition_matrix - TRUE_TRANSITIONS) <= 4 * binomial_se + 1e-12)
    np.testing.assert_allclose(model.transition_matrix, TRUE_TRANSITIONS, atol=0.01)
    assert model.ignored_exits_from_absorbing == 0
    np.testing.assert_allclose(model.transition_matrix.sum(axis=1), 1.0)


def test_two_state_value_has_the_textbook_retention_closed_form() -> None:
    """Active customers stay with probability r and earn m a month; churn is final.

    With monthly discount rate i, the value of the months ahead is the
    geometric series m * sum_k (r / (1 + i))^k = m * r / (1 + i - r), or
    m * q (1 - q^H) / (1 - q) with q = r / (1 + i) over H months.
    """
    retention, margin, annual_rate = 0.8, 100.0, 0.12
    monthly_rate = 1.12 ** (1 / 12) - 1
    transition = [[retention, 1 - retention], [0.0, 1.0]]
    q = retention / (1 + monthly_rate)

    forever = state_lifetime_values(transition, [margin, 0.0], annual_discount_rate=annual_rate, horizon_months=None)
    np.testing.assert_allclose(forever, [margin * retention / (1 + monthly_rate - retention), 0.0], rtol=1e-12)

    two_years = state_lifetime_values(transition, [margin, 0.0], annual_discount_rate=annual_rate, horizon_months=24)
    np.testing.assert_allclose(two_years, [margin * q * (1 - q**24) / (1 - q), 0.0], rtol=1e-12)

    undiscounted = state_lifetime_values(transition, [margin, 0.0], annual_discount_rate=0.0, horizon_months=3)
    np.testing.assert_allclose(undiscounted, [margin * (0.8 + 0.64 + 0.512), 0.0], rtol=1e-12)


def test_long_finite_horizon_converges_to_the_infinite_one() -> None:
    margin = np.array([120.0, 15.0, 0.0])
    kwargs = {"annual_discount_rate": 0.08}
    finite = state_lifetime_values(TRUE_TRANSITIONS, margin, horizon_months=1200, **kwargs)
    infinite = state_lifetime_values(TRUE_TRANSITIONS, margin, horizon_months=None, **kwargs)
    np.testing.assert_allclose(finite, infinite, rtol=1e-9)
    with pytest.raises(ValueError, match="positive discount rate"):
        state_lifetime_values(TRUE_TRANSITIONS, margin, annual_discount_rate=0.0, horizon_months=None)


def test_activity_states_follow_the_documented_thresholds() -> None:
    spend = [
        [0, 50, 0, 0, 0, 20, 0],
        [3, 10, 0, 4, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ]
    labels = activity_states(spend, active_spend_threshold=5, churn_after_inactive_months=3)
    assert labels.tolist() == [
        [None, "active", "lapsed", "lapsed", "churned", "active", "lapsed"],
        [None, "active", "lapsed", "lapsed", "churned", "churned", "churned"],
        [None] * 7,
    ]


def test_activity_states_accept_decimal_and_missing_spend() -> None:
    spend = np.array([[Decimal("0.00"), Decimal("12.30"), None]], dtype=object)
    assert activity_states(spend, churn_after_inactive_months=1).tolist() == [[None, "active", "churned"]]


def test_counts_smoothing_and_absorbing_rows_by_hand() -> None:
    labels = [
        ["active", "active", "lapsed", "churned", "active"],  # ends with a forbidden comeback
        [None, "active", "lapsed", "active", None],
    ]
    plain = estimate_transition_matrix(labels, states=STATES)
    np.testing.assert_array_equal(plain.transition_counts, [[1, 2, 0], [1, 0, 1], [1, 0, 0]])
    np.testing.assert_allclose(plain.transition_matrix, [[1 / 3, 2 / 3, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0]])
    assert plain.ignored_exits_from_absorbing == 1

    laplace = estimate_transition_matrix(labels, states=STATES, smoothing=1.0)
    np.testing.assert_allclose(
        laplace.transition_matrix, [[2 / 6, 3 / 6, 1 / 6], [2 / 5, 1 / 5, 2 / 5], [0.0, 0.0, 1.0]]
    )

    comebacks_allowed = estimate_transition_matrix(labels, states=STATES, absorbing_states=())
    np.testing.assert_allclose(comebacks_allowed.transition_matrix[2], [1, 0, 0])


def test_estimation_rejects_unknown_labels_and_unseen_states() -> None:
    with pytest.raises(ValueError, match="not among the states"):
        estimate_transition_matrix([["active", "sleeping"]], states=STATES)
    with pytest.raises(ValueError, match="no transitions observed"):
        estimate_transition_matrix([["active", "active"]], states=STATES)


def test_long_table_leaves_missing_months_unobserved() -> None:
    wide = state_matrix_from_long_table(
        customer_ids=["a", "a", "a", "b"],
        months=["2024-01-15", "2024-02-03", "2024-04-30", "2024-03-01"],
        state_labels=["active", "lapsed", "active", "active"],
    )
    assert [str(month) for month in wide.columns] == ["2024-01", "2024-02", "2024-03", "2024-04"]
    assert pd.isna(wide.loc["a", pd.Period("2024-03", freq="M")])

    model = estimate_transition_matrix(wide, states=STATES, smoothing=1.0)
    # Only a's January -> February move is observed; the gap breaks the rest.
    assert model.transition_counts.sum() == 1
    assert current_states(wide).tolist() == ["active", "active"]


def test_customer_values_from_spend_end_to_end() -> None:
    monthly_spend = np.array(
        [
            [100, 120, 0, 80, 90, 110],
            [0, 60, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [50, 0, 0, 70, 0, 0],
        ],
        dtype=float,
    )
    labels = activity_states(monthly_spend, churn_after_inactive_months=3)
    model = estimate_transition_matrix(labels, states=STATES, smoothing=1.0)
    margin = expected_margin_per_state(labels, monthly_spend, states=STATES, margin_fraction=0.25)
    np.testing.assert_allclose(margin, [0.25 * float(np.mean([100, 120, 80, 90, 110, 60, 50, 70])), 0.0, 0.0])

    by_state = state_lifetime_values(model.transition_matrix, margin, annual_discount_rate=0.1, horizon_months=12)
    values = customer_lifetime_values(current_states(labels), by_state, states=STATES)

    assert values[0] == pytest.approx(by_state[0])  # active now
    assert values[1] == 0.0  # churned: absorbing, earns nothing
    assert np.isnan(values[2])  # never bought
    assert values[3] == pytest.approx(by_state[1])  # lapsed: two quiet months so far
    assert by_state[0] > by_state[1] > 0


def test_long_table_accepts_periods_and_aware_timestamps() -> None:
    shanghai_new_year = pd.Timestamp("2024-01-01 00:30", tz="Asia/Shanghai")  # still 2023 in UTC
    wide = state_matrix_from_long_table(
        customer_ids=["a", "b"],
        months=[shanghai_new_year, shanghai_new_year],
        state_labels=["active", "lapsed"],
    )
    assert [str(month) for month in wide.columns] == ["2024-01"]

    periods = state_matrix_from_long_table(
        customer_ids=["a", "a"],
        months=[pd.Period("2024-01", freq="M"), pd.Period("2024-02", freq="M")],
        state_labels=["active", "churned"],
    )
    assert periods.loc["a"].tolist() == ["active", "churned"]
