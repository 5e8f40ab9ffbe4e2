"""Playing the demo campaigns: issue offers at each campaign's start, then draw what users did from the truth.

Campaigns whose window has begun are run as of their start; the planted treatment effects
(``demo.world.truth``) then decide who converts and for how much, and those purchases
enter as ordinary behaviour events, so the campaign report measures them like real ones.
"""

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from analytics.services.ingest import events_ingest
from campaigns.models import Campaign, CampaignAssignment, StockItem
from campaigns.services.campaign_run import (
    campaign_check_runnable,
    campaign_dry_run,
    campaign_run,
)
from campaigns.services.intake import partner_ids_by_slug
from campaigns.services.stock import rule_needs_stock
from crossmkt_site.bulk import bulk_insert
from crossmkt_site.errors import ApplicationError

from ..models import PlantedUser
from ..selectors import demo_world_latest
from ..world import catalog as demo
from ..world.truth import simulate_campaign_outcomes

STARTED_AFTER = dt.timedelta(minutes=5)


def _effect_keys(campaign: Campaign) -> dict[int, str]:
    """Map each of our rules to the offer package (effect key) of the catalog rule it came from."""
    source = demo.demo_catalog().campaign(campaign.slug)
    by_name = {rule.name_zh: rule.effect_key for rule in source.rules}
    return {rule.pk: by_name[rule.name.split("·")[0]] for rule in campaign.rules.all()}


def _stock_for(campaign: Campaign, started: dt.datetime) -> None:
    """Give the partners behind ticket and trial offers enough codes in their pools for this campaign."""
    if StockItem.objects.filter(code__startswith=f"{campaign.slug}-").exists():
        return
    forecast = campaign_dry_run(campaign=campaign, now=started)
    offers = {rule.rule: rule.offers for rule in forecast.rules}
    rows = []
    for rule in campaign.rules.all():
        if rule_needs_stock(rule):
            rows += [
                (
                    rule.benefit_partner_id,
                    rule.offer_kind,
                    f"{campaign.slug}-{rule.pk}-{n:07d}",
                    rule.cost,
                    campaign.ends_at + dt.timedelta(days=90),
                    StockItem.Status.AVAILABLE,
                    started,
                )
                for n in range(offers.get(rule.name, 0))
            ]
    with transaction.atomic(), connection.cursor() as cursor:
        bulk_insert(
            cursor,
            StockItem._meta.db_table,
            ["partner_id", "kind", "code", "face_value", "expires_at", "status", "loaded_at"],
            rows,
        )


def demo_campaign_play(*, campaign: Campaign, truth: dict, seed: int, now: dt.datetime) -> dict:
    """Run one demo campaign as of its start and record the outcomes its planted effects produce."""
    started = campaign.starts_at + STARTED_AFTER
    if campaign.status != Campaign.Status.RUNNING:
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)
        campaign.refresh_from_db()
    campaign_check_runnable(campaign, started)
    _stock_for(campaign, started)
    result = campaign_run(campaign=campaign, now=started)
    columns = ["user_id", "user__external_id", "arm", "rule_id"]
    # Named columns, so a campaign that reached nobody (no scores yet, say) plays as an empty one.
    assignments = pd.DataFrame(
        list(CampaignAssignment.objects.filter(campaign=campaign).values_list(*columns)), columns=columns
    )
    planted = dict(PlantedUser.objects.filter(user_id__in=assignments["user_id"]).values_list("user_id", "segment"))
    assignments = assignments[assignments["user_id"].isin(planted)]
    keys = _effect_keys(campaign)
    rng = np.random.default_rng([seed, campaign.pk])
    treated = (assignments["arm"] != CampaignAssignment.HOLDOUT).to_numpy()
    converted, revenue = simulate_campaign_outcomes(
        truth,
        campaign.slug,
        assignments["user_id"].map(planted).to_numpy(),
        treated,
        assignments["rule_id"].map(keys).to_numpy(),
        rng,
    )
    window = dt.timedelta(days=campaign.conversion_window_days)
    ends = min(started + window, now)
    skus = list(campaign.promoted_courses.values_list("sku", flat=True)) or ["DATA-101"]
    buyers = assignments[converted]
    offsets = rng.uniform(0, (ends - started).total_seconds(), len(buyers))
    owner = campaign.owner
    if owner is None:
        # Every demo campaign is loaded with its owner partner (demo_catalog_load).
        raise ValueError(f"demo campaign {campaign.slug!r} has no owner partner")
    events = pd.DataFrame(
        {
            "position": np.arange(len(buyers)),
            "partner_id": partner_ids_by_slug()[owner.slug],
            "event_id": [f"{campaign.slug}-conversion-{user}" for user in buyers["user__external_id"]],
            "user_ext": buyers["user__external_id"].to_numpy(),
            "kind": "course_purchase",
            "item_id": rng.choice(skus, len(buyers)),
            "amount": [f"{value:.2f}" for value in revenue[converted]],
            "occurred_at": pd.to_datetime(started, utc=True) + pd.to_timedelta(offsets, unit="s"),
        }
    )
    events_ingest(events)
    if campaign.ends_at <= now:
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.ENDED)
    return {
        "campaign": campaign.slug,
        **result,
        "converted": int(converted.sum()),
        "revenue": str(Decimal(f"{revenue.sum():.2f}")),
    }


def demo_campaigns_play(*, now: dt.datetime | None = None, seed: int | None = None) -> list[dict]:
    """Play every demo campaign whose window has begun and that has not been played yet.

    Outcomes are drawn with the world's seed, or ``seed`` (the same world played again with other draws).
    """
    now = now or timezone.now()
    world = demo_world_latest()
    if world is None:
        return []
    played = []
    slugs = [c.slug for c in demo.demo_catalog().campaigns]
    for campaign in Campaign.objects.filter(slug__in=slugs, starts_at__lte=now).order_by("starts_at"):
        if campaign.assignments.exists():
            continue
        try:
            played.append(
                demo_campaign_play(
                    campaign=campaign, truth=world.truth, seed=world.seed if seed is None else seed, now=now
                )
            )
        except ApplicationError as error:
            # A campaign the engine refuses (a film out of licence, say) is left for a manager to fix.
            Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)
            played.append({"campaign": campaign.slug, "refused": error.message})
    return played
