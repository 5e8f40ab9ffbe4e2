"""Estimate customer lifetime value with a Markov chain over monthly activity states.

Pure numerical code (numpy, pandas); nothing here imports Django.

The model (Pfeifer & Carraway 2000, "Modeling customer relationships as
Markov chains") puts every customer in one state per month, e.g. "active",
"lapsed" or "churned". Month-to-month moves follow a transition matrix P
estimated from observed sequences, each state earns an expected margin per
month R, and a customer's value is the discounted expected margin of the
months ahead:

    CLV(horizon H) = sum_{k=1..H} (d P)^k R,     d = monthly discount factor,
    CLV(infinite)  = (I - d P)^-1 d P R.

The current month is not included: its margin is already observed.

State sequences are 2-D (customers x consecutive months) arrays of state
labels; a missing label (None or NaN) means "not observed", e.g. before the
customer's first purchase, and transitions touching it are not counted.
Money is float64 in the currency of the input (CNY in crossmkt); Decimal
inputs are converted on the way in and returned values are unrounded floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]

ACTIVE = "active"
LAPSED = "lapsed"
CHURNED = "churned"
DEFAULT_STATES: tuple[str, ...] = (ACTIVE, LAPSED, CHURNED)
MONTHS_PER_YEAR = 12


# --------------------------------------------------------------------------
# Monthly activity -> states
# --------------------------------------------------------------------------


def activity_states(
    monthly_spend: npt.ArrayLike,
    *,
    active_spend_threshold: float = 0.0,
    churn_after_inactive_months: int = 6,
) -> np.ndarray:
    """Label each customer-month "active", "lapsed" or "churned" from monthly spend.

    ``monthly_spend`` is customers x consecutive months (0 or NaN for no
    purchase; Decimal accepted). The thresholds:

    * a month is **active** when its spend is strictly greater than
      ``active_spend_threshold`` (default 0: any purchase counts);
    * a month after the customer's last active month is **lapsed** while
      fewer than ``churn_after_inactive_months`` months in a row have passed
      without activity, and **churned** from that many months on;
    * months before the customer's first active month are None (not yet a
      customer).

    A churned customer who buys again is labelled active again: the labels
    record what happened. Whether the model lets churned customers come back
    is decided by ``absorbing_states`` in :func:`estimate_transition_matrix`.
    Returns an object array of labels with the input's shape.
    """
    if churn_after_inactive_months < 1:
        raise ValueError("churn_after_inactive_months must be at least 1")
    spend = np.nan_to_num(np.asarray(monthly_spend, dtype=np.float64), nan=0.0)
    if spend.ndim != 2:
        raise ValueError("monthly_spend must be a 2-D customers x months array")

    month_numbers = np.arange(spend.shape[1])
    active = spend > active_spend_threshold
    # Index of the latest active month up to each month; -1 before the first.
    last_active_month = np.maximum.accumulate(np.where(active, month_numbers, -1), axis=1)
    months_inactive = month_numbers - last_active_month

    labels = np.full(spend.shape, None, dtype=object)
    is_customer = last_active_month >= 0
    labels[is_customer & (months_inactive == 0)] = ACTIVE
    labels[is_customer & (months_inactive > 0) & (months_inactive < churn_after_inactive_months)] = LAPSED
    labels[is_customer & (months_inactive >= churn_after_inactive_months)] = CHURNED
    return labels


def state_matrix_from_long_table(
    customer_ids: npt.ArrayLike,
    months: npt.ArrayLike,
    state_labels: npt.ArrayLike,
) -> pd.DataFrame:
    """Pivot a long (customer, month, state) table into a customers x months frame.

    ``months`` may be dates, month strings ("2024-03") or monthly Periods;
    each is reduced to its calendar month. Columns span every month from the
    earliest to the latest, so a month missing from the table becomes an
    unobserved (NaN) cell rather than silently joining its neighbours.
    """
    table = pd.DataFrame(
        {
            "customer": np.asarray(customer_ids),
            "month": _calendar_months(months),
            "state": np.asarray(state_labels, dtype=object),
        }
    )
    if table.duplicated(["customer", "month"]).any():
        raise ValueError("each customer may have at most one state per month")
    wide = table.pivot(index="customer", columns="month", values="state")
    every_month = pd.period_range(table["month"].min(), table["month"].max(), freq="M")
    return wide.reindex(columns=every_month)


def _calendar_months(values: npt.ArrayLike) -> pd.PeriodIndex:
    """Reduce dates, timestamps, month strings or Periods to monthly Periods."""
    series = pd.Series(values)
    if isinstance(series.dtype, pd.PeriodDtype):
        return pd.PeriodIndex(series.dt.asfreq("M"))
    timestamps = pd.to_datetime(series)
    if timestamps.dt.tz is not None:
        # Keep local wall time: the month is the one the customer saw.
        timestamps = timestamps.dt.tz_localize(None)
    return pd.PeriodIndex(timestamps.dt.to_period("M"))


def current_states(state_matrix: npt.ArrayLike | pd.DataFrame) -> np.ndarray:
    """Return each customer's latest observed state label (None when never observed)."""
    labels = np.asarray(state_matrix, dtype=object)
    if labels.ndim != 2:
        raise ValueError("state_matrix must be a 2-D customers x months array")
    observed: npt.NDArray[np.bool_] = ~pd.isna(labels)
    if labels.shape[1] == 0:
        return np.full(labels.shape[0], None, dtype=object)
    months_after_last = np.argmax(observed[:, ::-1], axis=1)
    last_observed = labels.shape[1] - 1 - months_after_last
    latest: npt.NDArray[np.object_] = labels[np.arange(labels.shape[0]), last_observed]
    latest[~observed.any(axis=1)] = None
    return latest


