"""Estimate campaign effects: every treated arm against a random holdout (control) arm.

Pure statistics, no Django. Every comparison reads "treated minus control".

Conventions
-----------
* Money (per-user means, their difference and interval bounds, totals, incremental
  revenue, cost) is ``Decimal`` quantized to 0.01 with ROUND_HALF_UP, the fen rule of
  ``crossmkt_site.money``. Cost refuses floats for the same reason that module does.
* Rates, differences of rates, standard errors, z, t, degrees of freedom and p-values
  are ``float``. ROI is a ratio worked out in ``Decimal`` and quantized to 0.0001.
* Results are frozen dataclasses whose ``to_dict()`` is JSON-safe: Decimal becomes a
  string, tuples become lists, and a non-finite float becomes ``None``.
* With several treated arms each comparison is made at the stated confidence on its
  own; nothing here adjusts for multiplicity.

Methods
-------
* Difference of conversion rates: Newcombe's hybrid score interval (method 10 of
  Newcombe 1998, Stat Med 17:873-890), built from two Wilson score intervals.
* Relative uplift (risk ratio minus one): Katz log interval (delta method on log RR).
  When either arm has zero conversions the log ratio is undefined, so 0.5 is added to
  every cell of the 2x2 table (conversions +0.5, non-conversions +0.5, users +1) in both
  arms, the estimate and interval come from that corrected table, and the result says so
  in ``relative_corrected``. Two arms with no conversions then give an estimate near zero
  with a wide interval instead of 0/0.
* Revenue per user: Welch's t interval with Welch-Satterthwaite degrees of freedom, and
  a seeded bootstrap interval, percentile by default. BCa is available, but on
  zero-inflated lognormal revenue (two arms of similar skew) it covered only 92-93% at
  nominal 95% in simulation, as scipy.stats.bootstrap's BCa did on the same data: the
  estimated acceleration is mostly noise there. Percentile and Welch stayed within
  about 93.5-96.5%.
* Sample-ratio mismatch: chi-square goodness of fit of arm sizes against configured shares.
* Retention: Kaplan-Meier curves (lifelines, exponential Greenwood interval) and a
  log-rank test.

Too few users
-------------
A statistic that cannot be computed on the users given (a conversion rate of an empty arm,
a revenue spread from one user) raises ``NotEnoughData``, a ``ValueError`` whose ``reason``
says what is missing in words for the reader. ``compare_arms`` catches it per statistic:
that result is ``None`` and ``not_enough_data`` maps its name to the reason, while the
statistics that can be computed are still reported.
"""

from __future__ import annotations

import math
import operator
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
from scipy import stats

DEFAULT_CONFIDENCE = 0.95
SRM_P_THRESHOLD = 0.001
DEFAULT_RESAMPLES = 2000
CENT = Decimal("0.01")
RATIO_STEP = Decimal("0.0001")

# Sums and ratios of money must never lose digits to the default 28-digit context.
_DECIMAL_PRECISION = 60
# Upper bound on random draws held in memory at once by the bootstrap.
_BOOTSTRAP_CHUNK_DRAWS = 4_000_000

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
RevenueValue = Decimal | int | float
MoneyInput = Decimal | int | str
BootstrapMethod = Literal["bca", "percentile"]


# --------------------------------------------------------------------------- results


class NotEnoughData(ValueError):
    """A statistic cannot be computed on this few users; ``reason`` says why, in words for the reader."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _users(count: int) -> str:
    """Return '1 user' or 'n users'."""
    return f"{count:,} user" if count == 1 else f"{count:,} users"


def _json_safe(value: Any) -> Any:
    """Convert a result value into plain JSON data."""
    if is_dataclass(value) and not isinstance(value, type):
        return {item.name: _json_safe(getattr(value, item.name)) for item in fields(value)}
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    raise TypeError(f"cannot convert {type(value).__name__} to JSON data")


class _JsonResult:
    """Give result dataclasses a JSON-safe ``to_dict``."""

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-safe data: Decimal as string, non-finite floats as None."""
        return cast(dict[str, Any], _json_safe(self))


@dataclass(frozen=True)
class ConversionUplift(_JsonResult):
    """Hold the conversion comparison of a treated arm with the control arm."""

    users_treated: int
    conversions_treated: int
    users_control: int
    conversions_control: int
    confidence: float
    rate_treated: float
    rate_control: float
    difference: float
    difference_lower: float
    difference_upper: float
    standard_error: float
    z: float
    p_value: float
    relative_uplift: float
    relative_lower: float
    relative_upper: float
    relative_corrected: bool


@dataclass(frozen=True)
class RevenueUplift(_JsonResult):
    """Hold the revenue-per-user comparison of a treated arm with the control arm."""

    users_treated: int
    users_control: int
    confidence: float
    total_treated: Decimal
    total_control: Decimal
    mean_treated: Decimal
    mean_control: Decimal
    difference: Decimal
    welch_lower: Decimal
    welch_upper: Decimal
    standard_error: float
    degrees_of_freedom: float
    t: float
    p_value: float
    bootstrap_lower: Decimal
    bootstrap_upper: Decimal
    bootstrap_method: str
    bootstrap_resamples: int
    bootstrap_seed: tuple[int, ...]


