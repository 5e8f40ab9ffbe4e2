"""Experiment statistics beyond one fixed-horizon comparison: CUPED, always-valid intervals, Holm, guardrails.

Pure statistics, no Django. Every difference reads "treated minus control".

Methods
-------
* **CUPED** (Deng, Xu, Kohavi and Walker 2013, "Improving the sensitivity of online controlled
  experiments by utilizing pre-experiment data", WSDM). The adjustment coefficients ``theta``
  are the slopes of the outcome on the pre-period covariates in the least-squares fit
  ``y ~ 1 + treated + covariates`` (one slope per covariate, pooled over the arms), so the
  adjusted difference ``(mean_t(y) - mean_c(y)) - (mean_t(x) - mean_c(x)) @ theta`` is exactly
  the treatment coefficient of that regression adjustment (Frisch-Waugh-Lovell). Its standard
  error is Welch's, computed on the adjusted outcomes ``y - (x - mean(x)) @ theta`` of each arm;
  the unadjusted figure beside it is the same formula with ``theta = 0``, so the reported
  variance reduction ``1 - se_adjusted**2 / se_unadjusted**2`` compares like with like. Intervals
  are Welch t intervals (Welch-Satterthwaite degrees of freedom).
* **Users without pre-period history** are not treated as zero spenders: their covariates are
  set to 0 and a 0/1 covariate "no history" joins the regression (the missing-indicator method),
  so they are adjusted by their own group's mean instead of the spenders' slope. A covariate that
  is constant over all users (no one lacks history, say) is dropped, since it carries nothing.
* **Always-valid intervals**: the mixture sequential probability ratio test with a normal mixture
  (Johari, Koomen, Pekelis and Walsh 2017, "Peeking at A/B tests: why it matters, and what to do
  about it", KDD; and 2022, "Always valid inference", Operations Research 70(3)). For an estimate
  ``d`` of the difference with variance ``s2`` and a N(0, tau2) mixture over the true difference,
  the likelihood ratio against ``theta0`` is
  ``sqrt(s2 / (s2 + tau2)) * exp(tau2 * (d - theta0)**2 / (2 * s2 * (s2 + tau2)))``; with ``n``
  users in each arm and ``s2 = 2 sigma^2 / n`` it is the paper's closed form. The always-valid
  p-value is ``min(1, 1 / ratio(0))`` and the confidence sequence holds every ``theta0`` whose
  ratio stays below ``1 / alpha``. ``tau2`` is fixed in per-user units: it makes the interval
  narrowest when the comparison holds ``tuning_users`` users. Variances are plug-in estimates
  (as in the paper's treatment of unknown variance), so the guarantee is asymptotic.
* **Holm** step-down adjustment (Holm 1979, Scand J Statist 6:65-70): sort the m p-values
  ascending, multiply the k-th smallest by ``m - k + 1``, take the running maximum and cap at 1.
  It keeps the family-wise error rate at alpha under any dependence between the tests.
* **Guardrails**: membership churn as a Cox proportional-hazards ratio of a treated arm against
  the control (lifelines ``CoxPHFitter``, Wald interval on the log hazard ratio), harmful when the
  whole interval lies above 1; redemption rollbacks as the share of redemptions rolled back with a
  Wilson score interval, harmful when the whole interval lies above the tolerated share.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import optimize, stats

from analytics.stats.effects import NotEnoughData, _JsonResult, wilson_interval

FloatArray = npt.NDArray[np.float64]

DEFAULT_CONFIDENCE = 0.95
DEFAULT_TUNING_USERS = 10_000
DEFAULT_ROLLBACK_TOLERANCE = 0.02

ALWAYS_VALID = "always-valid"
FIXED_HORIZON = "fixed-horizon"


def _alpha(confidence: float) -> float:
    level = float(confidence)
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    return 1.0 - level


# --------------------------------------------------------------------------- Holm


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Return Holm's step-down adjusted p-values in the given order; ``None`` stays ``None``, outside the family."""
    present = [index for index, value in enumerate(p_values) if value is not None and math.isfinite(value)]
    adjusted: list[float | None] = [None] * len(p_values)
    if not present:
        return adjusted
    raw = np.array([float(p_values[index]) for index in present])  # type: ignore[arg-type]
    if np.any((raw < 0) | (raw > 1)):
        raise ValueError("p-values must lie between 0 and 1")
    order = np.argsort(raw, kind="stable")
    m = len(raw)
    scaled = raw[order] * (m - np.arange(m))
    stepped = np.minimum(np.maximum.accumulate(scaled), 1.0)
    for position, original in enumerate(order):
        adjusted[present[original]] = float(stepped[position])
    return adjusted


