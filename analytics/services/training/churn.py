"""Churn: the article's Cox proportional-hazards model of membership lifetimes (lifelines).

A spell runs from a ``membership_start`` to the user's next ``membership_cancel`` of the same
plan (``item_id``) and is censored at the data end when no cancel came. Its covariates are
those the article names (the demo world plants them with the same definitions):

- ``acquisition_channel_<channel>``: one dummy per channel but the reference level;
- ``discount_depth`` = 1 − paid / list price, the list price of a plan being the highest
  ``membership_start`` amount seen for it;
- ``joined_activity_14d``: an ``activity_join`` in the 14 days before the start.

The scorer gives every current member the probability of cancelling within a horizon (90 days
by default) given the membership has lasted until now, 1 − S(t + h) / S(t), and a band:
``low`` below 0.25, ``medium`` below 0.5, ``high`` from 0.5 (``CHURN_BAND_THRESHOLDS``); users
who are not members get no score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.utils import timezone
from lifelines import CoxPHFitter, KaplanMeierFitter
from scipy.stats import chi2

from crossmkt_site.bulk import ids_in_sql, sparse_ids
from crossmkt_site.errors import ApplicationError

from ...models import ModelRun
from ...selectors import CHURN_BANDS
from ..registry import model_run_save
from .common import (
    SECONDS_PER_DAY,
    UNKNOWN_LEVEL,
    as_utc,
    category_levels,
    event_time_bounds,
    fetch_frame,
    json_safe,
    known_levels,
    require,
    sql_time,
    user_channels,
    utc_series,
)

START, CANCEL, JOIN = "membership_start", "membership_cancel", "activity_join"
ACTIVITY_LOOKBACK_DAYS = 14
DEFAULT_HORIZON_DAYS = 90
# Probability of cancelling within the horizon: below 0.25 is low, below 0.5 medium, else high.
CHURN_BAND_THRESHOLDS = (0.25, 0.5)
CHANNEL = "acquisition_channel"
NUMERIC_COVARIATES = ("discount_depth", "joined_activity_14d")
# Days at which the Kaplan-Meier curves are reported.
SURVIVAL_GRID_DAYS = (0, 7, 14, 30, 60, 90, 120, 180, 270, 365)
MINIMUM_CANCELLATIONS = 20
# The Cox model is fitted on at most this many spells, drawn with a fixed seed. On the 1M-user demo
# world (318,598 spells) a sample of 100,000 (about 60,000 cancelled) gives standard errors of
# 0.009 to 0.021, a tenth of the smallest planted effect, with every planted coefficient within
# 1.8 of them; lifelines' fit, which walks the spells in Python, stays under ten seconds.
# Kaplan-Meier curves use every spell.
COX_FIT_SAMPLE = 100_000
RANDOM_STATE = 0
SPELL_COLUMNS = {
    "user_id": object,
    "item_id": object,
    "started_at": "datetime64[ns, UTC]",
    "duration_days": float,
    "cancelled": int,
    "discount_depth": float,
    "joined_activity_14d": int,
}


def membership_events(
    *, before: datetime, user_range: tuple[int, int] | None = None, user_ids: Sequence[int] | None = None
) -> pd.DataFrame:
    """Return the membership starts and cancels before a time, and the activity joins of members, by SQL.

    ``user_range`` and ``user_ids`` each narrow the read to those users (both may be given).
    """
    users = members = ""
    params: dict[str, Any] = {"before": as_utc(before)}
    if user_range is not None:
        users = "AND e.user_id >= %(low)s AND e.user_id < %(high)s"
        members = "AND s.user_id >= %(low)s AND s.user_id < %(high)s"  # else every member's start is read for a chunk
        params |= {"low": int(user_range[0]), "high": int(user_range[1])}
    if user_ids is not None:
        users += f" AND {ids_in_sql('e.user_id', user_ids)}"
        members += f" AND {ids_in_sql('s.user_id', user_ids)}"
    frame = fetch_frame(
        f"""
        SELECT e.user_id, e.kind, e.item_id, e.amount, {sql_time("e.occurred_at")} AS occurred_at
        FROM analytics_behaviorevent e
        WHERE e.occurred_at < %(before)s {users} AND e.kind IN ('{START}', '{CANCEL}')
        UNION ALL
        -- Apart, not OR-ed with the above: so the members' set is a hash semi-join, not a list
        -- scanned once per activity row (minutes over a million users).
        SELECT e.user_id, e.kind, e.item_id, e.amount, {sql_time("e.occurred_at")} AS occurred_at
        FROM analytics_behaviorevent e
        WHERE e.occurred_at < %(before)s {users} AND e.kind = '{JOIN}' AND e.user_id IN (
            SELECT s.user_id FROM analytics_behaviorevent s
            WHERE s.kind = '{START}' AND s.occurred_at < %(before)s {members})
        """,
        params,
        text=("kind", "item_id"),
    )
    return frame.assign(
        amount=pd.to_numeric(frame["amount"], errors="coerce").astype(float),
        occurred_at=utc_series(frame["occurred_at"]).array,
    )


def plan_list_prices(events: pd.DataFrame) -> dict[str, float]:
    """Return each plan's list price: the highest amount any membership_start of it paid."""
    starts = events[events["kind"] == START]
    return starts.groupby("item_id")["amount"].max().astype(float).to_dict()


