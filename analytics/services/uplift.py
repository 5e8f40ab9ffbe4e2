"""Uplift data: past experiments with a holdout as training rows, features as of each experiment, predictions.

An *experiment* is one of our campaigns that kept a holdout (its assignments, offers and the
purchases after them) or an outside experiment imported with ``import_outcomes``. Each
user of one is a row:

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
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection

from campaigns.models import Campaign, CampaignAssignment, Offer, Rule

from ..stats.uplift import UpliftModel
from .features import features_sql

OFFER_KINDS: tuple[str, ...] = tuple(Rule.OfferKind.values)
CONTROL = "control"
ANY_STRATUM = "*"
FEATURES: tuple[str, ...] = (
    "watching_count", "course_view_count", "purchasing_count", "purchase_days", "total_spend", "activity_count",
    "discounts_received", "is_member", "membership_paid", "days_since_last_event", "days_since_last_purchase",
    "tenure_days", "age", "watching_per_year", "course_views_per_year", "purchases_per_year", "activities_per_year",
    "redemptions_per_year",
)
# Rates per year of a user's time since their first event (at least this many days), so that
# a user who arrived last month is not mistaken for an inactive one.
MINIMUM_EXPOSURE_DAYS = 30.0
_RATES = {"watching_per_year": "watching_count", "course_views_per_year": "course_view_count",
          "purchases_per_year": "purchasing_count", "activities_per_year": "activity_count",
          "redemptions_per_year": "discounts_received"}
_COUNTS = ("watching_count", "course_view_count", "purchasing_count", "purchase_days", "total_spend", "activity_count",
           "discounts_received")


def package_name(kinds: Iterable[str]) -> str:
    """Return the canonical name of a package of offer kinds: distinct kinds joined by '+' in a fixed order."""
    present = set(kinds)
    return "+".join(kind for kind in OFFER_KINDS if kind in present)


def parse_package(name: str) -> str | None:
    """Return the canonical package an arm name stands for ('coupon+free_viewing'), or None if it names none."""
    parts = [part.strip() for part in str(name).split("+")]
    if not parts or any(part not in OFFER_KINDS for part in parts):
        return None
    return package_name(parts)


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
    as_of = as_of.astimezone(dt_timezone.utc)
    low, high = int(ids.min()), int(ids.max()) + 1
    user_filter = "AND e.user_id >= %(low)s AND e.user_id < %(high)s"
    with connection.cursor() as cursor:
        cursor.execute(features_sql(as_of_param=True, user_filter=user_filter),
                       {"zone": settings.TIME_ZONE, "as_of": as_of, "low": low, "high": high})
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
        pd.to_datetime(events["first_event_at"], utc=True, format="ISO8601"))
    frame["tenure_days"] = _days(as_of, joined)
    frame["age"] = pd.to_numeric(users["age"], errors="coerce").astype(float).to_numpy()
    exposure = np.maximum(np.nan_to_num(_days(as_of, events["first_event_at"]), nan=0.0), MINIMUM_EXPOSURE_DAYS)
    for rate, count in _RATES.items():
        frame[rate] = frame[count].to_numpy() * 365.0 / exposure
    return frame[list(FEATURES)].fillna(-1.0)


def rule_packages(rules: Sequence[Rule]) -> list[list[int]]:
    """Group a campaign's rules (highest priority first) into the offer packages they give together.

    A package is a run of rules with the same condition in which every rule but the last is
    not exclusive (the README's "a coupon and a free week": two rules, the first not
    exclusive); every other rule is a package of its own. Returns lists of indexes into ``rules``.
    """
    packages: list[list[int]] = []
    for index, rule in enumerate(rules):
        previous = rules[index - 1] if index else None
        if previous is not None and not previous.exclusive and previous.condition == rule.condition:
            packages[-1].append(index)
        else:
            packages.append([index])
    return packages


@dataclass
class ExperimentRows:
    """Training rows of every experiment: one per user and experiment."""

    frame: pd.DataFrame  # experiment, user_id, role (treated/control), package, converted, revenue, share
    features: pd.DataFrame  # one row per row of ``frame``, FEATURES columns
    sources: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _our_campaign_rows(campaign: Campaign) -> tuple[pd.DataFrame, datetime | None, str | None]:
    """Return an experiment's rows from our records, the moment it assigned its users, or why it is skipped."""
    from .reports import campaign_outcome_frame

    assignments = pd.DataFrame(
        CampaignAssignment.objects.filter(campaign=campaign).values_list("user_id", "arm", "rule_id", "assigned_at"),
        columns=["user_id", "arm", "rule_id", "assigned_at"],
    )
    if assignments.empty or not (assignments["arm"] == CampaignAssignment.HOLDOUT).any():
        return pd.DataFrame(), None, "no holdout"
    outcomes = campaign_outcome_frame(campaign)[["user_id", "converted", "revenue"]]
    rows = assignments.merge(outcomes, on="user_id", how="inner")
    kinds = pd.DataFrame(Offer.objects.filter(campaign=campaign).values_list("user_id", "kind"), columns=["user_id", "kind"])
    received = kinds.groupby("user_id")["kind"].agg(package_name)
    rules = list(campaign.rules.order_by("-priority", "pk"))
    stratum = {}
    for members in rule_packages(rules):
        name = package_name(rules[index].offer_kind for index in members)
        stratum.update({rules[index].pk: name for index in members})
    held = rows["arm"] == CampaignAssignment.HOLDOUT
    rows["role"] = np.where(held, CONTROL, "treated")
    rows["package"] = np.where(held, rows["rule_id"].map(stratum).fillna(""), rows["user_id"].map(received).fillna(""))
    rows = rows[rows["package"] != ""]
    moment = pd.to_datetime(assignments["assigned_at"], utc=True, format="ISO8601").min().to_pydatetime()
    return rows[["user_id", "role", "package", "converted", "revenue"]], moment, None