def holm_adjust_array(p_values: FloatArray) -> FloatArray:
    """Holm-adjust each row of a (campaigns, tests) array of p-values at once (for simulations)."""
    values = np.atleast_2d(np.asarray(p_values, dtype=np.float64))
    m = values.shape[1]
    order = np.argsort(values, axis=1, kind="stable")
    ranked = np.take_along_axis(values, order, axis=1) * (m - np.arange(m))
    stepped = np.minimum(np.maximum.accumulate(ranked, axis=1), 1.0)
    adjusted = np.empty_like(values)
    np.put_along_axis(adjusted, order, stepped, axis=1)
    return adjusted


# --------------------------------------------------------------------------- mixture SPRT


def msprt_likelihood_ratio(
    estimate: npt.ArrayLike, variance: npt.ArrayLike, tau2: npt.ArrayLike, null: float = 0.0
) -> FloatArray:
    """Return the normal-mixture likelihood ratio of an estimate with the given variance against ``null``."""
    d = np.asarray(estimate, dtype=np.float64) - null
    s2 = np.asarray(variance, dtype=np.float64)
    t2 = np.asarray(tau2, dtype=np.float64)
    log_ratio = 0.5 * np.log(s2 / (s2 + t2)) + t2 * d * d / (2.0 * s2 * (s2 + t2))
    return np.asarray(np.exp(log_ratio), dtype=np.float64)


def msprt_half_width(variance: npt.ArrayLike, tau2: npt.ArrayLike, alpha: float) -> FloatArray:
    """Return the half-width of the confidence sequence: where the likelihood ratio reaches ``1 / alpha``."""
    s2 = np.asarray(variance, dtype=np.float64)
    t2 = np.asarray(tau2, dtype=np.float64)
    bound = math.log(1.0 / alpha) + 0.5 * np.log((s2 + t2) / s2)
    return np.asarray(np.sqrt(2.0 * s2 * (s2 + t2) / t2 * bound), dtype=np.float64)


@functools.lru_cache(maxsize=32)
def mixture_tuning_ratio(alpha: float) -> float:
    """Return tau2 / s2 at which the confidence sequence is narrowest for a given variance ``s2``."""

    def width(log_ratio: float) -> float:
        ratio = math.exp(log_ratio)
        return (1.0 + 1.0 / ratio) * (2.0 * math.log(1.0 / alpha) + math.log1p(ratio))

    found = optimize.minimize_scalar(width, bounds=(-5.0, 10.0), method="bounded")
    return math.exp(float(found.x))


def mixture_variance(variance: npt.ArrayLike, users: npt.ArrayLike, tuning_users: int, alpha: float) -> FloatArray:
    """Return tau2: the mixture variance that makes the interval narrowest at ``tuning_users`` users.

    ``variance * users`` is the per-user variance of the difference (constant as users arrive in a
    steady split), so tau2 is fixed in advance up to the plug-in variance estimate.
    """
    if tuning_users < 2:
        raise ValueError("tuning_users must be at least 2")
    per_user = np.asarray(variance, dtype=np.float64) * np.asarray(users, dtype=np.float64)
    return np.asarray(mixture_tuning_ratio(alpha) * per_user / tuning_users, dtype=np.float64)


