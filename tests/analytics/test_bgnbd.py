"""Check the BG/NBD and Gamma-Gamma estimators against published results and simulated truth."""

from __future__ import annotations

import importlib.metadata
from dataclasses import astuple
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import hyp2f1

from analytics.stats.bgnbd import (
    BgNbdFit,
    BgNbdParameters,
    GammaGammaParameters,
    _bgnbd_log_likelihood,
    _gamma_gamma_log_likelihood,
    customer_lifetime_value,
    expected_average_spend,
    expected_purchases_conditional,
    expected_purchases_new_customer,
    fit_bgnbd,
    fit_gamma_gamma,
    probability_alive,
    summarise_transactions,
)

# ---------------------------------------------------------------------------
# CDNOW: the published numbers
# ---------------------------------------------------------------------------

# The CDNOW sample (2,357 customers, first purchases in Q1 1997) ships as data
# files inside the `lifetimes` wheel. Only the files are read: the package's
# own code is never imported, so the check stays independent of it.
CDNOW_DATA_PACKAGE = "lifetimes"
CDNOW_INSTALL_HINT = "pip install lifetimes==0.11.3"
# Last day of the 39-week calibration period in Fader, Hardie & Lee (2005).
CDNOW_CALIBRATION_END = "1997-09-30"

# Fader, Hardie & Lee (2005), "'Counting your customers' the easy way", Marketing Science.
PUBLISHED_BGNBD = BgNbdParameters(r=0.243, alpha=4.414, a=0.793, b=2.426)
PUBLISHED_BGNBD_LOG_LIKELIHOOD = -9582.4
# Fader, Hardie & Lee (2005), "RFM and CLV: Using iso-value curves", J. Marketing Research.
PUBLISHED_GAMMA_GAMMA = GammaGammaParameters(p=6.25, q=3.74, v=15.44)


@pytest.fixture(scope="module")
def cdnow_directory() -> Path:
    try:
        distribution = importlib.metadata.distribution(CDNOW_DATA_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"CDNOW sample data not installed; run `{CDNOW_INSTALL_HINT}`")
    directory = Path(str(distribution.locate_file("lifetimes/datasets")))
    if not (directory / "CDNOW_sample.txt").is_file():
        pytest.skip(f"installed {CDNOW_DATA_PACKAGE} lacks its CDNOW files; run `{CDNOW_INSTALL_HINT}`")
    return directory


@pytest.fixture(scope="module")
def cdnow_summary(cdnow_directory: Path) -> pd.DataFrame:
    """Hardie's calibration summary: ID, x, t_x, T and zbar (mean repeat spend, 0 when x = 0)."""
    return pd.read_csv(cdnow_directory / "cdnow_customers_summary_with_transactions.csv")


@pytest.fixture(scope="module")
def cdnow_bgnbd_fit(cdnow_summary: pd.DataFrame) -> BgNbdFit:
    return fit_bgnbd(frequency=cdnow_summary["x"], recency=cdnow_summary["t_x"], age=cdnow_summary["T"])


@pytest.fixture(scope="module")
def cdnow_transactions(cdnow_directory: Path) -> pd.DataFrame:
    """The raw log: master id, sample id, date, CDs bought, dollars spent."""
    return pd.read_csv(
        cdnow_directory / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["master_id", "customer_id", "date", "cds", "amount"],
        dtype={"date": str},
    )


def test_summary_from_cdnow_log_reproduces_hardies_calibration_summary(
    cdnow_transactions: pd.DataFrame, cdnow_summary: pd.DataFrame
) -> None:
    summary = summarise_transactions(
        cdnow_transactions["customer_id"],
        pd.to_datetime(cdnow_transactions["date"], format="%Y%m%d"),
        observation_end=CDNOW_CALIBRATION_END,
        amounts=cdnow_transactions["amount"],
    )
    published = cdnow_summary.set_index("ID").loc[summary.customer_ids]

    assert len(summary.customer_ids) == 2357
    np.testing.assert_array_equal(summary.frequency, published["x"])
    # The published file rounds weeks and dollars to two decimals.
    np.testing.assert_allclose(summary.recency, published["t_x"], atol=0.005)
    np.testing.assert_allclose(summary.age, published["T"], atol=0.005)
    has_repeats = summary.frequency > 0
    assert summary.average_repeat_spend is not None
    np.testing.assert_allclose(summary.average_repeat_spend[has_repeats], published["zbar"][has_repeats], atol=0.005)
    assert np.isnan(summary.average_repeat_spend[~has_repeats]).all()


