"""Segments: k-means on standardised behaviour rates, with a readable profile and a name per segment.

Each user is described by five rates per year of their time in the data (films watched,
course pages viewed, courses bought, activities joined, offers redeemed), log1p-transformed
because they are heavily skewed, then standardised. Rates rather than counts, so that a user
who signed up last month is not "dormant" for having had little time. The clusters are
ordered by size (segment 1 is the largest) and named from their centre: a cluster whose
watching is far above average is 影迷 / film buffs, and so on (``name_segment``). A fixed
random state makes the same data give the same segments and names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from django.utils import timezone
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_samples, silhouette_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ...models import ModelRun
from ..registry import model_run_save
from .common import (
    SECONDS_PER_DAY,
    as_utc,
    event_features,
    event_time_bounds,
    json_safe,
    numeric_columns,
    require,
    users_table,
    utc_series,
)

COUNT_FIELDS = ("watching_count", "course_view_count", "purchasing_count", "activity_count", "discounts_received")
DEFAULT_K = 4
RANDOM_STATE = 0
N_INIT = 4
# k-means is fitted on at most this many users (drawn with the fixed random state) and then
# assigns everyone: centres from 200,000 users are as good as from a million, at a fifth of the time.
FIT_SAMPLE = 200_000
# Rates of users with less time than this are noisy; their time counts as this much.
MINIMUM_EXPOSURE_DAYS = 30.0
SILHOUETTE_SAMPLE = 5_000
# The k scan (silhouette per k) runs on a small sample, to help choose k without a full fit per k.
K_SCAN = range(2, 9)
K_SCAN_SAMPLE = 5_000
K_SCAN_SILHOUETTE_SAMPLE = 2_000
# A trait whose centre is this many standard deviations above average names the segment.
TRAIT_THRESHOLD = 0.25
BOTH_THRESHOLD = 0.3

# (Chinese, English) names; the English name is the label rules refer to (segment in [...]).
NAMES = {
    "film": ("影迷", "film buffs"),
    "learning": ("好学者", "eager learners"),
    "activity": ("活动达人", "activity fans"),
    "deals": ("价格敏感型", "bargain hunters"),
    "culture": ("文化达人", "culture enthusiasts"),
    "dormant": ("沉睡用户", "dormant users"),
    "regular": ("普通用户", "regular users"),
}


def behaviour_rates(counts: pd.DataFrame, exposure_days: pd.Series) -> pd.DataFrame:
    """Return each count as a rate per year of exposure (at least MINIMUM_EXPOSURE_DAYS)."""
    years = exposure_days.clip(lower=MINIMUM_EXPOSURE_DAYS).to_numpy(float)[:, None] / 365.0
    return pd.DataFrame(
        counts[list(COUNT_FIELDS)].to_numpy(float) / years, index=counts.index, columns=list(COUNT_FIELDS)
    )


def exposure_days(tenure_days: pd.Series, *, as_of: datetime, data_start: datetime | None) -> pd.Series:
    """Return each user's days in the data: since sign-up (or first event), but not before the data starts."""
    span = (as_utc(as_of) - as_utc(data_start)).total_seconds() / SECONDS_PER_DAY if data_start else np.inf
    return tenure_days.fillna(span).clip(upper=span)


def name_segment(centre: Mapping[str, float]) -> str:
    """Return the trait that names a cluster from its standardised centre (see NAMES).

    Below average on everything: dormant. Watching and learning both above average: culture
    enthusiasts. Otherwise the strongest trait if it stands out, else regular.
    """
    traits = {
        "film": centre["watching_count"],
        "learning": (centre["course_view_count"] + centre["purchasing_count"]) / 2.0,
        "activity": centre["activity_count"],
        "deals": centre["discounts_received"],
    }
    if max(centre.values()) < 0.0:
        return "dormant"
    if traits["film"] > BOTH_THRESHOLD and traits["learning"] > BOTH_THRESHOLD:
        return "culture"
    strongest = max(traits, key=lambda trait: traits[trait])
    return strongest if traits[strongest] > TRAIT_THRESHOLD else "regular"


def _unique_names(traits: list[str]) -> list[tuple[str, str]]:
    """Return (Chinese, English) names, numbering repeats in size order (film buffs, film buffs 2)."""
    seen: dict[str, int] = {}
    names = []
    for trait in traits:
        seen[trait] = seen.get(trait, 0) + 1
        zh, en = NAMES[trait]
        suffix = "" if seen[trait] == 1 else f" {seen[trait]}"
        names.append((zh + suffix, en + suffix))
    return names


