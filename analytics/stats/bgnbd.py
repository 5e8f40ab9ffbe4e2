"""Estimate customer lifetime value with the BG/NBD purchase model and the Gamma-Gamma spend model.

Pure numerical code (numpy, scipy, pandas); nothing here imports Django.

Formulas and notation follow:

* Fader, Hardie & Lee (2005), "'Counting Your Customers' the Easy Way: An
  Alternative to the Pareto/NBD Model", Marketing Science 24(2) -- BG/NBD;
* Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves for
  Customer Base Analysis", Journal of Marketing Research 42(4), and Hardie's
  note "The Gamma-Gamma Model of Monetary Value" (2013) -- spend per purchase.

Time is measured in weeks. Per customer the models read

* ``frequency`` (the papers' x): repeat purchases, i.e. purchase days after the first;
* ``recency`` (t_x): weeks from the first purchase to the last one (0 when x = 0);
* ``age`` (T): weeks from the first purchase to the end of observation;
* ``average_repeat_spend`` (m_x): mean spend per repeat purchase day.

Money is handled as float64 in the currency of the input (CNY in crossmkt).
Decimal inputs are accepted and converted on the way in; every money value
returned is an unrounded float for the caller to quantize.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass
from datetime import date
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import optimize, special

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

FloatArray = npt.NDArray[np.float64]

DAYS_PER_WEEK = 7
WEEKS_PER_YEAR = 52

# Box for the log-parameters: wide enough for any sensible time unit, narrow
# enough that exp() cannot overflow while the optimiser explores.
_LOG_PARAMETER_BOUNDS = (np.log(1e-8), np.log(1e8))
# Step on the log scale for differencing the gradient into a Hessian: about
# the cube root of machine epsilon, the usual balance for central differences.
_HESSIAN_LOG_STEP = 1e-5


# --------------------------------------------------------------------------
# Transaction log -> (x, t_x, T, m_x)
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PurchaseSummary:
    """Hold the per-customer repeat-purchase summary, aligned with the sorted ``customer_ids``."""

    customer_ids: np.ndarray
    frequency: FloatArray
    recency: FloatArray
    age: FloatArray
    # Mean spend per repeat purchase day; NaN for customers without repeat
    # purchases, and None altogether when no amounts were given.
    average_repeat_spend: FloatArray | None


def summarise_transactions(
    customer_ids: npt.ArrayLike,
    purchased_at: npt.ArrayLike,
    *,
    observation_end: str | date,
    amounts: npt.ArrayLike | None = None,
) -> PurchaseSummary:
    """Build the per-customer (x, t_x, T) summary, and optionally m_x, from a transaction log.

    Purchases are reduced to calendar days: several purchases on one day are
    one transaction (their amounts are added). ``observation_end`` is the last
    calendar day observed, inclusive; purchases on later days are ignored.
    The population is every customer with a purchase on or before that day.
    ``age`` runs from the first purchase day to ``observation_end``, so a
    customer whose first purchase is on 1 January and who is observed to
    30 September has T = 272 / 7 weeks, the convention of Fader and Hardie's
    CDNOW summary.

    Timestamps are cut to days in their own time zone: convert aware
    timestamps to the business time zone first (e.g. Asia/Shanghai).
    ``average_repeat_spend`` excludes the first purchase day, as in the
    RFM/CLV paper, because the first purchase is not a repeat transaction.
    """
    log = pd.DataFrame(
        {
            "customer": np.asarray(customer_ids),
            "day": _calendar_days(pd.Series(pd.DatetimeIndex(pd.to_datetime(purchased_at)))),
            "amount": 0.0 if amounts is None else _as_float_array(amounts),
        }
    )
    end_day = _calendar_days(pd.Series([pd.Timestamp(observation_end)])).iloc[0]
    observed = log[log["day"] <= end_day]

    daily_spend = observed.groupby(["customer", "day"], sort=True)["amount"].sum()
    per_customer = daily_spend.reset_index().groupby("customer", sort=True)
    first_day = per_customer["day"].min()
    last_day = per_customer["day"].max()
    purchase_days = per_customer["day"].size()
    one_week = pd.Timedelta(days=DAYS_PER_WEEK)

    frequency = (purchase_days - 1).to_numpy(dtype=np.float64)
    average_repeat_spend = None
    if amounts is not None:
        # Groups are sorted by day, so "first" is the first purchase day's spend.
        repeat_spend = per_customer["amount"].sum() - per_customer["amount"].first()
        with np.errstate(invalid="ignore", divide="ignore"):
            average_repeat_spend = np.where(frequency > 0, repeat_spend.to_numpy(dtype=np.float64) / frequency, np.nan)

    return PurchaseSummary(
        customer_ids=first_day.index.to_numpy(),
        frequency=frequency,
        recency=((last_day - first_day) / one_week).to_numpy(dtype=np.float64),
        age=((end_day - first_day) / one_week).to_numpy(dtype=np.float64),
        average_repeat_spend=average_repeat_spend,
    )


def _calendar_days(timestamps: pd.Series) -> pd.Series:
    """Reduce timestamps to naive midnights of their local calendar day."""
    if timestamps.dt.tz is not None:
        # Dropping the zone keeps local wall time, so day differences stay
        # whole days across daylight-saving changes.
        timestamps = timestamps.dt.tz_localize(None)
    return timestamps.dt.normalize()


def _as_float_array(values: npt.ArrayLike) -> FloatArray:
    """Convert numbers, including Decimal objects, to a float64 array."""
    return np.asarray(values, dtype=np.float64)


# --------------------------------------------------------------------------
# Maximum likelihood on the log scale, shared by both models
# --------------------------------------------------------------------------


Parameters = TypeVar("Parameters", bound="DataclassInstance")


@dataclass(frozen=True)
class MaximumLikelihoodFit(Generic[Parameters]):
    """Hold maximum-likelihood estimates with their standard errors and optimiser diagnostics.

    ``standard_errors`` has the parameters' shape; its entries are NaN when
    ``standard_error_note`` says why they could not be computed.
    """

    parameters: Parameters
    standard_errors: Parameters
    standard_error_note: str
    log_likelihood: float
    n_customers: int
    converged: bool
    iterations: int
    optimizer_message: str


LogLikelihoodWithGradient = Callable[[FloatArray], tuple[float, FloatArray]]


def _maximise_log_likelihood(
    log_likelihood: LogLikelihoodWithGradient,
    *,
    parameter_type: type[Parameters],
    initial: Parameters,
    n_customers: int,
) -> MaximumLikelihoodFit[Parameters]:
    """Maximise a log-likelihood of positive parameters by optimising their logarithms.

    ``log_likelihood`` returns the total log-likelihood and its gradient with
    respect to the (natural) parameters. Standard errors come from the inverse
    Hessian of the negative log-likelihood, obtained by central differences
    of the analytic gradient on the log scale and mapped back with the delta
    method (exact at the optimum, where the gradient vanishes).
    """

    def negative_on_log_scale(log_parameters: FloatArray) -> tuple[float, FloatArray]:
        parameters = np.exp(log_parameters)
        value, gradient = log_likelihood(parameters)
        return -value, -gradient * parameters

    def mean_negative_on_log_scale(log_parameters: FloatArray) -> tuple[float, FloatArray]:
        # Averaging keeps the objective O(1) whatever the sample size, so the
        # optimiser's absolute tolerances mean the same for 100 or 10^6 customers.
        value, gradient = negative_on_log_scale(log_parameters)
        return value / n_customers, gradient / n_customers

    initial_values = np.array(astuple(initial), dtype=np.float64)
    result = optimize.minimize(
        mean_negative_on_log_scale,
        np.log(initial_values),
        jac=True,
        method="SLSQP",
        bounds=[_LOG_PARAMETER_BOUNDS] * len(initial_values),
        options={"maxiter": 1000, "ftol": 1e-14},
    )
    log_estimates = result.x
    estimates = np.exp(log_estimates)
    at_bound = bool(np.any(np.isclose(log_estimates[:, np.newaxis], _LOG_PARAMETER_BOUNDS, rtol=0, atol=1e-6)))
    if at_bound:
        standard_errors = np.full_like(estimates, np.nan)
        note = "an estimate sits on the optimiser's bound: the likelihood has no interior maximum"
    else:
        hessian = _central_difference_jacobian(lambda point: negative_on_log_scale(point)[1], log_estimates)
        standard_errors, note = _standard_errors_from_log_scale_hessian(hessian, estimates)

    return MaximumLikelihoodFit(
        parameters=parameter_type(*estimates.tolist()),
        standard_errors=parameter_type(*standard_errors.tolist()),
        standard_error_note=note,
        log_likelihood=float(-result.fun * n_customers),
        n_customers=n_customers,
        converged=bool(result.success) and not at_bound,
        iterations=int(result.nit),
        optimizer_message=str(result.message),
    )


def _central_difference_jacobian(function: Callable[[FloatArray], FloatArray], point: FloatArray) -> FloatArray:
    """Differentiate a vector function by central differences and symmetrise the result."""
    columns = []
    for index in range(len(point)):
        step = np.zeros_like(point)
        step[index] = _HESSIAN_LOG_STEP
        columns.append((function(point + step) - function(point - step)) / (2 * _HESSIAN_LOG_STEP))
    jacobian = np.column_stack(columns)
    return (jacobian + jacobian.T) / 2


def _standard_errors_from_log_scale_hessian(hessian: FloatArray, estimates: FloatArray) -> tuple[FloatArray, str]:
    """Turn the log-scale Hessian of the negative log-likelihood into natural-scale errors."""
    try:
        np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        note = "Hessian of the negative log-likelihood is not positive definite at the estimate"
        return np.full_like(estimates, np.nan), note
    log_scale_variances = np.diag(np.linalg.inv(hessian))
    # Delta method: d(theta) = theta * d(log theta).
    return estimates * np.sqrt(log_scale_variances), ""


# --------------------------------------------------------------------------
# BG/NBD
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BgNbdParameters:
    """Hold BG/NBD parameters for predicting without refitting, e.g. rebuilt from storage.

    Purchase rates vary across customers as Gamma(r, alpha), with alpha in
    weeks; the drop-out probability after each repeat purchase as Beta(a, b).
    """

    r: float
    alpha: float
    a: float
    b: float


BgNbdFit = MaximumLikelihoodFit[BgNbdParameters]


def fit_bgnbd(
    *,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    age: npt.ArrayLike,
    initial: BgNbdParameters = BgNbdParameters(r=1.0, alpha=1.0, a=1.0, b=1.0),
) -> BgNbdFit:
    """Fit the BG/NBD model by maximum likelihood to per-customer (x, t_x, T) in weeks."""
    x, t_x, big_t = _validated_purchase_summary(frequency, recency, age)
    return _maximise_log_likelihood(
        lambda parameters: _bgnbd_log_likelihood(parameters, x, t_x, big_t),
        parameter_type=BgNbdParameters,
        initial=initial,
        n_customers=len(x),
    )


def _bgnbd_log_likelihood(
    parameters: FloatArray, x: FloatArray, t_x: FloatArray, big_t: FloatArray
) -> tuple[float, FloatArray]:
    """Return the BG/NBD log-likelihood (FHL 2005, eq. 6) and its gradient in (r, alpha, a, b)."""
    r, alpha, a, b = parameters
    has_repeats = x > 0
    # b + x - 1 is only used where x > 0, where it is >= b > 0; the
    # placeholder keeps log() quiet for the rows that are masked out.
    b_plus_x_minus_1 = np.where(has_repeats, b + x - 1, 1.0)

    log_alive_term = -(r + x) * np.log(alpha + big_t)
    log_dropout_term = np.where(
        has_repeats,
        np.log(a) - np.log(b_plus_x_minus_1) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    log_mixture = np.logaddexp(log_alive_term, log_dropout_term)
    per_customer = (
        special.gammaln(r + x)
        - special.gammaln(r)
        + r * np.log(alpha)
        + special.betaln(a, b + x)
        - special.betaln(a, b)
        + log_mixture
    )

    # Posterior weights of the two mixture terms; they sum to one.
    alive_weight = np.exp(log_alive_term - log_mixture)
    dropout_weight = np.exp(log_dropout_term - log_mixture)
    digamma = special.digamma
    gradient = np.array(
        [
            digamma(r + x)
            - digamma(r)
            + np.log(alpha)
            - alive_weight * np.log(alpha + big_t)
            - dropout_weight * np.log(alpha + t_x),
            r / alpha - (r + x) * (alive_weight / (alpha + big_t) + dropout_weight / (alpha + t_x)),
            digamma(a + b) - digamma(a + b + x) + dropout_weight / a,
            digamma(b + x) - digamma(b) + digamma(a + b) - digamma(a + b + x) - dropout_weight / b_plus_x_minus_1,
        ]
    ).sum(axis=1)
    return float(per_customer.sum()), gradient


def probability_alive(
    parameters: BgNbdParameters,
    *,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    age: npt.ArrayLike,
) -> FloatArray:
    """Return P(customer still active at the end of observation | x, t_x, T).

    Customers without repeat purchases are alive by the model's assumptions
    (drop-out can only follow a repeat purchase), so they get exactly 1.
    """
    x, t_x, big_t = _validated_purchase_summary(frequency, recency, age)
    return _probability_alive(parameters, x, t_x, big_t)


def _probability_alive(parameters: BgNbdParameters, x: FloatArray, t_x: FloatArray, big_t: FloatArray) -> FloatArray:
    """Compute P(alive) as 1 / (1 + odds of having dropped out), the odds taken in log space."""
    r, alpha, a, b = astuple(parameters)
    has_repeats = x > 0
    log_odds_dead = np.where(
        has_repeats,
        np.log(a)
        - np.log(np.where(has_repeats, b + x - 1, 1.0))
        + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x)),
        -np.inf,
    )
    probability: FloatArray = special.expit(-log_odds_dead)
    return probability


def expected_purchases_conditional(
    parameters: BgNbdParameters,
    *,
    horizon_weeks: npt.ArrayLike,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    age: npt.ArrayLike,
) -> FloatArray:
    """Return E[purchases in the next ``horizon_weeks`` | x, t_x, T] (FHL 2005, eq. 10).

    ``horizon_weeks`` broadcasts against the customer arrays, e.g. shape
    (1, k) against (n, 1) gives an n-by-k table. The closed form divides by
    a - 1 and so cannot be evaluated at a == 1 exactly.
    """
    x, t_x, big_t = _validated_purchase_summary(frequency, recency, age)
    horizon = np.asarray(horizon_weeks, dtype=np.float64)
    return _probability_alive(parameters, x, t_x, big_t) * _expected_purchases_while_alive(
        parameters, horizon=horizon, x=x, big_t=big_t
    )


def expected_purchases_new_customer(parameters: BgNbdParameters, *, horizon_weeks: npt.ArrayLike) -> FloatArray:
    """Return E[X(t)], a newly acquired customer's expected repeat purchases in t weeks.

    This is eq. 9 of FHL (2005).
    """
    horizon = np.asarray(horizon_weeks, dtype=np.float64)
    return _expected_purchases_while_alive(parameters, horizon=horizon, x=np.zeros(()), big_t=np.zeros(()))


def _expected_purchases_while_alive(
    parameters: BgNbdParameters, *, horizon: FloatArray | np.float64, x: FloatArray, big_t: FloatArray
) -> FloatArray:
    """Return expected purchases in (T, T + t] for a customer known to be alive at T.

    This is eq. 10 of FHL (2005) without its P(alive) denominator, and eq. 9
    when x = T = 0. The paper's factor
        ((alpha+T)/(alpha+T+t))^(r+x) * 2F1(r+x, b+x; a+b+x-1; z)
    is rewritten with Euler's transformation 2F1(A,B;C;z) =
    (1-z)^(C-A-B) 2F1(C-A, C-B; C; z) as
        (1-z)^(a-1) * 2F1(a+b-1-r, a-1; a+b+x-1; z),
    whose hypergeometric factor stays near 1 even for heavy buyers, where
    the original one overflows while its prefactor underflows.
    """
    r, alpha, a, b = astuple(parameters)
    z = horizon / (alpha + big_t + horizon)
    hypergeometric = special.hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
    expected: FloatArray = (a + b + x - 1) / (a - 1) * (1 - (1 - z) ** (a - 1) * hypergeometric)
    return expected


def _validated_purchase_summary(
    frequency: npt.ArrayLike, recency: npt.ArrayLike, age: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return (x, t_x, T) as float arrays after checking they describe real purchase histories."""
    x, t_x, big_t = (np.asarray(values, dtype=np.float64) for values in (frequency, recency, age))
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(t_x)) and np.all(np.isfinite(big_t))):
        raise ValueError("frequency, recency and age must be finite")
    if np.any(x < 0) or np.any(x != np.round(x)):
        raise ValueError("frequency must be a non-negative whole number of repeat purchases")
    if np.any(t_x < 0) or np.any(t_x > big_t):
        raise ValueError("recency must lie between 0 and age")
    return x, t_x, big_t