@dataclass(frozen=True)
class CampaignReturn(_JsonResult):
    """Hold the incremental outcome of a treated arm and the return on its cost."""

    users_treated: int
    confidence: float
    cost: Decimal
    incremental_conversions: float
    incremental_conversions_lower: float
    incremental_conversions_upper: float
    incremental_revenue: Decimal
    incremental_revenue_lower: Decimal
    incremental_revenue_upper: Decimal
    roi: Decimal | None
    roi_lower: Decimal | None
    roi_upper: Decimal | None
    note: str | None


@dataclass(frozen=True)
class SampleRatioCheck(_JsonResult):
    """Hold the chi-square check of observed arm sizes against the configured split."""

    arms: tuple[str, ...]
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    configured_shares: tuple[float, ...]
    statistic: float
    degrees_of_freedom: int
    p_value: float
    threshold: float
    mismatch: bool
    warning: str | None


@dataclass(frozen=True)
class RetentionCurve(_JsonResult):
    """Hold one arm's Kaplan-Meier retention curve as plain step-function data."""

    arm: str
    users: int
    churned: int
    times: tuple[float, ...]
    survival: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    at_risk: tuple[int, ...]
    median_time: float | None


@dataclass(frozen=True)
class LogRankTest(_JsonResult):
    """Hold the log-rank test that all arms share one retention curve."""

    arms: tuple[str, ...]
    statistic: float
    degrees_of_freedom: int
    p_value: float


@dataclass(frozen=True)
class RetentionComparison(_JsonResult):
    """Hold the Kaplan-Meier curves of every arm and the log-rank test between them."""

    confidence: float
    curves: tuple[RetentionCurve, ...]
    log_rank: LogRankTest


@dataclass(frozen=True)
class ArmData:
    """Hold the raw outcome of one arm as the campaign report supplies it.

    ``revenue`` has one entry per user, zeros included, so ``len(revenue) == users``.
    ``retention_durations`` and ``retention_churned`` are optional and go together:
    time each user was followed and whether they churned (False means still active,
    i.e. censored).
    """

    users: int
    conversions: int
    revenue: Sequence[RevenueValue]
    cost: MoneyInput = Decimal("0")
    retention_durations: Sequence[float] | None = None
    retention_churned: Sequence[bool] | None = None


@dataclass(frozen=True)
class ArmComparison(_JsonResult):
    """Hold everything the report says about one treated arm against the control."""

    arm: str
    control: str
    conversion: ConversionUplift | None
    revenue: RevenueUplift | None
    campaign_return: CampaignReturn | None
    # Statistic name ("conversion", "revenue", "campaign_return") -> why it is None.
    not_enough_data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CampaignEvaluation(_JsonResult):
    """Hold the comparison of every treated arm with the control and the campaign-wide checks."""

    control: str
    confidence: float
    comparisons: tuple[ArmComparison, ...]
    sample_ratio: SampleRatioCheck | None
    retention: RetentionComparison | None
    # "sample_ratio" or "retention" -> why it is None although asked for.
    not_enough_data: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- input checks


def _check_confidence(confidence: float) -> float:
    """Return the confidence level as a float strictly between 0 and 1."""
    level = float(confidence)
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    return level


def _normal_quantile(confidence: float) -> float:
    """Return the two-sided standard normal critical value for a confidence level."""
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def _count(name: str, value: int) -> int:
    """Return value as a non-negative int, refusing bools and non-integers."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer count, got a bool")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer count, got {value!r}") from None
    if number < 0:
        raise ValueError(f"{name} must not be negative, got {number}")
    return number


def _count_arrays(successes: npt.ArrayLike, trials: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Return broadcast float arrays of validated success and trial counts."""
    raw_successes = np.asarray(successes)
    raw_trials = np.asarray(trials)
    if raw_successes.dtype == np.bool_ or raw_trials.dtype == np.bool_:
        raise TypeError("counts must be integers, not bools")
    success_counts, trial_counts = np.broadcast_arrays(raw_successes.astype(np.float64), raw_trials.astype(np.float64))
    if not (np.all(np.isfinite(success_counts)) and np.all(np.isfinite(trial_counts))):
        raise ValueError("counts must be finite")
    if np.any(success_counts != np.floor(success_counts)) or np.any(trial_counts != np.floor(trial_counts)):
        raise ValueError("counts must be whole numbers")
    if np.any(trial_counts <= 0):
        raise NotEnoughData("every arm needs at least one user for a conversion rate; an arm has none")
    if np.any(success_counts < 0) or np.any(success_counts > trial_counts):
        raise ValueError("conversions must lie between 0 and the number of users")
    return success_counts, trial_counts


def _decimal_from_float(value: float) -> Decimal:
    """Return the Decimal a float was meant to be, via its shortest round-tripping repr."""
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    # Decimal(float) would expose the binary neighbour, e.g. 2.675 as 2.67499999...,
    # and then round the wrong way at the cent.
    return Decimal(repr(float(value)))


def _cents(value: Decimal) -> Decimal:
    """Return a money amount quantized to the cent, halves rounded up (away from zero)."""
    with localcontext(prec=_DECIMAL_PRECISION):
        return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _ratio(value: Decimal) -> Decimal:
    """Return a ratio quantized to four places, halves rounded up (away from zero)."""
    with localcontext(prec=_DECIMAL_PRECISION):
        return value.quantize(RATIO_STEP, rounding=ROUND_HALF_UP)