@dataclass(frozen=True)
class AlwaysValidInterval(_JsonResult):
    """Hold a difference with its always-valid (mSPRT) interval and p-value."""

    interval_kind: str
    estimate: float
    lower: float
    upper: float
    p_value: float
    confidence: float
    tuning_users: int
    mixture_variance: float


def always_valid_interval(
    estimate: float,
    variance: float,
    users: int,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    tuning_users: int = DEFAULT_TUNING_USERS,
) -> AlwaysValidInterval:
    """Return the always-valid interval and p-value of a difference ``estimate`` with ``variance`` from ``users``."""
    alpha = _alpha(confidence)
    if not (variance > 0 and math.isfinite(variance)):
        raise NotEnoughData("the difference has no spread yet (every user has the same outcome)")
    tau2 = float(mixture_variance(variance, users, tuning_users, alpha))
    half = float(msprt_half_width(variance, tau2, alpha))
    ratio = float(msprt_likelihood_ratio(estimate, variance, tau2))
    return AlwaysValidInterval(
        interval_kind=ALWAYS_VALID,
        estimate=float(estimate),
        lower=float(estimate) - half,
        upper=float(estimate) + half,
        p_value=min(1.0, 1.0 / ratio) if ratio > 0 else 1.0,
        confidence=1.0 - alpha,
        tuning_users=tuning_users,
        mixture_variance=tau2,
    )


def difference_variance(treated: npt.ArrayLike, control: npt.ArrayLike) -> tuple[float, float]:
    """Return the difference of means of two samples and Welch's variance of it."""
    t = np.asarray(treated, dtype=np.float64)
    c = np.asarray(control, dtype=np.float64)
    if len(t) < 2 or len(c) < 2:
        raise NotEnoughData("each arm needs at least two users")
    return float(t.mean() - c.mean()), float(t.var(ddof=1) / len(t) + c.var(ddof=1) / len(c))


# --------------------------------------------------------------------------- CUPED


@dataclass(frozen=True)
class CupedEstimate(_JsonResult):
    """Hold a CUPED-adjusted difference beside the unadjusted one, with intervals and the variance reduction."""

    users_treated: int
    users_control: int
    confidence: float
    covariates: tuple[str, ...]
    theta: tuple[float, ...]
    estimate: float
    lower: float
    upper: float
    standard_error: float
    p_value: float
    unadjusted_estimate: float
    unadjusted_lower: float
    unadjusted_upper: float
    unadjusted_standard_error: float
    unadjusted_p_value: float
    variance_reduction: float


def covariate_columns(
    columns: Mapping[str, npt.ArrayLike], has_history: npt.ArrayLike | None = None
) -> tuple[FloatArray, tuple[str, ...]]:
    """Return the covariate matrix and its column names, with a "no_history" indicator for users without history.

    Missing values (NaN) in a covariate also count as no history for that user. A user without
    history gets 0 in every covariate and 1 in ``no_history``; constant columns are dropped.
    """
    names = list(columns)
    matrix = np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in names]) if names else None
    if matrix is None:
        raise ValueError("give at least one covariate")
    missing: npt.NDArray[np.bool_] = np.asarray(np.isnan(matrix).any(axis=1), dtype=bool)
    if has_history is not None:
        missing |= ~np.asarray(has_history, dtype=bool)
    matrix = np.where(missing[:, None], 0.0, matrix)
    matrix = np.column_stack([matrix, missing.astype(np.float64)])
    names.append("no_history")
    keep = [index for index in range(matrix.shape[1]) if np.ptp(matrix[:, index]) > 0]
    return matrix[:, keep], tuple(names[index] for index in keep)


