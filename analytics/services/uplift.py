"""Uplift data: past experiments with a holdout as training rows, features as of each experiment, predictions.

An *experiment* is one of our campaigns that kept a holdout (its assignments, offers and the
purchases after them) or an outside experiment imported with ``import_outcomes``; the
campaigns side reads them (``campaigns.selectors.uplift_experiments``) and passes them in. Each user of
one is a row:

- treated users are labelled with the *package* of offer kinds they received, the kinds
  joined by ``+`` in a fixed order (``coupon``, ``coupon+free_viewing``, ``membership_grant``);
  an imported arm counts when its name is such a package, other arms are left out;
- held-out users are the control; each carries the package the rule they matched would have
  given them (its *stratum*), so that every package is compared with the held-out users of
  the same rules; an imported experiment's holdout is the control of each of its arms;
- features are computed from behaviour events *before* the experiment's assignment (before
  the start of an imported one), never after, so the purchases the offer caused cannot leak
  into what predicts them;
- outcomes are the campaign report's: converted, and revenue in CNY.

``UpliftBundle`` is the fitted artifact stored with the ``uplift`` model run: per method one
``UpliftModel`` (one arm per package) and a baseline classifier of conversion without an
offer, fitted on every held-out user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection
from threadpoolctl import threadpool_limits

from ..stats.uplift import UpliftModel
from .features import features_sql

CONTROL = "control"
ANY_STRATUM = "*"
FEATURES: tuple[str, ...] = (
    "watching_count",
    "course_view_count",
    "purchasing_count",
    "purchase_days",
    "total_spend",
    "activity_count",
    "discounts_received",
    "is_member",
    "membership_paid",
    "days_since_last_event",
    "days_since_last_purchase",
    "tenure_days",
    "age",
    "watching_per_year",
    "course_views_per_year",
    "purchases_per_year",
    "activities_per_year",
    "redemptions_per_year",
)
# Rates per year of a user's time since their first event (at least this many days), so that
# a user who arrived last month is not mistaken for an inactive one.
MINIMUM_EXPOSURE_DAYS = 30.0
_RATES = {
    "watching_per_year": "watching_count",
    "course_views_per_year": "course_view_count",
    "purchases_per_year": "purchasing_count",
    "activities_per_year": "activity_count",
    "redemptions_per_year": "discounts_received",
}
_COUNTS = (
    "watching_count",
    "course_view_count",
    "purchasing_count",
    "purchase_days",
    "total_spend",
    "activity_count",
    "discounts_received",
)


def _days(later: datetime, earlier: pd.Series) -> np.ndarray:
    moments = pd.to_datetime(earlier, utc=True, format="ISO8601")
    return ((pd.Timestamp(later) - moments).dt.total_seconds() / 86_400.0).to_numpy(dtype=float)


def uplift_features(user_ids: Sequence[int] | np.ndarray, *, as_of: datetime) -> pd.DataFrame:
    """Return the model's features of these users from their events before ``as_of``, one row per id in order.

    Users without events get zero counts; a missing time or amount (no purchase yet, no
    membership, no age) is -1, below every real value, so the trees set such users apart
    (and a column missing for everyone still bins).
    """
    ids = np.asarray(user_ids, dtype=np.int64)
    if not len(ids):
        return pd.DataFrame(columns=list(FEATURES), index=pd.Index(ids, name="user_id"), dtype=float)
    as_of = as_of.astimezone(UTC)
    low, high = int(ids.min()), int(ids.max()) + 1
    user_filter = "AND e.user_id >= %(low)s AND e.user_id < %(high)s"
    with connection.cursor() as cursor:
        cursor.execute(
            features_sql(as_of_param=True, user_filter=user_filter),
            {"zone": settings.TIME_ZONE, "as_of": as_of, "low": low, "high": high},
        )
        events = pd.DataFrame(cursor.fetchall(), columns=[column[0] for column in cursor.description])
        cursor.execute("SELECT id, age, signed_up_at FROM analytics_enduser WHERE id >= %s AND id < %s", [low, high])
        users = pd.DataFrame(cursor.fetchall(), columns=["user_id", "age", "signed_up_at"])
    events = events.set_index("user_id").reindex(ids)
    users = users.set_index("user_id").reindex(ids)
    frame = pd.DataFrame(index=pd.Index(ids, name="user_id"))
    for name in _COUNTS:
        frame[name] = pd.to_numeric(events[name], errors="coerce").fillna(0.0).astype(float).to_numpy()
    started = pd.to_datetime(events["membership_started_at"], utc=True, format="ISO8601")
    cancelled = pd.to_datetime(events["membership_cancelled_at"], utc=True, format="ISO8601")
    frame["is_member"] = (started.notna() & (cancelled.isna() | (cancelled < started))).astype(float).to_numpy()
    frame["membership_paid"] = pd.to_numeric(events["membership_paid"], errors="coerce").astype(float).to_numpy()
    frame["days_since_last_event"] = _days(as_of, events["last_event_at"])
    frame["days_since_last_purchase"] = _days(as_of, events["last_purchase_at"])
    joined = pd.to_datetime(users["signed_up_at"], utc=True, format="ISO8601").fillna(
        pd.to_datetime(events["first_event_at"], utc=True, format="ISO8601")
    )
    frame["tenure_days"] = _days(as_of, joined)
    frame["age"] = pd.to_numeric(users["age"], errors="coerce").astype(float).to_numpy()
    exposure = np.maximum(np.nan_to_num(_days(as_of, events["first_event_at"]), nan=0.0), MINIMUM_EXPOSURE_DAYS)
    for rate, count in _RATES.items():
        frame[rate] = frame[count].to_numpy() * 365.0 / exposure
    return frame[list(FEATURES)].fillna(-1.0)


@dataclass
class ExperimentRows:
    """Training rows of every experiment: one per user and experiment."""

    frame: pd.DataFrame  # experiment, user_id, role (treated/control), package, converted, revenue, share
    features: pd.DataFrame  # one row per row of ``frame``, FEATURES columns
    sources: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _treated_shares(rows: pd.DataFrame) -> pd.Series:
    """Return each row's probability of being treated rather than held out, within its experiment and package."""
    shares = pd.Series(np.nan, index=rows.index)
    for (experiment, package), group in rows[rows["role"] == "treated"].groupby(["experiment", "package"]):
        same = rows["experiment"] == experiment
        controls = same & (rows["role"] == CONTROL) & rows["package"].isin([package, ANY_STRATUM])
        share = len(group) / (len(group) + int(controls.sum())) if controls.any() else np.nan
        shares[group.index] = share
    return shares