@dataclass
class SegmentScorer:
    """Assign users to the nearest segment centre; label = the segment's English name."""

    feature_mean: np.ndarray
    feature_scale: np.ndarray
    centres: np.ndarray
    names_en: list[str]
    names_zh: list[str]
    data_start: datetime | None
    fields: tuple[str, ...] = field(default=(*COUNT_FIELDS, "tenure_days"))

    def standardised(self, rates: pd.DataFrame) -> np.ndarray:
        """Return log1p rates standardised with the training means and scales."""
        return (np.log1p(rates.to_numpy(float)) - self.feature_mean) / self.feature_scale

    def assign(self, rates: pd.DataFrame) -> np.ndarray:
        """Return the index of each row's nearest centre."""
        points = self.standardised(rates)
        distances = ((points[:, None, :] - self.centres[None, :, :]) ** 2).sum(axis=2)
        return distances.argmin(axis=1)

    def score(self, frame: pd.DataFrame, *, as_of: datetime) -> pd.DataFrame:
        """Return each user's segment name as label (no score)."""
        if frame.empty:
            return pd.DataFrame({"label": pd.Series(dtype=object)}, index=frame.index)
        counts = frame[list(COUNT_FIELDS)].astype(float).fillna(0.0)
        exposure = exposure_days(frame["tenure_days"].astype(float), as_of=as_of, data_start=self.data_start)
        segment = self.assign(behaviour_rates(counts, exposure))
        return pd.DataFrame({"label": np.array(self.names_en, dtype=object)[segment]}, index=frame.index)


@dataclass
class SegmentsFit:
    """A fitted segmentation: the scorer to store, and the params and metrics of its run."""

    scorer: SegmentScorer
    params: dict[str, Any]
    metrics: dict[str, Any]
    n_train: int


def _k_scan(points: np.ndarray, rng: np.random.Generator) -> dict[int, float]:
    """Return the silhouette of k-means for each k of K_SCAN, on a sample of the points."""
    sample = points[rng.choice(len(points), min(len(points), K_SCAN_SAMPLE), replace=False)]
    scan = {}
    for k in K_SCAN:
        if k < len(sample):
            labels = KMeans(k, n_init=2, random_state=RANDOM_STATE).fit_predict(sample)
            scan[k] = silhouette_score(
                sample, labels, sample_size=min(len(sample), K_SCAN_SILHOUETTE_SAMPLE), random_state=RANDOM_STATE
            )
    return scan


def _silhouette(points: np.ndarray, segment: np.ndarray) -> dict[str, float | int]:
    """Return the mean silhouette on a fixed sample of the points, its standard error and the sample's size.

    The sample is the one ``silhouette_score(sample_size=..., random_state=RANDOM_STATE)`` draws, so the
    mean is that function's; the per-point values give the standard error the quality gate compares with.
    """
    indices = np.random.RandomState(RANDOM_STATE).permutation(len(points))[: min(len(points), SILHOUETTE_SAMPLE)]
    values = silhouette_samples(points[indices], segment[indices])
    se = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("inf")
    return {"silhouette": float(np.mean(values)), "silhouette_se": se, "silhouette_n": len(values)}


def segments_fit(
    counts: pd.DataFrame, exposure: pd.Series, *, k: int = DEFAULT_K, data_start: datetime | None = None
) -> SegmentsFit:
    """Cluster users on their standardised log1p behaviour rates and describe each cluster.

    ``counts`` holds COUNT_FIELDS per user and ``exposure`` their days in the data.
    """
    # k-means on five columns is memory-bound: OpenMP threads only add synchronisation, which
    # made it three times slower with two threads than with one on a busy two-core machine.
    with threadpool_limits(limits=1):
        return _segments_fit(counts, exposure, k=k, data_start=data_start)