def membership_spells(
    events: pd.DataFrame,
    *,
    data_end: datetime | pd.Timestamp,
    list_prices: Mapping[str, float] | None = None,
    lookback_days: int = ACTIVITY_LOOKBACK_DAYS,
) -> pd.DataFrame:
    """Return one row per membership start: its duration in days, whether it was cancelled, and covariates.

    ``events`` has ``user_id, kind, item_id, amount, occurred_at`` (UTC); only events before
    ``data_end`` count. A start's spell ends at the first later cancel of the same user and
    plan; without one it is censored at ``data_end``. Plans missing from ``list_prices``
    take the highest start amount among ``events``.
    """
    end = pd.Timestamp(data_end).tz_convert("UTC")
    events = events[events["occurred_at"] < end]
    starts = (
        events.loc[events["kind"] == START, ["user_id", "item_id", "amount", "occurred_at"]]
        .rename(columns={"occurred_at": "started_at"})
        .sort_values("started_at", kind="stable")
    )
    cancels = (
        events.loc[events["kind"] == CANCEL, ["user_id", "item_id", "occurred_at"]]
        .rename(columns={"occurred_at": "cancelled_at"})
        .sort_values("cancelled_at", kind="stable")
    )
    joins = (
        events.loc[events["kind"] == JOIN, ["user_id", "occurred_at"]]
        .rename(columns={"occurred_at": "joined_at"})
        .sort_values("joined_at", kind="stable")
    )
    if starts.empty:
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in SPELL_COLUMNS.items()})
    spells = pd.merge_asof(
        starts,
        cancels,
        left_on="started_at",
        right_on="cancelled_at",
        by=["user_id", "item_id"],
        direction="forward",
        allow_exact_matches=False,
    )
    # The last join strictly before the start, if it is at most the lookback before it.
    spells = pd.merge_asof(
        spells,
        joins,
        left_on="started_at",
        right_on="joined_at",
        by="user_id",
        direction="backward",
        allow_exact_matches=False,
        tolerance=pd.Timedelta(days=lookback_days),
    )
    prices = plan_list_prices(events) | dict(list_prices or {})
    list_price = spells["item_id"].map(prices).astype(float).to_numpy()
    paid = spells["amount"].to_numpy(float)
    # A free plan (list price 0) has no discount to speak of.
    discount = np.where(list_price > 0, 1.0 - paid / np.where(list_price > 0, list_price, 1.0), 0.0)
    ended_at = spells["cancelled_at"].fillna(end)
    return pd.DataFrame(
        {
            "user_id": spells["user_id"].to_numpy(),
            "item_id": spells["item_id"].to_numpy(),
            "started_at": spells["started_at"].to_numpy(),
            "duration_days": ((ended_at - spells["started_at"]).dt.total_seconds() / SECONDS_PER_DAY).to_numpy(),
            "cancelled": spells["cancelled_at"].notna().astype(int).to_numpy(),
            "discount_depth": np.clip(discount, 0.0, 1.0),
            "joined_activity_14d": spells["joined_at"].notna().astype(int).to_numpy(),
        }
    )


def channel_dummies(channels: pd.Series, levels: list[str], reference: str) -> pd.DataFrame:
    """Return one 0/1 column per channel but the reference, named acquisition_channel_<channel>."""
    known = known_levels(channels, levels, reference)
    return pd.DataFrame(
        {f"{CHANNEL}_{level}": (known == level).astype(float).to_numpy() for level in levels if level != reference},
        index=channels.index,
    )