def _imported_rows(campaign: Campaign) -> tuple[pd.DataFrame, str | None]:
    """Return an imported experiment's rows (users we know, arms that name offer packages), or why it is skipped."""
    from ..models import EndUser, ExperimentOutcome

    outcomes = pd.DataFrame(
        ExperimentOutcome.objects.filter(campaign=campaign).values_list("user_ref", "arm", "converted", "revenue"),
        columns=["user_ref", "arm", "converted", "revenue"],
    )
    if outcomes.empty or not (outcomes["arm"] == CampaignAssignment.HOLDOUT).any():
        return pd.DataFrame(), "no holdout arm"
    known = dict(EndUser.objects.filter(external_id__in=list(outcomes["user_ref"]), erased_at__isnull=True)
                 .values_list("external_id", "id"))
    outcomes["user_id"] = outcomes["user_ref"].map(known)
    outcomes = outcomes[outcomes["user_id"].notna()]
    held = outcomes["arm"] == CampaignAssignment.HOLDOUT
    outcomes["role"] = np.where(held, CONTROL, "treated")
    outcomes["package"] = np.where(held, ANY_STRATUM, outcomes["arm"].map(parse_package).fillna(""))
    outcomes = outcomes[outcomes["package"] != ""]
    if not (outcomes["role"] == "treated").any():
        return pd.DataFrame(), "no arm named after offer kinds (coupon, free_viewing, movie_ticket, membership_grant)"
    outcomes["user_id"] = outcomes["user_id"].astype(np.int64)
    return outcomes[["user_id", "role", "package", "converted", "revenue"]], None


def _treated_shares(rows: pd.DataFrame) -> pd.Series:
    """Return each row's probability of being treated rather than held out, within its experiment and package."""
    shares = pd.Series(np.nan, index=rows.index)
    for (experiment, package), group in rows[rows["role"] == "treated"].groupby(["experiment", "package"]):
        same = rows["experiment"] == experiment
        controls = same & (rows["role"] == CONTROL) & rows["package"].isin([package, ANY_STRATUM])
        share = len(group) / (len(group) + int(controls.sum())) if controls.any() else np.nan
        shares[group.index] = share
    return shares


def experiment_rows(*, campaigns: Iterable[Campaign] | None = None) -> ExperimentRows:
    """Collect the rows of every experiment with a holdout (or of the given campaigns), features included."""
    chosen = list(campaigns) if campaigns is not None else list(
        Campaign.objects.filter(kind__in=[Campaign.Kind.RULES, Campaign.Kind.EXTERNAL]).order_by("starts_at", "pk"))
    frames, feature_frames, sources, skipped = [], [], [], []
    for campaign in chosen:
        if campaign.kind == Campaign.Kind.EXTERNAL:
            rows, reason = _imported_rows(campaign)
            moment = campaign.starts_at
        else:
            rows, moment, reason = _our_campaign_rows(campaign)
        if reason is not None or rows.empty:
            if reason != "no holdout" or campaign.kind == Campaign.Kind.EXTERNAL:
                skipped.append(f"{campaign.slug}: {reason or 'no usable rows'}")
            continue
        rows = rows.assign(experiment=campaign.slug).reset_index(drop=True)
        rows["converted"] = rows["converted"].astype(float)
        rows["revenue"] = rows["revenue"].astype(float)
        feature_frames.append(uplift_features(rows["user_id"].to_numpy(), as_of=moment).reset_index(drop=True))
        frames.append(rows)
        sources.append({
            "campaign": campaign.slug, "kind": campaign.kind, "as_of": moment.isoformat(), "users": len(rows),
            "treated": int((rows["role"] == "treated").sum()), "control": int((rows["role"] == CONTROL).sum()),
            "packages": sorted(set(rows.loc[rows["role"] == "treated", "package"])),
        })
    if not frames:
        empty = pd.DataFrame(columns=["experiment", "user_id", "role", "package", "converted", "revenue", "share"])
        return ExperimentRows(empty, pd.DataFrame(columns=list(FEATURES)), sources, skipped)
    frame = pd.concat(frames, ignore_index=True)
    frame["share"] = _treated_shares(frame)
    return ExperimentRows(frame, pd.concat(feature_frames, ignore_index=True), sources, skipped)


def held_out_mask(user_ids: np.ndarray, share: float) -> np.ndarray:
    """Return a stable draw of evaluation users: the same user is held out of training in every run."""
    with np.errstate(over="ignore"):
        z = np.asarray(user_ids, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) / float(1 << 53)) < share


@dataclass(frozen=True)
class UpliftBundle:
    """The fitted uplift models of one run: per method one model with one arm per offer package, and a baseline."""

    feature_names: tuple[str, ...]
    models: dict[str, UpliftModel]
    baseline: Any  # a classifier of conversion without an offer, fitted on every held-out user
    selected: str  # the method the optimiser uses: the best on held-out users

    @property
    def packages(self) -> tuple[str, ...]:
        """Return the offer packages the models know."""
        return self.models[self.selected].arm_names

    def predict(self, features: pd.DataFrame, method: str | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Return each user's incremental conversion per package, and their conversion without an offer."""
        matrix = features[list(self.feature_names)].to_numpy(dtype=float)
        if not len(matrix):
            return {package: np.zeros(0) for package in self.packages}, np.zeros(0)
        prediction = self.models[method or self.selected].predict(matrix)
        uplift = {arm: prediction.conversion[:, column] for column, arm in enumerate(prediction.arms)}
        return uplift, self.baseline.predict_proba(matrix)[:, 1]