def test_bgnbd_fit_reproduces_published_cdnow_estimates(cdnow_bgnbd_fit: BgNbdFit) -> None:
    fit = cdnow_bgnbd_fit
    assert fit.converged, fit.optimizer_message
    assert fit.n_customers == 2357
    # Published to three decimals: agree within one unit of the last digit.
    for estimate, published in zip(astuple(fit.parameters), astuple(PUBLISHED_BGNBD), strict=True):
        assert estimate == pytest.approx(published, abs=1e-3)
    assert fit.log_likelihood == pytest.approx(PUBLISHED_BGNBD_LOG_LIKELIHOOD, abs=0.1)
    assert fit.standard_error_note == ""
    assert all(
        0 < se < estimate for se, estimate in zip(astuple(fit.standard_errors), astuple(fit.parameters), strict=True)
    )


def test_standard_errors_match_hessian_of_likelihood_values(
    cdnow_summary: pd.DataFrame, cdnow_bgnbd_fit: BgNbdFit
) -> None:
    """Rebuild the standard errors by a second route and compare.

    The fit differentiates the analytic gradient on the log scale; here the
    Hessian comes from likelihood values alone, on the natural scale.
    """
    columns = [cdnow_summary[name].to_numpy(dtype=float) for name in ("x", "t_x", "T")]
    estimate = np.array(astuple(cdnow_bgnbd_fit.parameters))

    def log_likelihood(parameters: np.ndarray) -> float:
        return _bgnbd_log_likelihood(parameters, *columns)[0]

    steps = 1e-4 * estimate
    hessian = np.empty((4, 4))
    for i, j in np.ndindex(4, 4):
        step_i, step_j = np.eye(4)[i] * steps[i], np.eye(4)[j] * steps[j]
        hessian[i, j] = -(
            log_likelihood(estimate + step_i + step_j)
            - log_likelihood(estimate + step_i - step_j)
            - log_likelihood(estimate - step_i + step_j)
            + log_likelihood(estimate - step_i - step_j)
        ) / (4 * steps[i] * steps[j])

    np.testing.assert_allclose(
        astuple(cdnow_bgnbd_fit.standard_errors),
        np.sqrt(np.diag(np.linalg.inv(hessian))),
        rtol=1e-3,
    )


def test_expectations_match_hardies_bgnbd_spreadsheet(cdnow_bgnbd_fit: BgNbdFit) -> None:
    # Values from Hardie's BG/NBD spreadsheet accompanying the paper.
    fit = cdnow_bgnbd_fit

    weeks = np.array([0.1429, 1.0, 3.0, 31.8571, 32.0])
    spreadsheet = np.array([0.0078, 0.0532, 0.1506, 1.0405, 1.0437])
    np.testing.assert_allclose(
        expected_purchases_new_customer(fit.parameters, horizon_weeks=weeks), spreadsheet, atol=1e-4
    )
    # The sheet's 78-week value is 1.8576 while the converged 2F1 gives 1.8580;
    # summing its series for only ~150 terms at z = 0.95 reproduces the sheet,
    # so allow for that truncation there.
    assert expected_purchases_new_customer(fit.parameters, horizon_weeks=78.0) == pytest.approx(1.8576, abs=5e-4)
    conditional = expected_purchases_conditional(
        fit.parameters, horizon_weeks=39, frequency=2, recency=30.43, age=38.86
    )
    assert conditional == pytest.approx(1.226, abs=5e-4)