@dataclass
class ChurnScorer:
    """Score current members: probability of cancelling within the horizon given survival so far.

    The Cox baseline cumulative hazard is kept on a grid of days (at the covariate means, as
    lifelines centres it). Past the longest observed spell it grows at its average rate over
    the second half of the observed time, since a step function would freeze it there.
    """

    coefficients: dict[str, float]
    covariate_means: dict[str, float]
    channel_levels: list[str]
    channel_reference: str
    baseline_days: np.ndarray
    baseline_cumulative_hazard: np.ndarray
    tail_hazard_per_day: float
    list_prices: dict[str, float]
    horizon_days: float = DEFAULT_HORIZON_DAYS
    band_thresholds: tuple[float, float] = CHURN_BAND_THRESHOLDS
    lookback_days: int = ACTIVITY_LOOKBACK_DAYS
    fields: tuple[str, ...] = field(default=(CHANNEL,))

    def cumulative_hazard(self, days: np.ndarray) -> np.ndarray:
        """Return the baseline cumulative hazard at these days since the start."""
        days = np.asarray(days, dtype=float)
        last_day, last_value = self.baseline_days[-1], self.baseline_cumulative_hazard[-1]
        inside = np.interp(days, self.baseline_days, self.baseline_cumulative_hazard)
        return np.where(days > last_day, last_value + self.tail_hazard_per_day * (days - last_day), inside)

    def covariates(self, spells: pd.DataFrame) -> pd.DataFrame:
        """Return the model's covariates for spells that carry an acquisition_channel column."""
        dummies = channel_dummies(spells[CHANNEL], self.channel_levels, self.channel_reference)
        return pd.concat([spells[list(NUMERIC_COVARIATES)].astype(float), dummies], axis=1)[list(self.coefficients)]

    def churn_probability(self, spells: pd.DataFrame, elapsed_days: np.ndarray) -> np.ndarray:
        """Return 1 - S(t + h) / S(t) for each spell, t its elapsed days and h the horizon."""
        names = list(self.coefficients)
        centred = self.covariates(spells).to_numpy(float) - np.array([self.covariate_means[n] for n in names])
        relative_hazard = np.exp(centred @ np.array([self.coefficients[n] for n in names]))
        increase = self.cumulative_hazard(elapsed_days + self.horizon_days) - self.cumulative_hazard(elapsed_days)
        return 1.0 - np.exp(-increase * relative_hazard)

    def band(self, probability: np.ndarray) -> np.ndarray:
        """Return low / medium / high by the band thresholds."""
        return np.array(CHURN_BANDS, dtype=object)[np.searchsorted(self.band_thresholds, probability, side="right")]

    def score_members(self, frame: pd.DataFrame, events: pd.DataFrame, *, as_of: datetime) -> pd.DataFrame:
        """Return score and band for the frame's users with a running membership at as_of (their latest one)."""
        spells = membership_spells(
            events[events["user_id"].isin(frame.index)],
            data_end=as_of,
            list_prices=self.list_prices,
            lookback_days=self.lookback_days,
        )
        running = (
            spells[spells["cancelled"] == 0]
            .sort_values("started_at", kind="stable")
            .drop_duplicates("user_id", keep="last")
            .set_index("user_id")
        )
        if running.empty:
            return pd.DataFrame({"score": pd.Series(dtype=float), "label": pd.Series(dtype=object)})
        running[CHANNEL] = frame.loc[running.index, CHANNEL]
        probability = self.churn_probability(running, running["duration_days"].to_numpy(float))
        return pd.DataFrame({"score": probability, "label": self.band(probability)}, index=running.index)

    def score(self, frame: pd.DataFrame, *, as_of: datetime) -> pd.DataFrame:
        """Score the frame's current members, reading their membership events for the frame's id range."""
        if frame.empty:
            return pd.DataFrame({"score": pd.Series(dtype=float), "label": pd.Series(dtype=object)})
        id_range = (int(frame.index.min()), int(frame.index.max()) + 1)
        # The live path's scattered users are read by id: their range would be every member's events.
        events = membership_events(before=as_of, user_range=id_range, user_ids=sparse_ids(frame.index))
        return self.score_members(frame, events, as_of=as_of)


