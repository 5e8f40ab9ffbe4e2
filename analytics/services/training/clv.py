"""Train the lifetime-value models on course purchases and compare them on a holdout period.

Both models are fitted on the purchases before the observation end and judged on the
purchases after it, up to where the data ends:

* **BG/NBD + Gamma-Gamma** by maximum likelihood (``analytics.stats.bgnbd``), in weeks, with
  the conventions of Fader, Hardie & Lee: the population is every user with a course
  purchase before the observation end, T runs from the first purchase day to the observation
  end's day, and purchases on one calendar day (in ``TIME_ZONE``) are one transaction;
* the article's **Markov chain** over monthly activity states active / lapsed / churned
  (``analytics.stats.markov_clv``), a month being 365.25/12 days counted back from the
  observation end, so that the holdout starts exactly where a month ends.

The run scores with the BG/NBD model (:class:`BgNbdClvScorer`): per user the lifetime value
in CNY (the discounted expected margin over a horizon) and P(alive) as the score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd
from django.conf import settings
from django.db import connection
from django.utils import timezone

from crossmkt_site.bulk import ids_in_sql, sparse_ids
from crossmkt_site.errors import ApplicationError

from ...models import BehaviorEvent, ModelRun
from ...stats import bgnbd, markov_clv
from ..registry import model_run_save
from .common import (
    as_utc,
    event_time_bounds,
    fetch_frame,
    json_safe,
    sql_time,
    utc_series,
)

PURCHASE = BehaviorEvent.Kind.COURSE_PURCHASE.value
# By default calibration ends a quarter before now, leaving that quarter to judge the models on.
DEFAULT_HOLDOUT_WEEKS = 13
ANNUAL_DISCOUNT_RATE = 0.10
# The article values a customer at revenue (收益); a contribution margin below 1 scales every value down.
MARGIN_FRACTION = 1.0
CLV_HORIZON_WEEKS = 52
# Discounting once per four weeks differs from weekly by well under 1% over a year, at a quarter of the cost.
CLV_PERIOD_WEEKS = 4
MONTH_DAYS = 365.25 / 12
# The demo truth's states: lapsed for two quiet months, churned from the third.
CHURN_AFTER_INACTIVE_MONTHS = 3
MARKOV_LOOKBACK_MONTHS = 36
MARKOV_HORIZON_MONTHS = 12
# One pseudo-count per transition cell: negligible against thousands of observed moves, and it keeps the
# matrix defined when a small data set never shows a state being left.
MARKOV_SMOOTHING = 1.0
VALUE_BANDS = ("low", "medium", "high")
NO_PURCHASE_LABEL = "no purchase"
FITTED_PARAMETERS = ("r", "alpha", "a", "b", "p", "q", "v")

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------
# Reading the data
# --------------------------------------------------------------------------


def _sql_time(moment: datetime) -> Any:
    """Adapt an aware datetime for a raw query the way the ORM stores it (naive UTC text on SQLite)."""
    return connection.ops.adapt_datetimefield_value(moment)


def course_purchases_frame(
    *,
    before: datetime | None = None,
    excluded_items: Sequence[str] = (),
    user_id_range: tuple[int, int] | None = None,
    user_ids: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Return course purchases as user_id, occurred_at (UTC) and amount (float CNY), read in one query.

    ``user_id_range`` and ``user_ids`` each narrow the read to those users (both may be given).
    """
    where = ["kind = %s"]
    params: list[object] = [PURCHASE]
    if before is not None:
        where.append("occurred_at < %s")
        params.append(_sql_time(before))
    if excluded_items:
        where.append(f"item_id NOT IN ({', '.join(['%s'] * len(excluded_items))})")
        params.extend(excluded_items)
    if user_id_range is not None:
        where.append("user_id >= %s AND user_id < %s")
        params.extend(user_id_range)
    if user_ids is not None:
        where.append(ids_in_sql("user_id", user_ids))
    sql = (
        f"SELECT user_id, {sql_time('occurred_at')} AS occurred_at, amount "
        f"FROM {BehaviorEvent._meta.db_table} WHERE {' AND '.join(where)}"
    )
    frame = fetch_frame(sql, params)
    return pd.DataFrame(
        {
            "user_id": frame["user_id"].astype("int64"),
            "occurred_at": utc_series(frame["occurred_at"]),
            "amount": frame["amount"].astype(float),
        }
    )


