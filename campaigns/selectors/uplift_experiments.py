"""Past campaigns as uplift experiments: offer packages, and each experiment's users for training.

An experiment is one of our campaigns that kept a holdout or an outside experiment imported
with ``import_outcomes``. Treated users carry the *package* of offer kinds they received
(the kinds joined by ``+`` in a fixed order); held-out users carry the package the rule they
matched would have given them (its stratum); an imported experiment's holdout is the control
of each of its arms. Outcomes are the campaign report's. ``analytics.services.uplift`` adds
the features and ``analytics.services.training.uplift`` learns from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from analytics.models import ExperimentOutcome
from analytics.services.uplift import ANY_STRATUM, CONTROL, Experiment

from ..models import Campaign, CampaignAssignment, Offer, Rule
from ..reports.selectors import campaign_outcome_frame

OFFER_KINDS: tuple[str, ...] = tuple(Rule.OfferKind.values)


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


def _our_campaign_rows(campaign: Campaign) -> tuple[pd.DataFrame, datetime | None, str | None]:
    """Return an experiment's rows from our records, the moment it assigned its users, or why it is skipped."""
    assignments = pd.DataFrame(
        CampaignAssignment.objects.filter(campaign=campaign)
        .order_by("user_id")
        .values_list("user_id", "arm", "rule_id", "assigned_at"),
        columns=["user_id", "arm", "rule_id", "assigned_at"],
    )
    if assignments.empty or not (assignments["arm"] == CampaignAssignment.HOLDOUT).any():
        return pd.DataFrame(), None, "no holdout"
    outcomes = campaign_outcome_frame(campaign)[["user_id", "converted", "revenue"]]
    rows = assignments.merge(outcomes, on="user_id", how="inner")
    kinds = pd.DataFrame(
        Offer.objects.filter(campaign=campaign).values_list("user_id", "kind"), columns=["user_id", "kind"]
    )
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
    # Each outcome names the person its campaign's partner meant when it was imported (``user``);
    # an outcome without one (imported before identities were per partner, its id unknown to the
    # campaign's owner) names no one and is left out, never matched by the id alone.
    outcomes = pd.DataFrame(
        ExperimentOutcome.objects.filter(campaign=campaign, user__isnull=False, user__erased_at__isnull=True)
        .values_list("user_id", "arm", "converted", "revenue")
        .order_by("pk"),
        columns=["user_id", "arm", "converted", "revenue"],
    )
    if outcomes.empty or not (outcomes["arm"] == CampaignAssignment.HOLDOUT).any():
        return pd.DataFrame(), "no holdout arm"
    held = outcomes["arm"] == CampaignAssignment.HOLDOUT
    outcomes["role"] = np.where(held, CONTROL, "treated")
    outcomes["package"] = np.where(held, ANY_STRATUM, outcomes["arm"].map(parse_package).fillna(""))
    outcomes = outcomes[outcomes["package"] != ""]
    if not (outcomes["role"] == "treated").any():
        return pd.DataFrame(), "no arm named after offer kinds (coupon, free_viewing, movie_ticket, membership_grant)"
    outcomes["user_id"] = outcomes["user_id"].astype(np.int64)
    return outcomes[["user_id", "role", "package", "converted", "revenue"]], None


def uplift_experiments(*, campaigns: Iterable[Campaign] | None = None) -> tuple[list[Experiment], list[str]]:
    """Return every experiment with a holdout (or the given campaigns'), and why others were skipped."""
    chosen = (
        list(campaigns)
        if campaigns is not None
        else list(
            Campaign.objects.filter(kind__in=[Campaign.Kind.RULES, Campaign.Kind.EXTERNAL]).order_by("starts_at", "pk")
        )
    )
    experiments: list[Experiment] = []
    skipped: list[str] = []
    for campaign in chosen:
        moment: datetime | None
        if campaign.kind == Campaign.Kind.EXTERNAL:
            rows, reason = _imported_rows(campaign)
            moment = campaign.starts_at
        else:
            rows, moment, reason = _our_campaign_rows(campaign)
        if reason is not None or rows.empty:
            if reason != "no holdout" or campaign.kind == Campaign.Kind.EXTERNAL:
                skipped.append(f"{campaign.slug}: {reason or 'no usable rows'}")
            continue
        if moment is None:  # only a campaign skipped above has no assignment moment
            raise ValueError(f"{campaign.slug}: rows without the moment they were assigned")
        experiments.append(Experiment(name=campaign.slug, kind=campaign.kind, as_of=moment, rows=rows))
    return experiments, skipped