@dataclass
class ChurnFit:
    """A fitted churn model: the scorer to store, and the params and metrics of its run."""

    scorer: ChurnScorer
    params: dict[str, Any]
    metrics: dict[str, Any]
    n_train: int


def _kaplan_meier(durations: pd.Series, cancelled: pd.Series, groups: pd.Series) -> dict[str, Any]:
    """Return Kaplan-Meier survival by group, at SURVIVAL_GRID_DAYS, as plain numbers."""
    curves = {}
    for group in sorted(groups.dropna().unique(), key=str):
        members = (groups == group).to_numpy()
        fitter = KaplanMeierFitter().fit(durations[members], cancelled[members])
        curves[str(group)] = {
            "spells": int(members.sum()),
            "cancelled": int(cancelled[members].sum()),
            "median_days": fitter.median_survival_time_,
            "days": list(SURVIVAL_GRID_DAYS),
            "survival": fitter.survival_function_at_times(list(SURVIVAL_GRID_DAYS)).to_list(),
        }
    return curves


def _baseline_on_grid(fitter: CoxPHFitter) -> tuple[np.ndarray, np.ndarray, float]:
    """Return the baseline cumulative hazard on whole days and its average daily rate over the second half."""
    baseline = fitter.baseline_cumulative_hazard_.iloc[:, 0]
    last_day = float(baseline.index.max())
    days = np.arange(0.0, np.floor(last_day) + 1.0)
    # The Breslow estimate is a step function; its value at a day is that of the last step before it.
    steps = np.searchsorted(baseline.index.to_numpy(), days, side="right") - 1
    values = np.where(steps >= 0, baseline.to_numpy()[np.clip(steps, 0, None)], 0.0)
    half = len(days) // 2
    tail = (values[-1] - values[half]) / max(days[-1] - days[half], 1.0)
    return days, values, float(tail)


def _fit_sample(n_rows: int, cap: int) -> np.ndarray:
    """Return the sorted positions of at most ``cap`` of ``n_rows`` rows, drawn with the fixed random state."""
    if n_rows <= cap:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(RANDOM_STATE).choice(n_rows, cap, replace=False))


def _schoenfeld_residuals(
    covariates: np.ndarray, durations: np.ndarray, events: np.ndarray, coefficients: np.ndarray
) -> np.ndarray:
    """Return the Schoenfeld residual of every event (Efron ties), for rows sorted by duration.

    A residual is the event's covariates minus their hazard-weighted mean over the risk set
    at its time (every spell lasting at least as long); with m events tied at a time the
    mean is Efron's, averaged over removing 0, 1/m, …, (m-1)/m of the tied events' weight.
    """
    # Centring the covariates only rescales every weight by one constant, which cancels.
    weight = np.exp((covariates - covariates.mean(axis=0)) @ coefficients)
    weighted = weight[:, None] * covariates
    starts = np.flatnonzero(np.r_[True, durations[1:] != durations[:-1]])
    group = np.cumsum(np.r_[True, durations[1:] != durations[:-1]]) - 1
    # The risk set of a time holds every row from the first row of that time on.
    risk = np.cumsum(weight[::-1])[::-1][starts]
    risk_x = np.cumsum(weighted[::-1], axis=0)[::-1][starts]
    n_groups = len(starts)
    ties = np.bincount(group, weights=events, minlength=n_groups)
    tie = np.bincount(group, weights=weight * events, minlength=n_groups)
    tie_x = np.column_stack(
        [np.bincount(group, weights=weighted[:, k] * events, minlength=n_groups) for k in range(covariates.shape[1])]
    )
    with_events = np.flatnonzero(ties > 0)
    per_group = ties[with_events].astype(np.int64)
    first = np.cumsum(per_group) - per_group
    at = np.repeat(with_events, per_group)
    tied = np.repeat(per_group, per_group).astype(float)
    removed = (np.arange(per_group.sum()) - np.repeat(first, per_group)) / tied
    terms = (risk_x[at] - removed[:, None] * tie_x[at]) / ((risk[at] - removed * tie[at]) * tied)[:, None]
    mean = np.zeros_like(risk_x)
    mean[with_events] = np.add.reduceat(terms, first, axis=0)
    happened = events.astype(bool)
    return covariates[happened] - mean[group[happened]]