def _money_input(value: MoneyInput, name: str) -> Decimal:
    """Return a non-negative money input as Decimal, refusing floats as the project does."""
    if isinstance(value, (bool, float, np.floating)):
        raise TypeError(f"{name} must be a Decimal, int or string, not {type(value).__name__}")
    if isinstance(value, (int, np.integer)):
        amount = Decimal(int(value))
    elif isinstance(value, (Decimal, str)):
        amount = Decimal(value)
    else:
        raise TypeError(f"{name} must be a Decimal, int or string, got {value!r}")
    if not amount.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    if amount < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return amount


def _revenue_amount(value: object, arm: str, index: int) -> Decimal:
    """Return one user's revenue as an exact Decimal."""
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, (bool, np.bool_)):
        raise TypeError(f"revenue of {arm} user {index} is a bool, expected an amount")
    elif isinstance(value, (int, np.integer)):
        amount = Decimal(int(value))
    elif isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"revenue of {arm} user {index} is not finite: {value!r}")
        amount = _decimal_from_float(float(value))
    else:
        raise TypeError(f"revenue of {arm} user {index} must be Decimal, int or float, got {value!r}")
    if not amount.is_finite():
        raise ValueError(f"revenue of {arm} user {index} is not finite: {value!r}")
    return amount


def _revenue_sample(values: Sequence[RevenueValue] | npt.NDArray[Any], arm: str) -> tuple[FloatArray, Decimal]:
    """Return per-user revenue as floats for the statistics and its exact total as Decimal."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
        if values.ndim != 1:
            raise ValueError(f"revenue of {arm} must be one-dimensional, got shape {values.shape}")
        sample = values.astype(np.float64)
        if not np.all(np.isfinite(sample)):
            raise ValueError(f"revenue of {arm} contains a non-finite value")
        if values.dtype.kind == "f":
            total = _decimal_from_float(math.fsum(sample))
        else:
            total = Decimal(sum(int(item) for item in values))
        return sample, total
    amounts = [_revenue_amount(item, arm, index) for index, item in enumerate(values)]
    with localcontext(prec=_DECIMAL_PRECISION):
        total = sum(amounts, Decimal(0))
    sample = np.array([float(amount) for amount in amounts], dtype=np.float64)
    if not np.all(np.isfinite(sample)):
        raise ValueError(f"revenue of {arm} has an amount too large for floating point")
    return sample, total


def _sample_array(values: npt.ArrayLike, name: str) -> FloatArray:
    """Return a finite float array whose last axis holds at least two users."""
    sample = np.asarray(values, dtype=np.float64)
    if sample.ndim == 0 or sample.shape[-1] < 2:
        raise ValueError(f"{name} needs at least two users along its last axis")
    if not np.all(np.isfinite(sample)):
        raise ValueError(f"{name} contains a non-finite value")
    return sample


# --------------------------------------------------------------------------- proportions


def wilson_interval(
    successes: npt.ArrayLike, trials: npt.ArrayLike, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[FloatArray, FloatArray]:
    """Return Wilson score bounds of a binomial proportion, elementwise over array inputs."""
    success_counts, trial_counts = _count_arrays(successes, trials)
    z = _normal_quantile(_check_confidence(confidence))
    z_squared = z * z
    centre = (success_counts + z_squared / 2.0) / (trial_counts + z_squared)
    half_width = (
        z
        * np.sqrt(success_counts * (trial_counts - success_counts) / trial_counts + z_squared / 4.0)
        / (trial_counts + z_squared)
    )
    # At 0 or n successes the exact bound is 0 or 1; rounding could leave a 1e-17 residue.
    lower = np.where(success_counts == 0, 0.0, np.clip(centre - half_width, 0.0, 1.0))
    upper = np.where(success_counts == trial_counts, 1.0, np.clip(centre + half_width, 0.0, 1.0))
    return lower, upper


def newcombe_interval(
    conversions_treated: npt.ArrayLike,
    users_treated: npt.ArrayLike,
    conversions_control: npt.ArrayLike,
    users_control: npt.ArrayLike,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[FloatArray, FloatArray]:
    """Return Newcombe hybrid score bounds of treated rate minus control rate, elementwise.

    Method 10 of Newcombe (1998): each arm's Wilson interval is combined by
    square-and-add, L = d - sqrt((p1 - l1)^2 + (u2 - p2)^2) and
    U = d + sqrt((u1 - p1)^2 + (p2 - l2)^2), arm 1 treated and arm 2 control.
    """
    treated_successes, treated_trials = _count_arrays(conversions_treated, users_treated)
    control_successes, control_trials = _count_arrays(conversions_control, users_control)
    treated_lower, treated_upper = wilson_interval(treated_successes, treated_trials, confidence)
    control_lower, control_upper = wilson_interval(control_successes, control_trials, confidence)
    treated_rate = treated_successes / treated_trials
    control_rate = control_successes / control_trials
    difference = treated_rate - control_rate
    lower = difference - np.sqrt((treated_rate - treated_lower) ** 2 + (control_upper - control_rate) ** 2)
    upper = difference + np.sqrt((treated_upper - treated_rate) ** 2 + (control_rate - control_lower) ** 2)
    return lower, upper


def relative_uplift_interval(
    conversions_treated: npt.ArrayLike,
    users_treated: npt.ArrayLike,
    conversions_control: npt.ArrayLike,
    users_control: npt.ArrayLike,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[FloatArray, FloatArray, FloatArray, BoolArray]:
    """Return relative uplift (risk ratio - 1), its Katz log bounds and the zero-count flag.

    The standard error of log RR is sqrt(1/a - 1/n1 + 1/c - 1/n2) (delta method). Where
    either arm has no conversions, 0.5 is added to all four cells of that comparison's
    2x2 table (so each arm gains 0.5 conversions and 1 user) and the flag is True.
    """
    treated_successes, treated_trials = _count_arrays(conversions_treated, users_treated)
    control_successes, control_trials = _count_arrays(conversions_control, users_control)
    corrected = (treated_successes == 0) | (control_successes == 0)
    cell_addition = np.where(corrected, 0.5, 0.0)
    treated_events = treated_successes + cell_addition
    treated_total = treated_trials + 2.0 * cell_addition
    control_events = control_successes + cell_addition
    control_total = control_trials + 2.0 * cell_addition
    risk_ratio = (treated_events / treated_total) / (control_events / control_total)
    log_standard_error = np.sqrt(
        1.0 / treated_events - 1.0 / treated_total + 1.0 / control_events - 1.0 / control_total
    )
    margin = _normal_quantile(_check_confidence(confidence)) * log_standard_error
    return (
        risk_ratio - 1.0,
        risk_ratio * np.exp(-margin) - 1.0,
        risk_ratio * np.exp(margin) - 1.0,
        corrected,
    )


def conversion_uplift(
    conversions_treated: int,
    users_treated: int,
    conversions_control: int,
    users_control: int,
    confidence: float = DEFAULT_CONFIDENCE,
) -> ConversionUplift:
    """Compare the conversion rate of a treated arm with the control arm.

    ``standard_error`` is the unpooled (Wald) standard error of the difference, the
    yardstick for "within k standard errors" checks. ``z`` and ``p_value`` come from
    the pooled two-proportion z test; near the 5% boundary that test and the Newcombe
    interval can disagree about significance, as two different procedures may.
    """
    level = _check_confidence(confidence)
    treated_conversions = _count("conversions_treated", conversions_treated)
    treated_users = _count("users_treated", users_treated)
    control_conversions = _count("conversions_control", conversions_control)
    control_users = _count("users_control", users_control)
    _count_arrays([treated_conversions, control_conversions], [treated_users, control_users])

    treated_rate = treated_conversions / treated_users
    control_rate = control_conversions / control_users
    difference = treated_rate - control_rate
    lower, upper = newcombe_interval(treated_conversions, treated_users, control_conversions, control_users, level)
    standard_error = math.sqrt(
        treated_rate * (1.0 - treated_rate) / treated_users + control_rate * (1.0 - control_rate) / control_users
    )
    pooled_rate = (treated_conversions + control_conversions) / (treated_users + control_users)
    null_standard_error = math.sqrt(pooled_rate * (1.0 - pooled_rate) * (1.0 / treated_users + 1.0 / control_users))
    # A pooled rate of exactly 0 or 1 means both arms are identical: no evidence of a difference.
    z = difference / null_standard_error if null_standard_error > 0.0 else 0.0
    p_value = float(2.0 * stats.norm.sf(abs(z)))
    relative, relative_lower, relative_upper, corrected = relative_uplift_interval(
        treated_conversions, treated_users, control_conversions, control_users, level
    )
    return ConversionUplift(
        users_treated=treated_users,
        conversions_treated=treated_conversions,
        users_control=control_users,
        conversions_control=control_conversions,
        confidence=level,
        rate_treated=treated_rate,
        rate_control=control_rate,
        difference=difference,
        difference_lower=float(lower),
        difference_upper=float(upper),
        standard_error=standard_error,
        z=float(z),
        p_value=p_value,
        relative_uplift=float(relative),
        relative_lower=float(relative_lower),
        relative_upper=float(relative_upper),
        relative_corrected=bool(corrected),
    )


# --------------------------------------------------------------------------- means


def _welch_parts(treated: FloatArray, control: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return difference of means, its Welch standard error and Welch-Satterthwaite df."""
    treated_users = treated.shape[-1]
    control_users = control.shape[-1]
    treated_variance = treated.var(axis=-1, ddof=1) / treated_users
    control_variance = control.var(axis=-1, ddof=1) / control_users
    difference = treated.mean(axis=-1) - control.mean(axis=-1)
    standard_error = np.sqrt(treated_variance + control_variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        degrees_of_freedom = (treated_variance + control_variance) ** 2 / (
            treated_variance**2 / (treated_users - 1) + control_variance**2 / (control_users - 1)
        )
    # With no spread in either arm df is 0/0; the interval has zero width whatever df is.
    degrees_of_freedom = np.where(
        np.isfinite(degrees_of_freedom), degrees_of_freedom, float(treated_users + control_users - 2)
    )
    return difference, standard_error, degrees_of_freedom


def welch_interval(
    treated: npt.ArrayLike, control: npt.ArrayLike, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[FloatArray, FloatArray]:
    """Return Welch t bounds of mean(treated) - mean(control), taken along the last axis.

    Leading axes broadcast, so a batch of simulated experiments is one call.
    """
    level = _check_confidence(confidence)
    treated_sample = _sample_array(treated, "treated")
    control_sample = _sample_array(control, "control")
    difference, standard_error, degrees_of_freedom = _welch_parts(treated_sample, control_sample)
    margin = stats.t.ppf(0.5 + level / 2.0, degrees_of_freedom) * standard_error
    return difference - margin, difference + margin


def _resampled_means(values: FloatArray, resamples: int, rng: np.random.Generator) -> FloatArray:
    """Return the means of nonparametric bootstrap resamples of values.

    Only the nonzero values move a resampled sum, and most users buy nothing: the
    number of draws landing on a nonzero value is Binomial(n, m/n), and given that
    count they are uniform over the m nonzero values. Drawing it that way is the same
    distribution as drawing n indices, at a cost proportional to buyers, not users.
    """
    users = values.size
    nonzero = values[values != 0.0]
    if nonzero.size == 0:
        return np.zeros(resamples)
    sums = np.empty(resamples)
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_DRAWS // nonzero.size)
    for start in range(0, resamples, rows_per_chunk):
        rows = min(rows_per_chunk, resamples - start)
        hits = rng.binomial(users, nonzero.size / users, size=rows)
        picks = rng.integers(0, nonzero.size, size=int(hits.sum()))
        owner = np.repeat(np.arange(rows), hits)
        sums[start : start + rows] = np.bincount(owner, weights=nonzero[picks], minlength=rows)
    return sums / users


def _bca_levels(
    replicates: FloatArray, estimate: float, treated: FloatArray, control: FloatArray, confidence: float
) -> tuple[float, float]:
    """Return the BCa-adjusted percentile levels for a difference of two means.

    Bias correction counts ties as half below. The acceleration uses the empirical
    influence values of the two means (x - mean(x) for treated, -(y - mean(y)) for
    control), a = sum_k n_k^-3 sum l^3 / (6 (sum_k n_k^-2 sum l^2)^(3/2)), which is what
    the jackknife gives exactly for a mean.
    """
    below = np.count_nonzero(replicates < estimate) + np.count_nonzero(replicates <= estimate)
    share_below = below / (2.0 * replicates.size)
    # A share of exactly 0 or 1 would make the bias correction infinite.
    edge = 1.0 / (2.0 * replicates.size)
    bias = float(stats.norm.ppf(min(max(share_below, edge), 1.0 - edge)))

    treated_influence = treated - treated.mean()
    control_influence = -(control - control.mean())
    skew_sum = np.sum(treated_influence**3) / treated.size**3 + np.sum(control_influence**3) / control.size**3
    spread_sum = np.sum(treated_influence**2) / treated.size**2 + np.sum(control_influence**2) / control.size**2
    acceleration = float(skew_sum / (6.0 * spread_sum**1.5)) if spread_sum > 0.0 else 0.0

    levels = []
    for tail in (0.5 - confidence / 2.0, 0.5 + confidence / 2.0):
        shifted = bias + float(stats.norm.ppf(tail))
        levels.append(float(stats.norm.cdf(bias + shifted / (1.0 - acceleration * shifted))))
    return levels[0], levels[1]


def _normalised_seed(seed: int | Sequence[int]) -> tuple[int, ...]:
    """Return a bootstrap seed as a tuple of non-negative ints."""
    parts = (seed,) if isinstance(seed, (int, np.integer)) else tuple(seed)
    normalised = tuple(_count("seed", part) for part in parts)
    if not normalised:
        raise ValueError("seed must not be empty")
    return normalised


def bootstrap_interval(
    treated: npt.ArrayLike,
    control: npt.ArrayLike,
    confidence: float = DEFAULT_CONFIDENCE,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | Sequence[int] = 0,
    method: BootstrapMethod = "percentile",
) -> tuple[float, float]:
    """Return a seeded bootstrap interval for mean(treated) - mean(control).

    Arms are resampled independently. ``method`` is "percentile" or "bca"
    (bias-corrected and accelerated, Efron 1987; see the module notes on why it is not
    the default). The same seed, data and resample count give the same interval.
    """
    level = _check_confidence(confidence)
    treated_sample = _sample_array(treated, "treated")
    control_sample = _sample_array(control, "control")
    if treated_sample.ndim != 1 or control_sample.ndim != 1:
        raise ValueError("bootstrap_interval takes one experiment: one-dimensional samples")
    resample_count = _count("resamples", resamples)
    if resample_count < 1:
        raise ValueError("resamples must be at least 1")
    if method not in ("bca", "percentile"):
        raise ValueError(f"method must be 'bca' or 'percentile', got {method!r}")

    rng = np.random.default_rng(_normalised_seed(seed))
    replicates = _resampled_means(treated_sample, resample_count, rng) - _resampled_means(
        control_sample, resample_count, rng
    )
    if method == "bca":
        estimate = float(treated_sample.mean() - control_sample.mean())
        low_level, high_level = _bca_levels(replicates, estimate, treated_sample, control_sample, level)
    else:
        low_level, high_level = 0.5 - level / 2.0, 0.5 + level / 2.0
    low, high = np.quantile(replicates, [low_level, high_level])
    return float(low), float(high)


def revenue_uplift(
    revenue_treated: Sequence[RevenueValue] | npt.NDArray[Any],
    revenue_control: Sequence[RevenueValue] | npt.NDArray[Any],
    confidence: float = DEFAULT_CONFIDENCE,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | Sequence[int] = 0,
    bootstrap_method: BootstrapMethod = "percentile",
) -> RevenueUplift:
    """Compare revenue per user of a treated arm with the control arm.

    Each sequence holds one amount per user, zeros included. Decimal and int amounts
    are summed exactly; a float is read as its shortest repr (19.99, not its binary
    neighbour). Means and their difference are exact Decimal quotients rounded once to
    the cent, so the shown difference can be a cent off the difference of the shown
    means. Interval bounds are float statistics rounded to the cent.
    """
    level = _check_confidence(confidence)
    treated_sample, treated_total = _revenue_sample(revenue_treated, "treated")
    control_sample, control_total = _revenue_sample(revenue_control, "control")
    treated_users = treated_sample.size
    control_users = control_sample.size
    if treated_users < 2 or control_users < 2:
        raise NotEnoughData(
            f"each arm needs at least two users to compare revenue per user (its spread is unknown from one); "
            f"the treated arm has {_users(treated_users)}, the control {_users(control_users)}"
        )

    difference, standard_error, degrees_of_freedom = (
        float(part) for part in _welch_parts(treated_sample, control_sample)
    )
    margin = float(stats.t.ppf(0.5 + level / 2.0, degrees_of_freedom)) * standard_error
    if standard_error > 0.0:
        t_statistic = difference / standard_error
        p_value = float(2.0 * stats.t.sf(abs(t_statistic), degrees_of_freedom))
    else:
        # Every user in each arm spent the same: the means are either equal or certainly different.
        t_statistic = 0.0 if difference == 0.0 else math.copysign(math.inf, difference)
        p_value = 1.0 if difference == 0.0 else 0.0
    seed_parts = _normalised_seed(seed)
    bootstrap_low, bootstrap_high = bootstrap_interval(
        treated_sample,
        control_sample,
        level,
        resamples=resamples,
        seed=seed_parts,
        method=bootstrap_method,
    )
    with localcontext(prec=_DECIMAL_PRECISION):
        mean_treated = treated_total / treated_users
        mean_control = control_total / control_users
        exact_difference = mean_treated - mean_control
    return RevenueUplift(
        users_treated=treated_users,
        users_control=control_users,
        confidence=level,
        total_treated=_cents(treated_total),
        total_control=_cents(control_total),
        mean_treated=_cents(mean_treated),
        mean_control=_cents(mean_control),
        difference=_cents(exact_difference),
        welch_lower=_cents(_decimal_from_float(difference - margin)),
        welch_upper=_cents(_decimal_from_float(difference + margin)),
        standard_error=standard_error,
        degrees_of_freedom=degrees_of_freedom,
        t=t_statistic,
        p_value=p_value,
        bootstrap_lower=_cents(_decimal_from_float(bootstrap_low)),
        bootstrap_upper=_cents(_decimal_from_float(bootstrap_high)),
        bootstrap_method=bootstrap_method,
        bootstrap_resamples=_count("resamples", resamples),
        bootstrap_seed=seed_parts,
    )


# --------------------------------------------------------------------------- return on cost


def campaign_return(cost: MoneyInput, conversion: ConversionUplift, revenue: RevenueUplift) -> CampaignReturn:
    """Scale per-user uplift to the treated arm and set it against the arm's cost.

    Incremental conversions = rate difference x treated users (Newcombe bounds scaled).
    Incremental revenue = treated total - control total x treated users / control users,
    in Decimal; its bounds scale the Welch interval, recomputed here at full precision
    from the standard error and df so cent rounding is not multiplied by the user count.
    ROI = (incremental revenue - cost) / cost and its bounds follow from the revenue
    bounds; with zero cost ROI is None and ``note`` says why.
    """
    spend = _money_input(cost, "cost")
    if (conversion.users_treated, conversion.users_control) != (revenue.users_treated, revenue.users_control):
        raise ValueError("conversion and revenue results describe different arm sizes")
    if conversion.confidence != revenue.confidence:
        raise ValueError("conversion and revenue results use different confidence levels")
    treated_users = revenue.users_treated
    margin = float(stats.t.ppf(0.5 + revenue.confidence / 2.0, revenue.degrees_of_freedom)) * revenue.standard_error
    with localcontext(prec=_DECIMAL_PRECISION):
        per_user_difference = (
            revenue.total_treated / revenue.users_treated - revenue.total_control / revenue.users_control
        )
        margin_per_user = _decimal_from_float(margin)
        incremental = per_user_difference * treated_users
        incremental_lower = (per_user_difference - margin_per_user) * treated_users
        incremental_upper = (per_user_difference + margin_per_user) * treated_users
        if spend > 0:
            roi: Decimal | None = _ratio((incremental - spend) / spend)
            roi_lower: Decimal | None = _ratio((incremental_lower - spend) / spend)
            roi_upper: Decimal | None = _ratio((incremental_upper - spend) / spend)
            note = None
        else:
            roi = roi_lower = roi_upper = None
            note = "Cost is zero, so ROI is undefined; incremental revenue is reported alone."
    return CampaignReturn(
        users_treated=treated_users,
        confidence=revenue.confidence,
        cost=_cents(spend),
        incremental_conversions=conversion.difference * treated_users,
        incremental_conversions_lower=conversion.difference_lower * treated_users,
        incremental_conversions_upper=conversion.difference_upper * treated_users,
        incremental_revenue=_cents(incremental),
        incremental_revenue_lower=_cents(incremental_lower),
        incremental_revenue_upper=_cents(incremental_upper),
        roi=roi,
        roi_lower=roi_lower,
        roi_upper=roi_upper,
        note=note,
    )


# --------------------------------------------------------------------------- sample ratio


def sample_ratio_mismatch(
    observed_users: Mapping[str, int],
    configured_shares: Mapping[str, float | int | Decimal],
    threshold: float = SRM_P_THRESHOLD,
) -> SampleRatioCheck:
    """Test observed arm sizes against the configured split with a chi-square goodness of fit.

    Shares are any positive weights (0.5/0.5 and 50/50 mean the same) and must name
    exactly the observed arms. ``mismatch`` is p < threshold. With no users at all there
    is no evidence of a mismatch, so the statistic is 0 and p is 1. The chi-square
    approximation wants every expected count at about five or more.
    """
    arms = tuple(observed_users)
    if len(arms) < 2:
        raise ValueError("a sample-ratio check needs at least two arms")
    if set(arms) != set(configured_shares):
        raise ValueError(f"configured shares name {sorted(configured_shares)} but observed arms are {sorted(arms)}")
    level = float(threshold)
    if not 0.0 < level < 1.0:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold!r}")
    observed = tuple(_count(f"users of {arm}", observed_users[arm]) for arm in arms)
    weights = np.array([float(configured_shares[arm]) for arm in arms])
    if not np.all(np.isfinite(weights)) or np.any(weights <= 0.0):
        raise ValueError("configured shares must be positive and finite")
    shares = weights / weights.sum()
    total = sum(observed)
    expected = shares * total
    if total == 0:
        statistic, p_value = 0.0, 1.0
    else:
        result = stats.chisquare(np.array(observed, dtype=np.float64), expected)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    degrees_of_freedom = len(arms) - 1
    mismatch = p_value < level
    warning = None
    if mismatch:
        observed_split = " / ".join(
            f"{arm} {count:,} ({count / total:.1%})" for arm, count in zip(arms, observed, strict=True)
        )
        configured_split = " / ".join(f"{share:.1%}" for share in shares)
        warning = (
            f"Sample ratio mismatch: observed {observed_split} against a configured split of "
            f"{configured_split} (chi-square {statistic:.2f}, df {degrees_of_freedom}, "
            f"p = {p_value:.2g}, below {level:g}). Assignment or exposure logging is probably "
            f"broken; do not trust the effect estimates until the cause is found."
        )
    return SampleRatioCheck(
        arms=arms,
        observed=observed,
        expected=tuple(float(value) for value in expected),
        configured_shares=tuple(float(share) for share in shares),
        statistic=statistic,
        degrees_of_freedom=degrees_of_freedom,
        p_value=p_value,
        threshold=level,
        mismatch=mismatch,
        warning=warning,
    )


# --------------------------------------------------------------------------- retention


def _retention_sample(arm: str, durations: Sequence[float], churned: Sequence[bool]) -> tuple[FloatArray, BoolArray]:
    """Return validated durations and churn flags of one arm."""
    times = np.asarray(durations, dtype=np.float64)
    flags = np.asarray(churned)
    if times.ndim != 1 or flags.ndim != 1 or times.size != flags.size:
        raise ValueError(f"retention of {arm}: durations and churn flags must be equal-length sequences")
    if times.size == 0:
        raise NotEnoughData(f"retention of {arm} has no users to follow")
    if not np.all(np.isfinite(times)) or np.any(times < 0.0):
        raise ValueError(f"retention of {arm}: durations must be finite and non-negative")
    if flags.dtype != np.bool_ and not np.all(np.isin(flags, (0, 1))):
        raise ValueError(f"retention of {arm}: churn flags must be booleans or 0/1")
    return times, flags.astype(np.bool_)


def retention_comparison(
    durations: Mapping[str, Sequence[float]],
    churned: Mapping[str, Sequence[bool]],
    confidence: float = DEFAULT_CONFIDENCE,
) -> RetentionComparison:
    """Fit a Kaplan-Meier retention curve per arm and log-rank test them against each other.

    ``durations[arm]`` is how long each user was followed; ``churned[arm]`` is True
    where that time ended in churn and False where the user was still active (censored).
    Each curve is a right-continuous step function: survival[i] holds from times[i]
    until times[i + 1]; at_risk[i] counts users still followed just before times[i].
    Two arms use lifelines' logrank_test, more arms its multivariate_logrank_test.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test, multivariate_logrank_test

    level = _check_confidence(confidence)
    arms = tuple(durations)
    if len(arms) < 2:
        raise ValueError("retention comparison needs at least two arms")
    if set(arms) != set(churned):
        raise ValueError("durations and churn flags must name the same arms")
    samples = {arm: _retention_sample(arm, durations[arm], churned[arm]) for arm in arms}

    curves = []
    for arm in arms:
        times, flags = samples[arm]
        fitter = KaplanMeierFitter().fit(times, event_observed=flags, label=arm, alpha=1.0 - level)
        survival = fitter.survival_function_[arm]
        bounds = fitter.confidence_interval_survival_function_
        at_risk = fitter.event_table["at_risk"].reindex(survival.index)
        median = float(fitter.median_survival_time_)
        curves.append(
            RetentionCurve(
                arm=arm,
                users=int(times.size),
                churned=int(flags.sum()),
                times=tuple(float(value) for value in survival.index),
                survival=tuple(float(value) for value in survival.to_numpy()),
                lower=tuple(float(value) for value in bounds.iloc[:, 0].to_numpy()),
                upper=tuple(float(value) for value in bounds.iloc[:, 1].to_numpy()),
                at_risk=tuple(int(value) for value in at_risk.to_numpy()),
                median_time=median if math.isfinite(median) else None,
            )
        )

    if len(arms) == 2:
        (times_a, flags_a), (times_b, flags_b) = samples[arms[0]], samples[arms[1]]
        result = logrank_test(times_a, times_b, event_observed_A=flags_a, event_observed_B=flags_b)
    else:
        result = multivariate_logrank_test(
            np.concatenate([samples[arm][0] for arm in arms]),
            np.concatenate([np.full(samples[arm][0].size, index) for index, arm in enumerate(arms)]),
            np.concatenate([samples[arm][1] for arm in arms]),
        )
    log_rank = LogRankTest(
        arms=arms,
        statistic=float(result.test_statistic),
        degrees_of_freedom=len(arms) - 1,
        p_value=float(result.p_value),
    )
    return RetentionComparison(confidence=level, curves=tuple(curves), log_rank=log_rank)


# --------------------------------------------------------------------------- many arms


def _arm_seed(seed: int, arm: str) -> tuple[int, int]:
    """Return a bootstrap seed tied to the arm's name, so reordering arms changes nothing."""
    return (_count("seed", seed), zlib.crc32(arm.encode("utf-8")))


def compare_arms(
    arms: Mapping[str, ArmData],
    control: str,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    configured_shares: Mapping[str, float | int | Decimal] | None = None,
    srm_threshold: float = SRM_P_THRESHOLD,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    bootstrap_method: BootstrapMethod = "percentile",
) -> CampaignEvaluation:
    """Compare every arm other than ``control`` with the control arm.

    Comparisons follow the order of ``arms``. The sample-ratio check runs when
    ``configured_shares`` is given; the retention comparison runs when the arms carry
    retention data (all of them or none). Intervals are per comparison, not adjusted
    for the number of treated arms.
    """
    if control not in arms:
        raise ValueError(f"control arm {control!r} is not among the arms {sorted(arms)}")
    if len(arms) < 2:
        raise ValueError("need the control arm and at least one treated arm")
    level = _check_confidence(confidence)
    for name, data in arms.items():
        users = _count(f"users of {name}", data.users)
        if len(data.revenue) != users:
            raise ValueError(
                f"revenue of {name} has {len(data.revenue)} entries for {users} users; "
                f"give one amount per user, zeros included"
            )
    control_data = arms[control]

    comparisons = []
    for name, data in arms.items():
        if name == control:
            continue
        missing: dict[str, str] = {}
        conversion: ConversionUplift | None = None
        revenue: RevenueUplift | None = None
        returned: CampaignReturn | None = None
        try:
            conversion = conversion_uplift(
                data.conversions, data.users, control_data.conversions, control_data.users, level
            )
        except NotEnoughData as error:
            missing["conversion"] = error.reason
        try:
            revenue = revenue_uplift(
                data.revenue,
                control_data.revenue,
                level,
                resamples=resamples,
                seed=_arm_seed(seed, name),
                bootstrap_method=bootstrap_method,
            )
        except NotEnoughData as error:
            missing["revenue"] = error.reason
        if conversion is not None and revenue is not None:
            returned = campaign_return(data.cost, conversion, revenue)
        else:
            needed = " and ".join(part for part in ("conversion", "revenue") if part in missing)
            missing["campaign_return"] = (
                f"incremental revenue and ROI need the {needed} comparison: {missing[needed.split()[0]]}"
            )
        comparisons.append(
            ArmComparison(
                arm=name,
                control=control,
                conversion=conversion,
                revenue=revenue,
                campaign_return=returned,
                not_enough_data=missing,
            )
        )

    campaign_missing: dict[str, str] = {}
    sample_ratio = None
    if configured_shares is not None:
        sample_ratio = sample_ratio_mismatch(
            {name: data.users for name, data in arms.items()}, configured_shares, srm_threshold
        )

    retention_durations: dict[str, Sequence[float]] = {}
    retention_churned: dict[str, Sequence[bool]] = {}
    for name, data in arms.items():
        if data.retention_durations is not None and data.retention_churned is not None:
            retention_durations[name] = data.retention_durations
            retention_churned[name] = data.retention_churned
        elif data.retention_durations is not None or data.retention_churned is not None:
            raise ValueError(f"retention of {name} needs both durations and churn flags")
    retention = None
    if retention_durations:
        if len(retention_durations) != len(arms):
            raise ValueError("retention data must be given for every arm or for none")
        try:
            retention = retention_comparison(retention_durations, retention_churned, level)
        except NotEnoughData as error:
            campaign_missing["retention"] = error.reason

    return CampaignEvaluation(
        control=control,
        confidence=level,
        comparisons=tuple(comparisons),
        sample_ratio=sample_ratio,
        retention=retention,
        not_enough_data=campaign_missing,
    )