# --------------------------------------------------------------------------
# The scorer stored with a run
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BgNbdClvScorer:
    """Score lifetime value with fitted BG/NBD and Gamma-Gamma parameters.

    ``score`` reads each user's course purchases before ``as_of`` from the events: the user
    fields hold no course spend, and the purchases must be the ones the model was fitted on.
    Users without a purchase get no value, no score and the label "no purchase"; buyers get
    their CLV band against the training customers.
    """

    purchases: bgnbd.BgNbdParameters
    spend: bgnbd.GammaGammaParameters
    excluded_items: tuple[str, ...]
    time_zone: str
    margin_fraction: float
    annual_discount_rate: float
    horizon_weeks: int
    value_band_edges: tuple[float, float]
    # Only the frame's user ids are used; a frame without any column would count as empty for the batch scorer.
    fields: tuple[str, ...] = ("purchase_days",)

    def score(self, frame: pd.DataFrame, *, as_of: datetime) -> pd.DataFrame:
        """Return score (P(alive)), value (CLV, CNY) and label (value band) for the users indexed by ``frame``."""
        if frame.empty:
            return pd.DataFrame(index=frame.index, columns=["score", "value", "label"])
        ids = frame.index
        purchases = course_purchases_frame(
            before=as_of,
            excluded_items=self.excluded_items,
            user_id_range=(int(ids.min()), int(ids.max()) + 1),
            user_ids=sparse_ids(ids),  # the live path's scattered users: their range would be every purchase
        )
        return self.score_purchases(purchases[purchases["user_id"].isin(ids)], index=ids, as_of=as_of)

    def score_purchases(self, purchases: pd.DataFrame, *, index: pd.Index, as_of: datetime) -> pd.DataFrame:
        """Score from a purchase frame (user_id, occurred_at, amount), all of it before ``as_of``."""
        result = pd.DataFrame({"score": np.nan, "value": np.nan, "label": NO_PURCHASE_LABEL}, index=index)
        if purchases.empty:
            return result
        summary = summarise_purchases(purchases, observation_end=as_of, time_zone=self.time_zone)
        alive = bgnbd.probability_alive(
            self.purchases, frequency=summary.frequency, recency=summary.recency, age=summary.age
        )
        value = self.lifetime_values(summary)
        result.loc[summary.customer_ids, "score"] = alive
        result.loc[summary.customer_ids, "value"] = value
        result.loc[summary.customer_ids, "label"] = np.array(VALUE_BANDS, dtype=object)[
            np.digitize(value, self.value_band_edges)
        ]
        return result

    def lifetime_values(self, summary: bgnbd.PurchaseSummary) -> FloatArray:
        """Return each summarised customer's discounted expected margin over the horizon (unrounded CNY)."""
        return bgnbd.customer_lifetime_value(
            self.purchases,
            self.spend,
            frequency=summary.frequency,
            recency=summary.recency,
            age=summary.age,
            average_repeat_spend=_repeat_spend(summary),
            margin_fraction=self.margin_fraction,
            annual_discount_rate=self.annual_discount_rate,
            horizon_weeks=self.horizon_weeks,
            period_weeks=CLV_PERIOD_WEEKS,
        )


def _repeat_spend(summary: bgnbd.PurchaseSummary) -> FloatArray:
    """Return the summary's mean spend per repeat purchase day (``summarise_purchases`` always has amounts)."""
    if summary.average_repeat_spend is None:
        raise ValueError("the purchase summary was made without amounts")
    return summary.average_repeat_spend


def last_day_before(moment: datetime, time_zone: str) -> date:
    """Return the last calendar day (in ``time_zone``) with time before ``moment``: the day before a midnight."""
    return (moment - timedelta(microseconds=1)).astimezone(ZoneInfo(time_zone)).date()