def _welch(treated: FloatArray, control: FloatArray, alpha: float) -> tuple[float, float, float, float, float]:
    """Return estimate, lower, upper, standard error and two-sided p-value of Welch's t comparison."""
    n_t, n_c = len(treated), len(control)
    var_t, var_c = treated.var(ddof=1) / n_t, control.var(ddof=1) / n_c
    estimate = float(treated.mean() - control.mean())
    se2 = float(var_t + var_c)
    if se2 <= 0:
        return estimate, estimate, estimate, 0.0, 1.0 if estimate == 0 else 0.0
    df = se2**2 / (var_t**2 / (n_t - 1) + var_c**2 / (n_c - 1))
    se = math.sqrt(se2)
    critical = float(stats.t.ppf(1 - alpha / 2, df))
    p_value = float(2 * stats.t.sf(abs(estimate) / se, df))
    return estimate, estimate - critical * se, estimate + critical * se, se, p_value


def cuped_difference(
    treated: npt.ArrayLike,
    control: npt.ArrayLike,
    covariates_treated: npt.ArrayLike,
    covariates_control: npt.ArrayLike,
    *,
    covariate_names: Sequence[str] | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> CupedEstimate:
    """Compare treated with control adjusted for pre-period covariates (CUPED), beside the unadjusted comparison.

    ``covariates_*`` are (users, k) matrices (a 1-d array is one covariate), already free of
    missing values (see ``covariate_columns``).
    """
    alpha = _alpha(confidence)
    y_t = np.asarray(treated, dtype=np.float64)
    y_c = np.asarray(control, dtype=np.float64)
    x_t = np.asarray(covariates_treated, dtype=np.float64).reshape(len(y_t), -1)
    x_c = np.asarray(covariates_control, dtype=np.float64).reshape(len(y_c), -1)
    if x_t.shape[1] != x_c.shape[1]:
        raise ValueError("both arms need the same covariates")
    if len(y_t) < 2 or len(y_c) < 2:
        raise NotEnoughData("each arm needs at least two users")
    names = tuple(covariate_names) if covariate_names is not None else tuple(f"x{i}" for i in range(x_t.shape[1]))
    # Within-arm centring gives the slopes of y ~ 1 + treated + x, pooled over the arms.
    x_centred = np.vstack([x_t - x_t.mean(axis=0), x_c - x_c.mean(axis=0)])
    y_centred = np.concatenate([y_t - y_t.mean(), y_c - y_c.mean()])
    theta = np.linalg.lstsq(x_centred, y_centred, rcond=None)[0] if x_centred.shape[1] else np.zeros(0)
    x_mean = np.vstack([x_t, x_c]).mean(axis=0)
    adjusted_t = y_t - (x_t - x_mean) @ theta
    adjusted_c = y_c - (x_c - x_mean) @ theta
    estimate, lower, upper, se, p_value = _welch(adjusted_t, adjusted_c, alpha)
    raw_estimate, raw_lower, raw_upper, raw_se, raw_p = _welch(y_t, y_c, alpha)
    reduction = 1.0 - (se * se) / (raw_se * raw_se) if raw_se > 0 else 0.0
    return CupedEstimate(
        users_treated=len(y_t),
        users_control=len(y_c),
        confidence=1.0 - alpha,
        covariates=names,
        theta=tuple(float(value) for value in theta),
        estimate=estimate,
        lower=lower,
        upper=upper,
        standard_error=se,
        p_value=p_value,
        unadjusted_estimate=raw_estimate,
        unadjusted_lower=raw_lower,
        unadjusted_upper=raw_upper,
        unadjusted_standard_error=raw_se,
        unadjusted_p_value=raw_p,
        variance_reduction=reduction,
    )


# --------------------------------------------------------------------------- guardrails


@dataclass(frozen=True)
class HazardRatio(_JsonResult):
    """Hold the churn hazard ratio of a treated arm against the control; ``harm`` when the interval lies above 1."""

    users_treated: int
    users_control: int
    churned_treated: int
    churned_control: int
    confidence: float
    hazard_ratio: float
    lower: float
    upper: float
    p_value: float
    harm: bool


def churn_hazard_ratio(
    durations_treated: npt.ArrayLike,
    churned_treated: npt.ArrayLike,
    durations_control: npt.ArrayLike,
    churned_control: npt.ArrayLike,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
) -> HazardRatio:
    """Fit a Cox model of churn on the arm and return the treated arm's hazard ratio with its Wald interval."""
    from lifelines import CoxPHFitter  # lifelines is slow to import; only guardrails need it
    from lifelines.exceptions import ConvergenceError

    alpha = _alpha(confidence)
    d_t = np.asarray(durations_treated, dtype=np.float64)
    d_c = np.asarray(durations_control, dtype=np.float64)
    e_t = np.asarray(churned_treated, dtype=bool)
    e_c = np.asarray(churned_control, dtype=bool)
    if not len(d_t) or not len(d_c):
        raise NotEnoughData("each arm needs at least one user")
    if not (e_t.any() and e_c.any()):
        raise NotEnoughData("each arm needs at least one churned member before a hazard ratio can be estimated")
    frame = pd.DataFrame(
        {
            "duration": np.concatenate([d_t, d_c]),
            "churned": np.concatenate([e_t, e_c]),
            "treated": np.concatenate([np.ones(len(d_t)), np.zeros(len(d_c))]),
        }
    )
    # A zero follow-up time carries no risk time; lifelines needs positive durations.
    frame["duration"] = frame["duration"].clip(lower=1e-6)
    fitter = CoxPHFitter(alpha=alpha)
    try:
        fitter.fit(frame, duration_col="duration", event_col="churned")
    except ConvergenceError as error:
        raise NotEnoughData(f"the churn model did not converge on so few members ({error})") from None
    coefficient = float(fitter.params_["treated"])
    se = float(fitter.standard_errors_["treated"])
    z = float(stats.norm.ppf(1 - alpha / 2))
    # A handful of members can give a log ratio so uncertain that its bounds overflow: they are infinite.
    with np.errstate(over="ignore"):
        hazard, lower, upper = (
            float(value) for value in np.exp([coefficient, coefficient - z * se, coefficient + z * se])
        )
    return HazardRatio(
        users_treated=len(d_t),
        users_control=len(d_c),
        churned_treated=int(e_t.sum()),
        churned_control=int(e_c.sum()),
        confidence=1.0 - alpha,
        hazard_ratio=hazard,
        lower=lower,
        upper=upper,
        p_value=float(fitter.summary.loc["treated", "p"]),
        harm=lower > 1.0,
    )


@dataclass(frozen=True)
class RollbackRate(_JsonResult):
    """Hold the share of redemptions rolled back; ``harm`` when its interval lies above the tolerated share."""

    redemptions: int
    rollbacks: int
    confidence: float
    rate: float
    lower: float
    upper: float
    tolerance: float
    harm: bool


def rollback_rate(
    redemptions: int,
    rollbacks: int,
    *,
    tolerance: float = DEFAULT_ROLLBACK_TOLERANCE,
    confidence: float = DEFAULT_CONFIDENCE,
) -> RollbackRate:
    """Return the rolled-back share of redemptions with a Wilson interval, harmful above ``tolerance``."""
    _alpha(confidence)
    if redemptions <= 0:
        raise NotEnoughData("no offer of this arm has been redeemed")
    if not 0 <= rollbacks <= redemptions:
        raise ValueError("rollbacks must lie between 0 and the number of redemptions")
    lower, upper = wilson_interval(rollbacks, redemptions, confidence)
    return RollbackRate(
        redemptions=redemptions,
        rollbacks=rollbacks,
        confidence=float(confidence),
        rate=rollbacks / redemptions,
        lower=float(lower),
        upper=float(upper),
        tolerance=float(tolerance),
        harm=float(lower) > tolerance,
    )