# --------------------------------------------------------------------------
# Transition matrix and margins
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MarkovChainModel:
    """Hold an estimated monthly transition matrix over named states.

    ``transition_matrix[i, j]`` is P(next month in ``states[j]`` | this month
    in ``states[i]``); rows sum to one. ``transition_counts`` are the raw
    observed counts, before smoothing and before absorbing rows are imposed.
    ``ignored_exits_from_absorbing`` counts observed moves out of absorbing
    states, which the model does not allow: many of them mean the churn
    threshold is too short for this business.
    """

    states: tuple[str, ...]
    absorbing_states: tuple[str, ...]
    transition_matrix: FloatArray
    transition_counts: npt.NDArray[np.int64]
    ignored_exits_from_absorbing: int


def estimate_transition_matrix(
    state_matrix: npt.ArrayLike | pd.DataFrame,
    *,
    states: Sequence[str] = DEFAULT_STATES,
    absorbing_states: Sequence[str] = (CHURNED,),
    smoothing: float = 0.0,
) -> MarkovChainModel:
    """Estimate the monthly transition matrix by counting month-to-month transitions.

    ``state_matrix`` is customers x consecutive months of labels from
    ``states`` (unobserved cells: None/NaN). Each row of P is its
    transition counts plus ``smoothing`` pseudo-counts per cell (1.0 is
    Laplace smoothing, 0.0 the plain maximum-likelihood estimate),
    normalised. Rows of ``absorbing_states`` are fixed to "stay put".
    """
    states = tuple(states)
    absorbing_states = tuple(absorbing_states)
    if unknown := set(absorbing_states) - set(states):
        raise ValueError(f"absorbing states {sorted(unknown)} are not among the states")
    if smoothing < 0:
        raise ValueError("smoothing must be non-negative")

    codes = _state_codes(state_matrix, states)
    from_codes, to_codes = codes[:, :-1].ravel(), codes[:, 1:].ravel()
    both_observed = (from_codes >= 0) & (to_codes >= 0)
    n_states = len(states)
    counts = np.bincount(from_codes[both_observed] * n_states + to_codes[both_observed], minlength=n_states**2).reshape(
        n_states, n_states
    )

    pseudo_counts = counts + smoothing
    absorbing = np.isin(states, absorbing_states)
    row_totals = pseudo_counts.sum(axis=1)
    if unseen := [
        state for state, total, fixed in zip(states, row_totals, absorbing, strict=True) if total == 0 and not fixed
    ]:
        raise ValueError(f"no transitions observed out of {unseen}; add smoothing or drop those states")
    with np.errstate(invalid="ignore", divide="ignore"):
        transition_matrix = pseudo_counts / row_totals[:, np.newaxis]
    transition_matrix[absorbing] = np.eye(n_states)[absorbing]
    ignored_exits = int(counts[absorbing].sum() - np.trace(counts[np.ix_(absorbing, absorbing)]))

    transition_matrix.setflags(write=False)
    counts.setflags(write=False)
    return MarkovChainModel(
        states=states,
        absorbing_states=absorbing_states,
        transition_matrix=transition_matrix,
        transition_counts=counts,
        ignored_exits_from_absorbing=ignored_exits,
    )