def test_gamma_gamma_fit_reproduces_published_cdnow_estimates(cdnow_summary: pd.DataFrame) -> None:
    fit = fit_gamma_gamma(frequency=cdnow_summary["x"], average_repeat_spend=cdnow_summary["zbar"])

    assert fit.converged, fit.optimizer_message
    assert fit.n_customers == 946
    # Published to two decimals: agree within one unit of the last digit.
    for estimate, published in zip(astuple(fit.parameters), astuple(PUBLISHED_GAMMA_GAMMA), strict=True):
        assert estimate == pytest.approx(published, abs=1e-2)

    # Hardie's Gamma-Gamma spreadsheet, first ten CDNOW customers, in dollars.
    first_ten = cdnow_summary.head(10)
    spreadsheet = [24.65, 18.91, 35.17, 35.17, 35.17, 71.46, 18.91, 35.17, 27.28, 35.17]
    expected = expected_average_spend(fit.parameters, frequency=first_ten["x"], average_repeat_spend=first_ten["zbar"])
    np.testing.assert_allclose(expected, spreadsheet, atol=0.01)


# ---------------------------------------------------------------------------
# Simulation: known parameters, actual purchase times
# ---------------------------------------------------------------------------

SIMULATED_BGNBD = BgNbdParameters(r=0.75, alpha=4.0, a=0.8, b=2.5)
SIMULATED_GAMMA_GAMMA = GammaGammaParameters(p=6.0, q=4.0, v=15.0)
# Customers acquired uniformly over the first 12 weeks of a 52-week window.
SIMULATED_AGE_RANGE = (40.0, 52.0)