def summarise_purchases(purchases: pd.DataFrame, *, observation_end: datetime, time_zone: str) -> bgnbd.PurchaseSummary:
    """Summarise purchases before ``observation_end`` as (x, t_x, T, m_x) on local calendar days.

    ``observation_end`` is exclusive; T runs to the last day before it (a midnight end closes the
    day before), as lifetimes' ``calibration_period_end`` and Fader, Hardie and Lee's 39-week
    CDNOW calibration (through 30 September 1997) count it.
    """
    before = purchases[purchases["occurred_at"] < observation_end]
    zone = ZoneInfo(time_zone)
    return bgnbd.summarise_transactions(
        before["user_id"].to_numpy(),
        before["occurred_at"].dt.tz_convert(zone),
        observation_end=last_day_before(observation_end, time_zone),
        amounts=before["amount"].to_numpy(),
    )


# --------------------------------------------------------------------------
# Fitting and comparing the two models
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClvTraining:
    """Hold what a lifetime-value training produced: the scorer, JSON-ready params and metrics, and its data."""

    scorer: BgNbdClvScorer
    params: dict[str, Any]
    metrics: dict[str, Any]
    n_customers: int
    data_start: datetime


@dataclass(frozen=True)
class _MarkovFit:
    model: markov_clv.MarkovChainModel
    current_states: npt.NDArray[np.object_]
    purchases_per_state: FloatArray
    spend_per_state: FloatArray
    n_months: int