@dataclass(frozen=True)
class Experiment:
    """One past experiment's users, as the campaigns side reads them from its records or an import.

    ``rows`` holds user_id, role (treated/control), package, converted and revenue; features
    are computed from events before ``as_of``, the moment its users were assigned.
    """

    name: str
    kind: str
    as_of: datetime
    rows: pd.DataFrame


def experiment_rows(experiments: Iterable[Experiment], *, skipped: Sequence[str] = ()) -> ExperimentRows:
    """Collect the training rows of these experiments, features included; ``skipped`` says which were left out."""
    frames, feature_frames, sources = [], [], []
    for experiment in experiments:
        rows = experiment.rows.assign(experiment=experiment.name).reset_index(drop=True)
        rows["converted"] = rows["converted"].astype(float)
        rows["revenue"] = rows["revenue"].astype(float)
        features = uplift_features(rows["user_id"].to_numpy(), as_of=experiment.as_of)
        feature_frames.append(features.reset_index(drop=True))
        frames.append(rows)
        sources.append(
            {
                "campaign": experiment.name,
                "kind": experiment.kind,
                "as_of": experiment.as_of.isoformat(),
                "users": len(rows),
                "treated": int((rows["role"] == "treated").sum()),
                "control": int((rows["role"] == CONTROL).sum()),
                "packages": sorted(set(rows.loc[rows["role"] == "treated", "package"])),
            }
        )
    if not frames:
        empty = pd.DataFrame(columns=["experiment", "user_id", "role", "package", "converted", "revenue", "share"])
        return ExperimentRows(empty, pd.DataFrame(columns=list(FEATURES)), sources, list(skipped))
    frame = pd.concat(frames, ignore_index=True)
    frame["share"] = _treated_shares(frame)
    return ExperimentRows(frame, pd.concat(feature_frames, ignore_index=True), sources, list(skipped))