def simulate_bgnbd_purchases(
    rng: np.random.Generator, parameters: BgNbdParameters, observe_until: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate each customer's repeat purchases from the BG/NBD story, one purchase at a time.

    Every customer starts alive at week 0 (their first purchase), buys at
    Poisson rate lambda ~ Gamma(r, alpha) and, after each repeat purchase,
    leaves for good with probability p ~ Beta(a, b). Returns the customer
    index and week of every repeat purchase up to ``observe_until``, and
    each customer's drop-out week (inf if still alive then).
    """
    n_customers = len(observe_until)
    purchase_rate = rng.gamma(parameters.r, 1 / parameters.alpha, n_customers)
    dropout_probability = rng.beta(parameters.a, parameters.b, n_customers)
    clock = np.zeros(n_customers)
    dropped_at = np.full(n_customers, np.inf)
    still_buying = np.ones(n_customers, dtype=bool)
    buyers_by_round, weeks_by_round = [], []
    while still_buying.any():
        candidates = np.flatnonzero(still_buying)
        clock[candidates] += rng.exponential(1 / purchase_rate[candidates])
        in_window = clock[candidates] <= observe_until[candidates]
        buyers = candidates[in_window]
        buyers_by_round.append(buyers)
        weeks_by_round.append(clock[buyers])
        still_buying[candidates[~in_window]] = False
        leavers = buyers[rng.random(len(buyers)) < dropout_probability[buyers]]
        dropped_at[leavers] = clock[leavers]
        still_buying[leavers] = False
    return np.concatenate(buyers_by_round), np.concatenate(weeks_by_round), dropped_at


def summarise_simulated(customers: np.ndarray, weeks: np.ndarray, ages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (x, t_x) for purchases up to each customer's age."""
    observed = weeks <= ages[customers]
    frequency = np.bincount(customers[observed], minlength=len(ages)).astype(float)
    recency = np.zeros(len(ages))
    np.maximum.at(recency, customers[observed], weeks[observed])
    return frequency, recency


def assert_mean_residual_is_noise(actual: np.ndarray, predicted: np.ndarray) -> None:
    """Assert predictions are unbiased: the mean residual is within 4 standard errors of 0."""
    residual = np.asarray(actual, dtype=float) - predicted
    standard_error = residual.std(ddof=1) / np.sqrt(len(residual))
    assert abs(residual.mean()) < 4 * standard_error, (residual.mean(), standard_error)


def test_bgnbd_fit_recovers_simulated_parameters() -> None:
    rng = np.random.default_rng(20050101)
    ages = rng.uniform(*SIMULATED_AGE_RANGE, size=50_000)
    customers, weeks, _ = simulate_bgnbd_purchases(rng, SIMULATED_BGNBD, ages)
    frequency, recency = summarise_simulated(customers, weeks, ages)

    fit = fit_bgnbd(frequency=frequency, recency=recency, age=ages)

    assert fit.converged, fit.optimizer_message
    truth = np.array(astuple(SIMULATED_BGNBD))
    estimate = np.array(astuple(fit.parameters))
    np.testing.assert_allclose(estimate, truth, rtol=0.10)
    # The standard errors should describe the actual estimation error.
    assert np.all(np.abs(estimate - truth) < 4 * np.array(astuple(fit.standard_errors)))


def test_predictions_are_unbiased_on_simulated_customers() -> None:
    """With the true parameters, each prediction must match what the simulation then did."""
    rng = np.random.default_rng(20050102)
    holdout_weeks = 39.0
    ages = rng.uniform(*SIMULATED_AGE_RANGE, size=50_000)
    customers, weeks, dropped_at = simulate_bgnbd_purchases(rng, SIMULATED_BGNBD, ages + holdout_weeks)
    frequency, recency = summarise_simulated(customers, weeks, ages)
    in_holdout = weeks > ages[customers]
    holdout_purchases = np.bincount(customers[in_holdout], minlength=len(ages))
    history = {"frequency": frequency, "recency": recency, "age": ages}

    assert_mean_residual_is_noise(frequency, expected_purchases_new_customer(SIMULATED_BGNBD, horizon_weeks=ages))
    assert_mean_residual_is_noise(dropped_at > ages, probability_alive(SIMULATED_BGNBD, **history))
    assert_mean_residual_is_noise(
        holdout_purchases,
        expected_purchases_conditional(SIMULATED_BGNBD, horizon_weeks=holdout_weeks, **history),
    )


def simulate_average_spends(
    rng: np.random.Generator, parameters: GammaGammaParameters, frequency: np.ndarray
) -> np.ndarray:
    """Draw nu ~ Gamma(q, v) per customer, each purchase value ~ Gamma(p, nu); return means."""
    nu = rng.gamma(parameters.q, 1 / parameters.v, len(frequency))
    purchase_owner = np.repeat(np.arange(len(frequency)), frequency.astype(int))
    values = rng.gamma(parameters.p, 1 / nu[purchase_owner])
    return np.bincount(purchase_owner, weights=values, minlength=len(frequency)) / frequency


def test_gamma_gamma_fit_recovers_simulated_parameters() -> None:
    rng = np.random.default_rng(20050103)
    frequency = 1 + rng.poisson(2.0, size=20_000)
    average_spend = simulate_average_spends(rng, SIMULATED_GAMMA_GAMMA, frequency)

    fit = fit_gamma_gamma(frequency=frequency, average_repeat_spend=average_spend)

    assert fit.converged, fit.optimizer_message
    truth = np.array(astuple(SIMULATED_GAMMA_GAMMA))
    estimate = np.array(astuple(fit.parameters))
    np.testing.assert_allclose(estimate, truth, rtol=0.10)
    assert np.all(np.abs(estimate - truth) < 4 * np.array(astuple(fit.standard_errors)))


def test_gamma_gamma_standard_errors_match_spread_over_replications() -> None:
    rng = np.random.default_rng(20050104)
    frequency = 1 + rng.poisson(2.0, size=2_000)
    fits = [
        fit_gamma_gamma(
            frequency=frequency,
            average_repeat_spend=simulate_average_spends(rng, SIMULATED_GAMMA_GAMMA, frequency),
        )
        for _ in range(100)
    ]
    estimates = np.array([astuple(fit.parameters) for fit in fits])
    standard_errors = np.array([astuple(fit.standard_errors) for fit in fits])
    # Compared on the log scale the fit works on, where the sampling
    # distribution is close to normal; se / estimate is the log-scale SE.
    spread_of_log_estimates = np.log(estimates).std(axis=0, ddof=1)
    typical_log_scale_se = np.median(standard_errors / estimates, axis=0)
    # With 100 replications the observed spread itself is uncertain by ~7%.
    np.testing.assert_allclose(typical_log_scale_se, spread_of_log_estimates, rtol=0.25)


def test_customer_lifetime_value_matches_simulated_discounted_margin() -> None:
    rng = np.random.default_rng(20050105)
    horizon_weeks, margin_fraction, annual_discount_rate = 52, 0.3, 0.10
    ages = rng.uniform(*SIMULATED_AGE_RANGE, size=50_000)
    customers, weeks, _ = simulate_bgnbd_purchases(rng, SIMULATED_BGNBD, ages + horizon_weeks)
    frequency, recency = summarise_simulated(customers, weeks, ages)

    # Every purchase value of a customer comes from the same Gamma(p, nu).
    nu = rng.gamma(SIMULATED_GAMMA_GAMMA.q, 1 / SIMULATED_GAMMA_GAMMA.v, len(ages))
    values = rng.gamma(SIMULATED_GAMMA_GAMMA.p, 1 / nu[customers])
    in_calibration = weeks <= ages[customers]
    calibration_spend = np.bincount(customers[in_calibration], weights=values[in_calibration], minlength=len(ages))
    with np.errstate(invalid="ignore"):
        average_spend = calibration_spend / frequency

    # Realised margin: a purchase in week k after the cut-off is discounted by k whole weeks.
    future = ~in_calibration
    weeks_ahead = np.ceil(weeks[future] - ages[customers[future]])
    discount = (1 + annual_discount_rate) ** (-weeks_ahead / 52)
    realised = np.bincount(customers[future], weights=margin_fraction * values[future] * discount, minlength=len(ages))

    predicted = customer_lifetime_value(
        SIMULATED_BGNBD,
        SIMULATED_GAMMA_GAMMA,
        frequency=frequency,
        recency=recency,
        age=ages,
        average_repeat_spend=average_spend,
        margin_fraction=margin_fraction,
        annual_discount_rate=annual_discount_rate,
        horizon_weeks=horizon_weeks,
    )
    assert_mean_residual_is_noise(realised, predicted)


# ---------------------------------------------------------------------------
# Formulas and edge cases
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log_likelihood", "parameters", "data"),
    [
        (
            _bgnbd_log_likelihood,
            np.array([0.3, 4.0, 0.8, 2.5]),
            (
                np.array([0.0, 1, 2, 7]),
                np.array([0.0, 3, 30.4, 20]),
                np.array([38.9, 30, 38.9, 21]),
            ),
        ),
        (
            _gamma_gamma_log_likelihood,
            np.array([6.0, 3.5, 15.0]),
            (np.array([1.0, 2, 6]), np.array([10.0, 35.5, 22])),
        ),
    ],
)
def test_analytic_gradient_matches_finite_differences(log_likelihood, parameters, data) -> None:
    _, gradient = log_likelihood(parameters, *data)
    step = 1e-6
    numerical = [
        (log_likelihood(parameters + step * unit, *data)[0] - log_likelihood(parameters - step * unit, *data)[0])
        / (2 * step)
        for unit in np.eye(len(parameters))
    ]
    np.testing.assert_allclose(gradient, numerical, rtol=1e-6)