# --------------------------------------------------------------------------
# Gamma-Gamma spend model
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GammaGammaParameters:
    """Hold Gamma-Gamma parameters for predicting without refitting, e.g. rebuilt from storage.

    A customer's purchase values are Gamma(p, nu); nu varies across customers
    as Gamma(q, v), with v in the currency of the fitted spends.
    """

    p: float
    q: float
    v: float


GammaGammaFit = MaximumLikelihoodFit[GammaGammaParameters]


def fit_gamma_gamma(
    *,
    frequency: npt.ArrayLike,
    average_repeat_spend: npt.ArrayLike,
    initial: GammaGammaParameters = GammaGammaParameters(p=1.0, q=1.0, v=1.0),
) -> GammaGammaFit:
    """Fit the Gamma-Gamma spend model by maximum likelihood on customers with repeat purchases.

    Customers with ``frequency`` 0 carry no spend information and are
    skipped (their ``average_repeat_spend`` may be NaN); every other customer
    needs a positive average spend. The model assumes spend per purchase is
    independent of purchase frequency: check that the correlation between
    the two is weak before relying on it.
    """
    x = np.asarray(frequency, dtype=np.float64)
    spend = _as_float_array(average_repeat_spend)
    repeat_buyers = x > 0
    x, spend = x[repeat_buyers], spend[repeat_buyers]
    if len(x) == 0:
        raise ValueError("no customer has a repeat purchase; the spend model has nothing to fit")
    if not np.all(np.isfinite(spend)) or np.any(spend <= 0):
        raise ValueError("average_repeat_spend must be positive and finite for customers with repeat purchases")
    return _maximise_log_likelihood(
        lambda parameters: _gamma_gamma_log_likelihood(parameters, x, spend),
        parameter_type=GammaGammaParameters,
        initial=initial,
        n_customers=len(x),
    )