def proportional_hazards_test(fitter: CoxPHFitter, table: pd.DataFrame) -> pd.DataFrame:
    """Return test_statistic and p per covariate: scaled Schoenfeld residuals against the rank of time.

    The statistic is lifelines' ``proportional_hazard_test(..., time_transform="rank")``;
    lifelines computes the residuals in a Python loop that grows an array row by row, which
    is quadratic in the spells, so they are computed here with cumulative sums.
    """
    names = list(fitter.params_.index)
    durations = table["duration_days"].to_numpy(float)
    events = table["cancelled"].to_numpy(float)
    order = np.lexsort((events, durations))
    residuals = _schoenfeld_residuals(
        table[names].to_numpy(float)[order], durations[order], events[order], fitter.params_.to_numpy(float)
    )
    n_events = len(residuals)
    scaled = n_events * residuals @ fitter.variance_matrix_.loc[names, names].to_numpy(float)
    ranks = np.arange(1.0, n_events + 1.0)
    centred = ranks - ranks.mean()
    statistic = (centred @ scaled) ** 2 / (
        n_events * fitter.standard_errors_[names].to_numpy(float) ** 2 * (centred**2).sum()
    )
    return pd.DataFrame({"test_statistic": statistic, "p": chi2.sf(statistic, 1)}, index=names)


def churn_fit(
    spells: pd.DataFrame,
    *,
    reference_level: str | None = None,
    horizon_days: float = DEFAULT_HORIZON_DAYS,
    band_thresholds: tuple[float, float] = CHURN_BAND_THRESHOLDS,
    fit_sample: int = COX_FIT_SAMPLE,
) -> ChurnFit:
    """Fit the Cox model on spells with duration_days, cancelled, the covariates and acquisition_channel.

    Reports hazard ratios with 95% intervals, the concordance, the proportional-hazards
    test (scaled Schoenfeld residuals against the rank of time) and Kaplan-Meier curves by
    channel. ``reference_level`` is the channel the others are contrasted with (where it
    occurs; else the most frequent one).
    More spells than ``fit_sample`` are fitted on a fixed random sample of that many (the
    metrics and params say so); the Kaplan-Meier curves use every spell.
    """
    spells = spells[spells["duration_days"] > 0]
    require(
        int(spells["cancelled"].sum()) >= MINIMUM_CANCELLATIONS,
        f"churn needs at least {MINIMUM_CANCELLATIONS} cancelled memberships, got {int(spells['cancelled'].sum())}",
    )
    channels = spells[CHANNEL].fillna(UNKNOWN_LEVEL)
    levels, reference = category_levels(channels, stated_reference=reference_level)
    table = pd.concat(
        [
            spells[["duration_days", "cancelled", *NUMERIC_COVARIATES]].astype(float),
            channel_dummies(channels, levels, reference),
        ],
        axis=1,
    ).reset_index(drop=True)
    # Constant columns (no activity joins at all, say) have no estimate; leave them out.
    constant = [name for name in table.columns[2:] if table[name].nunique() < 2]
    table = table.drop(columns=constant)
    fitted = table.iloc[_fit_sample(len(table), fit_sample)].reset_index(drop=True)
    fitter = CoxPHFitter().fit(fitted, duration_col="duration_days", event_col="cancelled")
    summary = fitter.summary
    ph_test = proportional_hazards_test(fitter, fitted)
    days, cumulative_hazard, tail = _baseline_on_grid(fitter)
    scorer = ChurnScorer(
        coefficients=fitter.params_.to_dict(),
        covariate_means=fitted[list(fitter.params_.index)].mean().to_dict(),
        channel_levels=levels,
        channel_reference=reference,
        baseline_days=days,
        baseline_cumulative_hazard=cumulative_hazard,
        tail_hazard_per_day=tail,
        list_prices={},
        horizon_days=horizon_days,
        band_thresholds=band_thresholds,
    )
    metrics: dict[str, Any] = {
        "spells": len(fitted),
        "cancelled": int(fitted["cancelled"].sum()),
        "spells_available": len(table),
        "cox_fit_sample": {
            "cap": fit_sample,
            "spells": len(fitted),
            "of": len(table),
            "random_state": RANDOM_STATE,
            "sampled": len(fitted) < len(table),
        },
        "concordance": fitter.concordance_index_,
        "log_likelihood": fitter.log_likelihood_,
        "hazard_ratios": {
            name: {
                "coefficient": summary.loc[name, "coef"],
                "se": summary.loc[name, "se(coef)"],
                "hazard_ratio": summary.loc[name, "exp(coef)"],
                "ci95": [summary.loc[name, "exp(coef) lower 95%"], summary.loc[name, "exp(coef) upper 95%"]],
                "p_value": summary.loc[name, "p"],
            }
            for name in summary.index
        },
        "proportional_hazards_test": {
            "method": "scaled Schoenfeld residuals vs rank of time (lifelines' proportional_hazard_test, vectorised)",
            "covariates": {
                name: {"test_statistic": ph_test.loc[name, "test_statistic"], "p_value": ph_test.loc[name, "p"]}
                for name in ph_test.index
            },
            "violations_at_1_percent": [name for name in ph_test.index if ph_test.loc[name, "p"] < 0.01],
        },
        "kaplan_meier": {
            "by_acquisition_channel": _kaplan_meier(
                table["duration_days"], table["cancelled"], channels.reset_index(drop=True)
            )
        },
    }
    params = {
        "covariates": list(fitter.params_.index),
        "dropped_constant_covariates": constant,
        "channel_levels": levels,
        "reference_levels": {CHANNEL: reference},
        "coefficients": fitter.params_.to_dict(),
        "activity_lookback_days": ACTIVITY_LOOKBACK_DAYS,
        "horizon_days": horizon_days,
        "band_thresholds": {"low_below": band_thresholds[0], "medium_below": band_thresholds[1]},
        "model": "Cox proportional hazards (lifelines CoxPHFitter, Efron ties), time in days",
        "fit_sample": fit_sample,
        "random_state": RANDOM_STATE,
    }
    return ChurnFit(scorer=scorer, params=params, metrics=metrics, n_train=len(fitted))