def expected_margin_per_state(
    state_matrix: npt.ArrayLike | pd.DataFrame,
    monthly_spend: npt.ArrayLike,
    *,
    states: Sequence[str] = DEFAULT_STATES,
    margin_fraction: float,
) -> FloatArray:
    """Return the mean monthly margin earned in each state, in ``states`` order.

    The mean is over all observed customer-months in the state; missing
    spend counts as 0. A state never observed gets 0 margin.
    """
    codes = _state_codes(state_matrix, tuple(states)).ravel()
    spend = np.nan_to_num(np.asarray(monthly_spend, dtype=np.float64), nan=0.0).ravel()
    if spend.shape != codes.shape:
        raise ValueError("state_matrix and monthly_spend must have the same shape")
    observed = codes >= 0
    totals = np.bincount(codes[observed], weights=spend[observed], minlength=len(states))
    months = np.bincount(codes[observed], minlength=len(states))
    mean_spend = np.divide(totals, months, out=np.zeros(len(states)), where=months > 0)
    return margin_fraction * mean_spend


def _state_codes(state_matrix: npt.ArrayLike | pd.DataFrame, states: tuple[str, ...]) -> npt.NDArray[np.int64]:
    """Map labels to indices into ``states``; unobserved cells become -1, unknown labels raise."""
    labels = np.asarray(state_matrix, dtype=object)
    if labels.ndim != 2:
        raise ValueError("state_matrix must be a 2-D customers x months array")
    codes: npt.NDArray[np.int64] = pd.Categorical(labels.ravel(), categories=list(states)).codes.astype(np.int64)
    unknown = (codes < 0) & ~pd.isna(labels.ravel())
    if unknown.any():
        raise ValueError(f"labels not among the states: {sorted(set(labels.ravel()[unknown]))}")
    return codes.reshape(labels.shape)


# --------------------------------------------------------------------------
# Lifetime value
# --------------------------------------------------------------------------


def state_lifetime_values(
    transition_matrix: npt.ArrayLike,
    margin_per_state: npt.ArrayLike,
    *,
    annual_discount_rate: float,
    horizon_months: int | None,
) -> FloatArray:
    """Return the discounted expected margin of the months ahead for each starting state.

    Margin earned k months from now is discounted by d^k with
    d = (1 + annual_discount_rate) ** (-1/12). With ``horizon_months`` None
    the sum runs forever, which needs a positive discount rate; otherwise
    it covers months 1..horizon_months. Values are unrounded floats in the
    currency of ``margin_per_state``.
    """
    transition = np.asarray(transition_matrix, dtype=np.float64)
    margin = _as_float_array(margin_per_state)
    if transition.shape != (len(margin), len(margin)):
        raise ValueError("transition_matrix must be square with one row per margin_per_state entry")
    if annual_discount_rate <= -1:
        raise ValueError("annual_discount_rate must exceed -100%")
    discounted_transition = (1 + annual_discount_rate) ** (-1 / MONTHS_PER_YEAR) * transition

    if horizon_months is None:
        if annual_discount_rate <= 0:
            raise ValueError("an infinite horizon needs a positive discount rate to converge")
        identity = np.eye(len(margin))
        return np.linalg.solve(identity - discounted_transition, discounted_transition @ margin)

    if horizon_months < 0:
        raise ValueError("horizon_months must be non-negative")
    # Accumulate (dP)^k R one month at a time: exact, and unlike the closed
    # form (I - dP)^-1 (dP - (dP)^(H+1)) R it also works without discounting.
    value = np.zeros_like(margin)
    margin_k_months_ahead = margin
    for _ in range(horizon_months):
        margin_k_months_ahead = discounted_transition @ margin_k_months_ahead
        value += margin_k_months_ahead
    return value


def customer_lifetime_values(
    current_state_labels: npt.ArrayLike,
    value_per_state: npt.ArrayLike,
    *,
    states: Sequence[str] = DEFAULT_STATES,
) -> FloatArray:
    """Return each customer's lifetime value: the value of the state they are in now.

    ``current_state_labels`` typically comes from :func:`current_states`;
    customers with no observed state (None) get NaN.
    """
    codes = _state_codes(np.asarray(current_state_labels, dtype=object)[:, np.newaxis], tuple(states)).ravel()
    values = _as_float_array(value_per_state)
    return np.where(codes >= 0, values[np.maximum(codes, 0)], np.nan)


def _as_float_array(values: npt.ArrayLike) -> FloatArray:
    """Convert numbers, including Decimal objects, to a float64 array."""
    return np.asarray(values, dtype=np.float64)