def clv_models_fit(
    purchases: pd.DataFrame,
    *,
    observation_end: datetime,
    holdout_end: datetime | None,
    time_zone: str,
    excluded_items: Sequence[str] = (),
    margin_fraction: float = MARGIN_FRACTION,
    annual_discount_rate: float = ANNUAL_DISCOUNT_RATE,
    horizon_weeks: int = CLV_HORIZON_WEEKS,
) -> ClvTraining:
    """Fit BG/NBD + Gamma-Gamma and the Markov chain on purchases before ``observation_end``; judge both after it.

    ``purchases`` holds user_id, occurred_at (aware) and amount (float CNY), already without
    ``excluded_items`` (recorded in the params). The holdout runs from the observation end to
    ``holdout_end``; without one, or when it is not a day or more after the observation end,
    the metrics say so instead of comparing.
    """
    calibration = purchases[purchases["occurred_at"] < observation_end]
    summary = summarise_purchases(calibration, observation_end=observation_end, time_zone=time_zone)
    if len(summary.customer_ids) == 0:
        raise ApplicationError(
            f"no course purchases before {observation_end:%Y-%m-%d}: nothing to fit lifetime value on; "
            "import events or choose a later --observation-end",
            code="no_data",
            field="observation_end",
        )
    if not np.any(summary.frequency > 0):
        raise ApplicationError(
            "no customer bought on two different days before the observation end: the spend "
            "model has nothing to fit; choose a later --observation-end",
            code="no_data",
            field="observation_end",
        )
    purchase_fit = bgnbd.fit_bgnbd(frequency=summary.frequency, recency=summary.recency, age=summary.age)
    spend_fit = bgnbd.fit_gamma_gamma(frequency=summary.frequency, average_repeat_spend=_repeat_spend(summary))
    if spend_fit.parameters.q <= 1:
        raise ApplicationError(
            f"the spend model's q = {spend_fit.parameters.q:.3f} <= 1 implies an infinite mean "
            "spend; the purchases do not fit Gamma-Gamma",
            code="bad_fit",
            field="model",
        )

    scorer_without_bands = BgNbdClvScorer(
        purchases=purchase_fit.parameters,
        spend=spend_fit.parameters,
        excluded_items=tuple(excluded_items),
        time_zone=time_zone,
        margin_fraction=margin_fraction,
        annual_discount_rate=annual_discount_rate,
        horizon_weeks=horizon_weeks,
        value_band_edges=(0.0, 0.0),
    )
    lifetime_values = scorer_without_bands.lifetime_values(summary)
    lower_edge, upper_edge = np.quantile(lifetime_values, [1 / 3, 2 / 3])
    band_edges = (float(lower_edge), float(upper_edge))
    scorer = replace(scorer_without_bands, value_band_edges=band_edges)

    markov = _markov_fit(calibration, summary.customer_ids, observation_end=observation_end, time_zone=time_zone)
    markov_values = markov_clv.customer_lifetime_values(
        markov.current_states,
        markov_clv.state_lifetime_values(
            markov.model.transition_matrix,
            margin_fraction * markov.spend_per_state,
            annual_discount_rate=annual_discount_rate,
            horizon_months=MARKOV_HORIZON_MONTHS,
        ),
    )

    params = {
        **asdict(purchase_fit.parameters),
        **asdict(spend_fit.parameters),
        "standard_errors": {**asdict(purchase_fit.standard_errors), **asdict(spend_fit.standard_errors)},
        "time_unit": "weeks",
        "observation_end": observation_end,
        "holdout_end": holdout_end,
        "time_zone": time_zone,
        "excluded_items": list(excluded_items),
        "margin_fraction": margin_fraction,
        "annual_discount_rate": annual_discount_rate,
        "horizon_weeks": horizon_weeks,
        "value_band_edges": list(band_edges),
        "markov": {
            "states": list(markov.model.states),
            "month_days": MONTH_DAYS,
            "months_observed": markov.n_months,
            "churn_after_inactive_months": CHURN_AFTER_INACTIVE_MONTHS,
            "transition_matrix": markov.model.transition_matrix.round(6).tolist(),
            "transition_counts": markov.model.transition_counts.tolist(),
            "monthly_purchases_per_state": markov.purchases_per_state.round(6).tolist(),
            "monthly_spend_per_state": markov.spend_per_state.round(4).tolist(),
            "horizon_months": MARKOV_HORIZON_MONTHS,
        },
    }
    holdout = _holdout_comparison(
        purchases,
        summary,
        markov,
        purchase_fit.parameters,
        spend_fit.parameters,
        observation_end=observation_end,
        holdout_end=holdout_end,
        time_zone=time_zone,
    )
    metrics = {
        "n_customers": len(summary.customer_ids),
        "n_repeat_customers": int(np.sum(summary.frequency > 0)),
        "bgnbd": _fit_diagnostics(purchase_fit),
        "gamma_gamma": _fit_diagnostics(spend_fit),
        "spend_frequency_correlation": _correlation(
            summary.frequency[summary.frequency > 0], _repeat_spend(summary)[summary.frequency > 0]
        ),
        "lifetime_value": {
            "bgnbd": _distribution(lifetime_values),
            "markov": _distribution(markov_values),
            "correlation_between_models": _correlation(lifetime_values, markov_values),
        },
        "holdout": holdout,
    }
    if holdout["compared"]:
        # One line each in the train command's summary: per-customer error of each model's holdout purchases.
        metrics["holdout_purchases_mae_bgnbd"] = holdout["bgnbd"]["purchases"]["mae"]
        metrics["holdout_purchases_mae_markov"] = holdout["markov"]["purchases"]["mae"]
    return ClvTraining(
        scorer, params, metrics, len(summary.customer_ids), calibration["occurred_at"].min().to_pydatetime()
    )


def _fit_diagnostics(fit: bgnbd.MaximumLikelihoodFit) -> dict[str, Any]:
    return {
        "log_likelihood": fit.log_likelihood,
        "n_customers": fit.n_customers,
        "converged": fit.converged,
        "iterations": fit.iterations,
        "standard_error_note": fit.standard_error_note,
    }


def _daily_purchases(purchases: pd.DataFrame, time_zone: str) -> pd.DataFrame:
    """Reduce purchases to one row per user and local day: its first time and its total amount."""
    day = purchases["occurred_at"].dt.tz_convert(ZoneInfo(time_zone)).dt.tz_localize(None).dt.normalize()
    return (
        purchases.assign(day=day)
        .groupby(["user_id", "day"], as_index=False, sort=False)
        .agg(at=("occurred_at", "min"), amount=("amount", "sum"))
    )