def _gamma_gamma_log_likelihood(parameters: FloatArray, x: FloatArray, spend: FloatArray) -> tuple[float, FloatArray]:
    """Return the Gamma-Gamma log-likelihood of (x, m_x) and its gradient in (p, q, v).

    The density of the mean of x purchase values (Hardie's note, eq. 3) is
    Gamma(px+q) / (Gamma(px) Gamma(q)) * v^q m^(px-1) x^(px) / (v + m x)^(px+q).
    """
    p, q, v = parameters
    px = p * x
    log_total = np.log(v + spend * x)
    per_customer = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(spend)
        + px * np.log(x)
        - (px + q) * log_total
    )
    digamma_total = special.digamma(px + q)
    gradient = np.array(
        [
            x * (digamma_total - special.digamma(px) + np.log(spend) + np.log(x) - log_total),
            digamma_total - special.digamma(q) + np.log(v) - log_total,
            q / v - (px + q) / (v + spend * x),
        ]
    ).sum(axis=1)
    return float(per_customer.sum()), gradient


def expected_average_spend(
    parameters: GammaGammaParameters,
    *,
    frequency: npt.ArrayLike,
    average_repeat_spend: npt.ArrayLike,
) -> FloatArray:
    """Return each customer's expected spend per future purchase, E[M | x, m_x].

    The estimate is a weighted average of the population mean p*v/(q-1) and
    the customer's own mean, weighted by x. Customers with no repeat purchase
    get the population mean whatever their ``average_repeat_spend`` (NaN is
    fine). Returns unrounded floats in the currency of the fitted spends.
    """
    p, q, v = astuple(parameters)
    if q <= 1:
        raise ValueError("the population mean spend is infinite when q <= 1")
    x = np.asarray(frequency, dtype=np.float64)
    spend = np.where(x > 0, _as_float_array(average_repeat_spend), 0.0)
    expected: FloatArray = p * (v + x * spend) / (p * x + q - 1)
    return expected