def _data_end(observation_end: datetime | None) -> datetime:
    """Return when the observation stops: as asked, else just after the last event (not after now)."""
    if observation_end is not None:
        return as_utc(observation_end)
    _, last_event = event_time_bounds()
    if last_event is None:  # as require() would
        raise ApplicationError("churn needs membership events; none are loaded", code="not_enough_data", field="model")
    # Just after the last event, so that it counts.
    return min(last_event + timedelta(microseconds=1), timezone.now())


def _segment_labels() -> pd.Series:
    """Return each user's current segment name, where the segments model has scored users."""
    frame = fetch_frame(
        "SELECT user_id, label FROM analytics_userscore WHERE model = 'segments' AND label <> ''", text=("label",)
    )
    return frame.set_index("user_id")["label"]


def train_churn(
    *,
    observation_end: datetime | None = None,
    activate: bool = True,
    reference_level: str | None = None,
    horizon_days: float = DEFAULT_HORIZON_DAYS,
    band_thresholds: tuple[float, float] = CHURN_BAND_THRESHOLDS,
) -> ModelRun:
    """Fit the churn model on every membership spell before the data end and store it as the next run.

    The data end is ``observation_end`` (default: just after the last event); spells still
    running then are censored there. ``reference_level`` is the acquisition channel the
    others are contrasted with (default: the most frequent one).
    """
    end = _data_end(observation_end)
    events = membership_events(before=end)
    list_prices = plan_list_prices(events)
    spells = membership_spells(events, data_end=end, list_prices=list_prices)
    channels = user_channels()
    spells = spells[spells["user_id"].isin(channels.index)]
    spells = spells.assign(**{CHANNEL: channels.loc[spells["user_id"]].to_numpy()})
    fit = churn_fit(spells, reference_level=reference_level, horizon_days=horizon_days, band_thresholds=band_thresholds)
    fit.scorer.list_prices = list_prices
    segments = _segment_labels()
    if not segments.empty:
        kept = spells[spells["duration_days"] > 0]
        fit.metrics["kaplan_meier"]["by_segment"] = _kaplan_meier(
            kept["duration_days"].reset_index(drop=True),
            kept["cancelled"].reset_index(drop=True),
            kept["user_id"].map(segments).reset_index(drop=True),
        )
    params = fit.params | {"data_end": end, "list_prices": list_prices}
    return model_run_save(
        model=ModelRun.Model.CHURN,
        params=json_safe(params),
        metrics=json_safe(fit.metrics),
        n_train=fit.n_train,
        artifact=fit.scorer,
        data_start=spells["started_at"].min().to_pydatetime(),
        data_end=end,
        activate=activate,
    )