def _markov_fit(
    calibration: pd.DataFrame, customer_ids: np.ndarray, *, observation_end: datetime, time_zone: str
) -> _MarkovFit:
    """Estimate the monthly active/lapsed/churned chain from the months before the observation end."""
    daily = _daily_purchases(calibration, time_zone)
    days_before = (pd.Timestamp(observation_end) - daily["at"]).dt.total_seconds().to_numpy() / 86_400
    months_before = np.floor(days_before / MONTH_DAYS).astype(np.int64)
    kept = months_before < MARKOV_LOOKBACK_MONTHS
    n_months = int(months_before[kept].max()) + 1 if kept.any() else 1
    column = n_months - 1 - months_before[kept]
    row = np.searchsorted(customer_ids, daily["user_id"].to_numpy()[kept])
    cell = row * n_months + column
    size = len(customer_ids) * n_months
    purchase_days = np.bincount(cell, minlength=size).reshape(len(customer_ids), n_months).astype(np.float64)
    spend = np.bincount(cell, weights=daily["amount"].to_numpy()[kept], minlength=size).reshape(
        len(customer_ids), n_months
    )

    # A month counts as active for any purchase, free courses included, hence purchase days rather than spend.
    labels = markov_clv.activity_states(purchase_days, churn_after_inactive_months=CHURN_AFTER_INACTIVE_MONTHS)
    # Churned is not absorbing: a slow buyer who is still alive comes back after three quiet months now and then.
    model = markov_clv.estimate_transition_matrix(labels, absorbing_states=(), smoothing=MARKOV_SMOOTHING)
    current = markov_clv.current_states(labels)
    # Customers whose purchases all lie beyond the look-back window have been quiet for years.
    current = np.where(pd.isna(current), markov_clv.CHURNED, current).astype(object)
    return _MarkovFit(
        model=model,
        current_states=current,
        purchases_per_state=markov_clv.expected_margin_per_state(labels, purchase_days, margin_fraction=1.0),
        spend_per_state=markov_clv.expected_margin_per_state(labels, spend, margin_fraction=1.0),
        n_months=n_months,
    )


def _markov_expected(markov: _MarkovFit, per_state: FloatArray, *, months: float) -> FloatArray:
    """Return undiscounted expected totals over ``months`` ahead per customer, linear within the last month."""
    whole = math.floor(months)

    def by_state(horizon: int) -> FloatArray:
        return markov_clv.state_lifetime_values(
            markov.model.transition_matrix, per_state, annual_discount_rate=0.0, horizon_months=horizon
        )

    lower = by_state(whole)
    value_per_state = lower + (months - whole) * (by_state(whole + 1) - lower)
    return markov_clv.customer_lifetime_values(markov.current_states, value_per_state, states=markov.model.states)


def _holdout_comparison(
    purchases: pd.DataFrame,
    summary: bgnbd.PurchaseSummary,
    markov: _MarkovFit,
    purchase_parameters: bgnbd.BgNbdParameters,
    spend_parameters: bgnbd.GammaGammaParameters,
    *,
    observation_end: datetime,
    holdout_end: datetime | None,
    time_zone: str,
) -> dict[str, Any]:
    """Compare each model's predicted purchases and spend per customer with what happened in the holdout."""
    if holdout_end is None or holdout_end <= observation_end + timedelta(days=1):
        return {"compared": False, "reason": "no holdout period after the observation end"}
    customers = summary.customer_ids
    holdout = purchases[
        (purchases["occurred_at"] >= observation_end)
        & (purchases["occurred_at"] < holdout_end)
        & purchases["user_id"].isin(customers)
    ]
    daily = _daily_purchases(holdout, time_zone)
    actual_purchases = daily.groupby("user_id").size().reindex(customers, fill_value=0).to_numpy(np.float64)
    actual_spend = daily.groupby("user_id")["amount"].sum().reindex(customers, fill_value=0.0).to_numpy(np.float64)

    days = (holdout_end - observation_end).total_seconds() / 86_400
    weeks = days / bgnbd.DAYS_PER_WEEK
    expected_purchases = bgnbd.expected_purchases_conditional(
        purchase_parameters, horizon_weeks=weeks, frequency=summary.frequency, recency=summary.recency, age=summary.age
    )
    expected_spend = expected_purchases * bgnbd.expected_average_spend(
        spend_parameters, frequency=summary.frequency, average_repeat_spend=_repeat_spend(summary)
    )
    months = days / MONTH_DAYS
    return {
        "compared": True,
        "start": observation_end,
        "end": holdout_end,
        # The window as calendar days in TIME_ZONE, both included.
        "first_day": observation_end.astimezone(ZoneInfo(time_zone)).date().isoformat(),
        "last_day": last_day_before(holdout_end, time_zone).isoformat(),
        "weeks": weeks,
        "months": months,
        "n_customers": len(customers),
        "bgnbd": {
            "purchases": _prediction_errors(expected_purchases, actual_purchases),
            "spend": _prediction_errors(expected_spend, actual_spend),
        },
        "markov": {
            "purchases": _prediction_errors(
                _markov_expected(markov, markov.purchases_per_state, months=months), actual_purchases
            ),
            "spend": _prediction_errors(_markov_expected(markov, markov.spend_per_state, months=months), actual_spend),
        },
    }