def held_out_mask(user_ids: np.ndarray, share: float) -> np.ndarray:
    """Return a stable draw of evaluation users: the same user is held out of training in every run."""
    with np.errstate(over="ignore"):
        z = np.asarray(user_ids, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) / float(1 << 53)) < share


@dataclass(frozen=True)
class CrossFit:
    """Past experiments' rows split into folds, each with the selected method's models fitted on the other folds.

    A choice for the rows of fold ``k`` is made with ``models[k]`` and ``baselines[k]``, which
    never saw those rows, and valued on their randomised outcomes
    (``analytics.stats.uplift_validation``). ``package`` is a treated row's package, a held-out
    row's stratum (``ANY_STRATUM``: every package of its experiment); ``shares`` maps
    ``"<experiment>|<package>"`` to that package's probability of treatment in the experiment.
    """

    folds: np.ndarray
    models: tuple[UpliftModel | None, ...]
    baselines: tuple[Any, ...]
    features: np.ndarray
    treated: np.ndarray
    converted: np.ndarray
    package: np.ndarray
    experiment: np.ndarray
    shares: dict[str, float]

    @property
    def k(self) -> int:
        """Return the number of folds."""
        return len(self.models)

    def randomised(self, packages: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return, per row and package, whether its experiment randomised that package for it, and the share."""
        informative = np.zeros((len(self.package), len(packages)), dtype=bool)
        share = np.full(informative.shape, 0.5)
        for column, name in enumerate(packages):
            probability = np.array(
                [self.shares.get(f"{experiment}|{name}", np.nan) for experiment in self.experiment], dtype=float
            )
            known = np.isfinite(probability) & ((self.package == name) | (self.package == ANY_STRATUM))
            informative[:, column] = known
            share[known, column] = probability[known]
        return informative, share


@dataclass(frozen=True)
class UpliftBundle:
    """The fitted uplift models of one run: per method one model with one arm per offer package, and a baseline.

    ``trusted`` holds the packages whose selected model's held-out Qini coefficient (of
    conversion) has its bootstrap interval above zero: only those the optimiser may spend on.
    Runs stored before the intervals existed trust no package.
    """

    feature_names: tuple[str, ...]
    models: dict[str, UpliftModel]
    baseline: Any  # a classifier of conversion without an offer, fitted on every held-out user
    selected: str  # the method the optimiser uses: the best on held-out users
    trusted: tuple[str, ...] = ()
    qini_intervals: dict[str, dict[str, float]] = field(default_factory=dict)  # per package, of the selected method
    crossfit: CrossFit | None = None

    @property
    def packages(self) -> tuple[str, ...]:
        """Return the offer packages the models know."""
        return self.models[self.selected].arm_names

    def predict(self, features: pd.DataFrame, method: str | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Return each user's incremental conversion per package, and their conversion without an offer."""
        matrix = features[list(self.feature_names)].to_numpy(dtype=float)
        if not len(matrix):
            return {package: np.zeros(0) for package in self.packages}, np.zeros(0)
        # One thread: the optimiser predicts chunk by chunk in workers that already share the cores, where
        # OpenMP threads contending for them made the trees' predictions several times slower.
        with threadpool_limits(limits=1):
            prediction = self.models[method or self.selected].predict(matrix, with_value=False)
            uplift = {arm: prediction.conversion[:, column] for column, arm in enumerate(prediction.arms)}
            return uplift, self.baseline.predict_proba(matrix)[:, 1]