# --------------------------------------------------------------------------
# Customer lifetime value
# --------------------------------------------------------------------------


def customer_lifetime_value(
    purchases: BgNbdParameters,
    spend: GammaGammaParameters,
    *,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    age: npt.ArrayLike,
    average_repeat_spend: npt.ArrayLike,
    margin_fraction: float,
    annual_discount_rate: float,
    horizon_weeks: int = 52,
    period_weeks: int = 1,
) -> FloatArray:
    """Return each customer's discounted expected margin over the next ``horizon_weeks``.

    The horizon is cut into periods of ``period_weeks``. Expected purchases
    in period k are E[Y(k * period)] - E[Y((k-1) * period)]; each is valued
    at the customer's expected spend per purchase times ``margin_fraction``
    and discounted as if paid at the end of its period, by
    (1 + annual_discount_rate) ** (-k * period_weeks / 52).

    The result is a float64 array of unrounded amounts in the currency of
    the spends the Gamma-Gamma model was fitted on (CNY for crossmkt): the
    expected *margin*, not revenue. Quantize it at the boundary, e.g.
    ``Decimal(str(value)).quantize(Decimal("0.01"))``.
    """
    if horizon_weeks <= 0 or period_weeks <= 0 or horizon_weeks % period_weeks:
        raise ValueError("horizon_weeks must be a positive whole number of periods of period_weeks")
    if annual_discount_rate <= -1:
        raise ValueError("annual_discount_rate must exceed -100%")
    x, t_x, big_t = _validated_purchase_summary(frequency, recency, age)
    alive = _probability_alive(purchases, x, t_x, big_t)

    # One period at a time keeps memory at O(customers) for any horizon.
    discounted_purchases = np.zeros_like(x)
    purchases_so_far = np.zeros_like(x)
    for period_end in range(period_weeks, horizon_weeks + 1, period_weeks):
        purchases_by_period_end = alive * _expected_purchases_while_alive(
            purchases, horizon=np.float64(period_end), x=x, big_t=big_t
        )
        discount = (1 + annual_discount_rate) ** (-period_end / WEEKS_PER_YEAR)
        discounted_purchases += discount * (purchases_by_period_end - purchases_so_far)
        purchases_so_far = purchases_by_period_end

    margin_per_purchase = margin_fraction * expected_average_spend(
        spend, frequency=x, average_repeat_spend=average_repeat_spend
    )
    return discounted_purchases * margin_per_purchase