def _prediction_errors(predicted: FloatArray, actual: FloatArray) -> dict[str, float | None]:
    error = predicted - actual
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "correlation": _correlation(predicted, actual),
        "predicted_total": float(predicted.sum()),
        "actual_total": float(actual.sum()),
    }


def _correlation(first: FloatArray, second: FloatArray) -> float | None:
    """Return Pearson's r, or None where it is undefined (fewer than two points, or a constant)."""
    if len(first) < 2 or np.std(first) == 0 or np.std(second) == 0:
        return None
    return float(np.corrcoef(first, second)[0, 1])


def _distribution(values: FloatArray) -> dict[str, float]:
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "p90": float(np.quantile(values, 0.9)),
        "total": float(np.sum(values)),
    }


# --------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------


def _end_of_stored_events() -> datetime | None:
    """Return the end of the day (in TIME_ZONE) of the last stored event: the default end of the holdout."""
    last = event_time_bounds()[1]
    if last is None:
        return None
    zone = ZoneInfo(settings.TIME_ZONE)
    day = last.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(ZoneInfo("UTC"))


def default_observation_end(*, now: datetime) -> datetime:
    """Return the default calibration end: a quarter before now."""
    return now - timedelta(weeks=DEFAULT_HOLDOUT_WEEKS)


def train_clv(
    *,
    observation_end: datetime | None = None,
    data_end: datetime | None = None,
    excluded_items: Sequence[str] = (),
    activate: bool = True,
    margin_fraction: float = MARGIN_FRACTION,
    annual_discount_rate: float = ANNUAL_DISCOUNT_RATE,
    horizon_weeks: int = CLV_HORIZON_WEEKS,
) -> ModelRun:
    """Fit both lifetime-value models, compare them on the holdout period, and store the BG/NBD scorer as a run.

    Both ends are exclusive: a date given on the command line as ``1997-09-30`` arrives as
    1997-10-01 00:00 in ``TIME_ZONE``. A naive ``observation_end`` is read in ``TIME_ZONE``
    (default: a quarter before now). The holdout runs from there to ``data_end``, by default
    through the day of the last stored event (never "now": a data set that ended years ago is
    compared over the time it covers). Purchases of ``excluded_items`` (course SKUs that some
    other process sells) are left out of both.
    """
    now = timezone.now()
    observation_end = as_utc(observation_end) if observation_end else default_observation_end(now=now)
    holdout_end = as_utc(data_end) if data_end else _end_of_stored_events()
    excluded = tuple(excluded_items)
    training = clv_models_fit(
        course_purchases_frame(before=max(holdout_end or observation_end, observation_end), excluded_items=excluded),
        observation_end=observation_end,
        holdout_end=holdout_end,
        time_zone=settings.TIME_ZONE,
        excluded_items=excluded,
        margin_fraction=margin_fraction,
        annual_discount_rate=annual_discount_rate,
        horizon_weeks=horizon_weeks,
    )
    return model_run_save(
        model=ModelRun.Model.CLV,
        params=json_safe(training.params),
        metrics=json_safe(training.metrics),
        n_train=training.n_customers,
        artifact=training.scorer,
        data_start=training.data_start,
        data_end=observation_end,
        activate=activate,
    )