def test_conditional_expectation_agrees_with_the_papers_untransformed_formula() -> None:
    r, alpha, a, b = astuple(PUBLISHED_BGNBD)
    x, t_x, age, horizon = np.array([0.0, 1, 5, 20]), np.array([0.0, 2, 30, 38]), 38.86, 52.0
    z = horizon / (alpha + age + horizon)
    paper = (
        (a + b + x - 1)
        / (a - 1)
        * (1 - ((alpha + age) / (alpha + age + horizon)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z))
        / (1 + (x > 0) * a / np.maximum(b + x - 1, 1e-12) * ((alpha + age) / (alpha + t_x)) ** (r + x))
    )
    ours = expected_purchases_conditional(PUBLISHED_BGNBD, horizon_weeks=horizon, frequency=x, recency=t_x, age=age)
    np.testing.assert_allclose(ours, paper, rtol=1e-10)


def test_heavy_buyer_expectation_stays_finite() -> None:
    expected = expected_purchases_conditional(PUBLISHED_BGNBD, horizon_weeks=52, frequency=400, recency=38.8, age=38.86)
    # An alive customer buys at the posterior mean rate (r + x) / (alpha + T);
    # possible drop-out can only lower that, and after 400 purchases not by much.
    r, alpha, _, _ = astuple(PUBLISHED_BGNBD)
    alive_forever = (r + 400) / (alpha + 38.86) * 52
    assert 0.5 * alive_forever < expected < alive_forever