def _segments_fit(counts: pd.DataFrame, exposure: pd.Series, *, k: int, data_start: datetime | None) -> SegmentsFit:
    require(k >= 2, "segments need k of at least 2", code="invalid")
    require(len(counts) >= 10 * k, f"segments need at least {10 * k} users for k={k}, got {len(counts)}")
    counts = counts[list(COUNT_FIELDS)].astype(float).fillna(0.0)
    rates = behaviour_rates(counts, exposure)
    scaler = StandardScaler().fit(np.log1p(rates.to_numpy()))
    # A feature nobody has (no activities at all) would divide by zero; it then weighs nothing.
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    points = (np.log1p(rates.to_numpy()) - scaler.mean_) / scale
    rng = np.random.default_rng(RANDOM_STATE)
    fitted_on = np.sort(rng.choice(len(points), min(len(points), FIT_SAMPLE), replace=False))
    kmeans = KMeans(k, n_init=N_INIT, random_state=RANDOM_STATE).fit(points[fitted_on])
    clusters = kmeans.predict(points)
    order = np.argsort(-np.bincount(clusters, minlength=k), kind="stable")
    centres = kmeans.cluster_centers_[order]
    segment = np.argsort(order)[clusters]
    traits = [name_segment(dict(zip(COUNT_FIELDS, centre, strict=True))) for centre in centres]
    names = _unique_names(traits)
    scorer = SegmentScorer(
        feature_mean=scaler.mean_,
        feature_scale=scale,
        centres=centres,
        names_zh=[zh for zh, _ in names],
        names_en=[en for _, en in names],
        data_start=data_start,
    )

    profile = []
    for index, (zh, en) in enumerate(names):
        members = segment == index
        profile.append(
            {
                "segment": index + 1,
                "name_zh": zh,
                "name_en": en,
                "users": int(members.sum()),
                "share": float(members.mean()),
                "mean_counts": counts[members].mean().to_dict(),
                "mean_rates_per_year": rates[members].mean().to_dict(),
                "mean_exposure_days": float(exposure[members].mean()),
                "centre_standardised": dict(zip(COUNT_FIELDS, centres[index], strict=True)),
            }
        )
    metrics: dict[str, Any] = {
        "k": k,
        "inertia": float(((points - centres[segment]) ** 2).sum()),
        "fitted_on_users": len(fitted_on),
        **_silhouette(points, segment),
        "silhouette_by_k": _k_scan(points, rng),
        "profile": profile,
        "overall_mean_rates_per_year": rates.mean().to_dict(),
    }
    params = {
        "k": k,
        "features": list(COUNT_FIELDS),
        "transform": "count per year of exposure (at least 30 days), log1p, standardised",
        "random_state": RANDOM_STATE,
        "n_init": N_INIT,
        "fit_sample": FIT_SAMPLE,
        "names": [{"segment": i + 1, "name_zh": zh, "name_en": en} for i, (zh, en) in enumerate(names)],
        "feature_mean": scaler.mean_,
        "feature_scale": scale,
        "centres": centres,
    }
    return SegmentsFit(scorer=scorer, params=params, metrics=metrics, n_train=len(counts))


def segments_rows(*, as_of: datetime) -> tuple[pd.DataFrame, pd.Series]:
    """Return (counts, exposure days) of every user signed up before as_of, by user id.

    Counts come from events before as_of; users without events but with an imported row
    take its film and course counts, as the stored features do for scoring.
    """
    as_of = as_utc(as_of)
    users = users_table()
    features = numeric_columns(
        event_features(as_of=as_of, columns=[*COUNT_FIELDS, "first_event_at"]), list(COUNT_FIELDS)
    )
    first_event = utc_series(features["first_event_at"]).reindex(users.index)
    joined = users["signed_up_at"].fillna(first_event)
    population = (joined < pd.Timestamp(as_of)) | (joined.isna() & users["has_imported"])
    users = users[population.to_numpy()]
    require(len(users) > 0, f"segments need users who joined before {as_of:%Y-%m-%d %H:%M} UTC; there are none")
    counts = features[list(COUNT_FIELDS)].reindex(users.index)
    imported_only = counts["watching_count"].isna()
    counts.loc[imported_only, "watching_count"] = users.loc[imported_only, "imported_watching_count"]
    counts.loc[imported_only, "purchasing_count"] = users.loc[imported_only, "imported_purchasing_count"]
    tenure = (pd.Timestamp(as_of) - joined[users.index]).dt.total_seconds() / SECONDS_PER_DAY
    first_event_time, _ = event_time_bounds()
    return counts.fillna(0.0), exposure_days(tenure, as_of=as_of, data_start=first_event_time)


def train_segments(*, observation_end: datetime | None = None, activate: bool = True, k: int = DEFAULT_K) -> ModelRun:
    """Cluster users' behaviour as of the observation end (default now) and store the next segments run."""
    as_of = as_utc(observation_end) if observation_end else timezone.now()
    counts, exposure = segments_rows(as_of=as_of)
    data_start, _ = event_time_bounds()
    fit = segments_fit(counts, exposure, k=k, data_start=data_start)
    params = fit.params | {"as_of": as_of}
    return model_run_save(
        model=ModelRun.Model.SEGMENTS,
        params=json_safe(params),
        metrics=json_safe(fit.metrics),
        n_train=fit.n_train,
        artifact=fit.scorer,
        data_start=data_start,
        data_end=as_of,
        activate=activate,
    )