def test_customers_without_repeats_are_surely_alive_and_horizon_zero_means_no_purchases() -> None:
    history: dict[str, list[float]] = {"frequency": [0, 0, 3], "recency": [0.0, 0.0, 10.0], "age": [5.0, 40.0, 40.0]}
    np.testing.assert_array_equal(probability_alive(PUBLISHED_BGNBD, **history)[:2], [1.0, 1.0])
    np.testing.assert_array_equal(
        expected_purchases_conditional(PUBLISHED_BGNBD, horizon_weeks=0, **history), [0.0, 0.0, 0.0]
    )


def test_invalid_purchase_histories_are_rejected() -> None:
    with pytest.raises(ValueError, match="recency"):
        fit_bgnbd(frequency=[1, 2], recency=[5.0, 50.0], age=[10.0, 40.0])
    with pytest.raises(ValueError, match="whole number"):
        fit_bgnbd(frequency=[1.5], recency=[5.0], age=[10.0])
    with pytest.raises(ValueError, match="positive"):
        fit_gamma_gamma(frequency=[1, 2], average_repeat_spend=[10.0, 0.0])


def test_summarise_transactions_merges_days_and_cuts_at_the_observation_end() -> None:
    log = pd.DataFrame(
        [
            ("alice", "2024-01-01 09:00", Decimal("10.00")),
            ("alice", "2024-01-01 18:30", Decimal("5.50")),  # same day: one transaction
            ("alice", "2024-01-15 12:00", Decimal("20.00")),
            ("alice", "2024-01-29 23:59", Decimal("30.00")),  # on the end day: counted
            ("alice", "2024-01-30 08:00", Decimal("99.00")),  # after the end: ignored
            ("bob", "2024-01-22 10:00", Decimal("8.00")),
            (
                "carol",
                "2024-02-02 10:00",
                Decimal("1.00"),
            ),  # first buys after the end: not in population
        ],
        columns=["customer", "at", "amount"],
    )
    summary = summarise_transactions(log["customer"], log["at"], observation_end="2024-01-29", amounts=log["amount"])

    assert list(summary.customer_ids) == ["alice", "bob"]
    np.testing.assert_array_equal(summary.frequency, [2, 0])
    np.testing.assert_allclose(summary.recency, [4.0, 0.0])
    np.testing.assert_allclose(summary.age, [4.0, 1.0])
    assert summary.average_repeat_spend is not None
    np.testing.assert_allclose(summary.average_repeat_spend, [25.0, np.nan])


def test_summarise_transactions_uses_local_calendar_days() -> None:
    # 23:30 and 00:30 Shanghai time are different days, though the same UTC day.
    purchased_at = (
        pd.to_datetime(["2024-03-01 15:30", "2024-03-01 16:30"]).tz_localize("UTC").tz_convert("Asia/Shanghai")
    )
    summary = summarise_transactions(["c1", "c1"], purchased_at, observation_end="2024-03-09")
    np.testing.assert_array_equal(summary.frequency, [1])
    np.testing.assert_allclose(summary.recency, [1 / 7])
    assert summary.average_repeat_spend is None


def test_customer_lifetime_value_without_discount_telescopes_to_the_horizon_expectation() -> None:
    history = {
        "frequency": np.array([0.0, 2, 6]),
        "recency": np.array([0.0, 20, 37]),
        "age": np.array([30.0, 38, 38]),
    }
    spend = np.array([np.nan, 20.0, Decimal("45.50")], dtype=object)
    value = customer_lifetime_value(
        PUBLISHED_BGNBD,
        PUBLISHED_GAMMA_GAMMA,
        **history,
        average_repeat_spend=spend,
        margin_fraction=0.25,
        annual_discount_rate=0.0,
        horizon_weeks=52,
        period_weeks=4,
    )
    purchases = expected_purchases_conditional(PUBLISHED_BGNBD, horizon_weeks=52, **history)
    spend_per_purchase = expected_average_spend(
        PUBLISHED_GAMMA_GAMMA, frequency=history["frequency"], average_repeat_spend=spend
    )
    np.testing.assert_allclose(value, 0.25 * purchases * spend_per_purchase, rtol=1e-12)

    discounted = customer_lifetime_value(
        PUBLISHED_BGNBD,
        PUBLISHED_GAMMA_GAMMA,
        **history,
        average_repeat_spend=spend,
        margin_fraction=0.25,
        annual_discount_rate=0.10,
        horizon_weeks=52,
        period_weeks=4,
    )
    # Every period is discounted by between 1/1.1^(4/52) and 1/1.1.
    assert np.all(discounted < value / 1.1 ** (4 / 52)) and np.all(discounted > value / 1.1)


def test_customer_lifetime_value_discounts_a_period_at_its_end() -> None:
    history = {"frequency": [3.0], "recency": [30.0], "age": [38.0]}
    one_period = customer_lifetime_value(
        PUBLISHED_BGNBD,
        PUBLISHED_GAMMA_GAMMA,
        **history,
        average_repeat_spend=[40.0],
        margin_fraction=0.5,
        annual_discount_rate=0.10,
        horizon_weeks=13,
        period_weeks=13,
    )
    purchases = expected_purchases_conditional(PUBLISHED_BGNBD, horizon_weeks=13, **history)
    spend = expected_average_spend(PUBLISHED_GAMMA_GAMMA, frequency=[3.0], average_repeat_spend=[40.0])
    np.testing.assert_allclose(one_period, 0.5 * purchases * spend / 1.1 ** (13 / 52), rtol=1e-12)
    with pytest.raises(ValueError, match="whole number of periods"):
        customer_lifetime_value(
            PUBLISHED_BGNBD,
            PUBLISHED_GAMMA_GAMMA,
            **history,
            average_repeat_spend=[40.0],
            margin_fraction=0.5,
            annual_discount_rate=0.10,
            horizon_weeks=52,
            period_weeks=5,
        )


def test_expected_average_spend_shrinks_towards_population_mean() -> None:
    population_mean = PUBLISHED_GAMMA_GAMMA.p * PUBLISHED_GAMMA_GAMMA.v / (PUBLISHED_GAMMA_GAMMA.q - 1)
    expected = expected_average_spend(
        PUBLISHED_GAMMA_GAMMA,
        frequency=[0, 1, 1000],
        # Decimal and None are converted (None to NaN); npt.ArrayLike has no Decimal, hence the ignore.
        average_repeat_spend=[None, Decimal("100.00"), Decimal("100.00")],  # type: ignore[arg-type]
    )
    assert expected[0] == pytest.approx(population_mean)
    assert population_mean < expected[1] < 100
    assert expected[2] == pytest.approx(100, rel=1e-3)
