"""The live path's campaigns half: drain the users ingestion left pending, and sweep continuous campaigns.

Every accepted batch leaves its users pending in PostgreSQL (``analytics.services.live``)
and queues a drain once it commits (``live_drain_on_commit``); beat queues one more every
CROSSMKT_LIVE_DRAIN_SECONDS as a safety net for users a dead worker left behind. A drain takes
up to ``DRAIN_USERS`` pending users no other drain holds and, in one transaction, refreshes their
features, scores them with the active model runs, lets every running continuous campaign decide
for them through ``campaign_issue_chunk`` (the same locked, budget-clamped, holdout-keeping path
as a run), and deletes their pending rows. If any step fails, or the worker dies, the
transaction rolls back and the users stay pending, for the next drain. A burst of batches
for the same users leaves one pending row each, so it costs about one evaluation.

Time-based conditions (recency, churn risk, a membership that is ending) become true with no
event at all: ``continuous_sweep`` runs every continuous campaign over all users on beat's
schedule. Its chunks leave pending users out, so no decision uses features or scores older
than the user's latest event; the drain decides for those.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime

from celery import signature
from django.db import transaction
from django.utils import timezone

from analytics.services.live import pending_users_claim, pending_users_release, users_refresh
from crossmkt_site.errors import ApplicationError

from ..models import Campaign
from .campaign_run import campaign_issue_chunk, campaign_run

# Queued by name: the task module builds on this one, not the other way round.
LIVE_DRAIN_TASK = "campaigns.tasks.drain_pending_users"
SWEEP_TASK = "campaigns.tasks.sweep_continuous_campaigns"
# Users per drain transaction: a thousand users' features, scores and decisions take about 0.6 s over a million users.
DRAIN_USERS = 1000
# A drain keeps taking batches while there are any, for at most this many, then queues a successor.
DRAIN_ROUNDS = 20

logger = logging.getLogger(__name__)


@dataclass
class DrainResult:
    """What one drain did: users evaluated, offers issued and held out per campaign, batches taken."""

    users: int = 0
    batches: int = 0
    issued: int = 0
    holdout: int = 0
    campaigns: dict[str, int] = field(default_factory=dict)
    more: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def continuous_campaigns_running(now: datetime) -> list[Campaign]:
    """Return the rule-based continuous campaigns running at ``now``, in a fixed order (their row locks follow it)."""
    return list(
        Campaign.objects.running_at(now)
        .filter(reach=Campaign.Reach.CONTINUOUS, kind=Campaign.Kind.RULES)
        .order_by("pk")
    )


def live_drain_batch(*, limit: int = DRAIN_USERS) -> DrainResult:
    """Evaluate one batch of pending users in one transaction; release them only if it commits."""
    result = DrainResult()
    with transaction.atomic():
        claimed = pending_users_claim(limit=limit)
        if not claimed.user_ids:
            return result
        # After the claim: every event committed before these rows were locked is read now.
        now = timezone.now()
        users_refresh(user_ids=claimed.user_ids, as_of=now)
        for campaign in continuous_campaigns_running(now):
            try:
                chunk = campaign_issue_chunk(
                    campaign_id=campaign.pk,
                    user_ids=claimed.user_ids,
                    now=now,
                    touched_at=claimed.first_touched_at,
                )
            except ApplicationError as error:
                # A campaign that cannot issue now (films out of licence, a broken rule) is the manager's
                # to fix; it must not hold up the other campaigns or keep the users pending forever.
                logger.warning("live path: %s skipped: %s", campaign.slug, error.message)
                continue
            result.issued += chunk.issued
            result.holdout += chunk.holdout
            result.campaigns[campaign.slug] = chunk.issued
        pending_users_release(user_ids=claimed.user_ids)
        result.users, result.batches = len(claimed.user_ids), 1
        result.more = len(claimed.user_ids) == limit
    return result


def live_drain(*, limit: int = DRAIN_USERS, rounds: int = DRAIN_ROUNDS) -> DrainResult:
    """Drain pending users batch by batch until none is left or ``rounds`` batches are done.

    Any number of drains may run at once: each takes users no other holds. Return totals;
    ``more`` says users may be left (the task then queues another drain).
    """
    total = DrainResult()
    for _ in range(rounds):
        batch = live_drain_batch(limit=limit)
        total.users += batch.users
        total.batches += batch.batches
        total.issued += batch.issued
        total.holdout += batch.holdout
        for slug, issued in batch.campaigns.items():
            total.campaigns[slug] = total.campaigns.get(slug, 0) + issued
        total.more = batch.more
        if not batch.more:
            break
    return total


def live_drain_on_commit() -> None:
    """Queue a drain once the current transaction (the one that stored a batch) commits."""
    # robust: the batch is committed and its users pending whatever the broker says; beat's tick drains them.
    transaction.on_commit(signature(LIVE_DRAIN_TASK).delay, robust=True)


def live_drain_queue() -> None:
    """Queue another drain now (a drain that stopped with users left)."""
    signature(LIVE_DRAIN_TASK).delay()


def continuous_sweep(*, now: datetime | None = None) -> dict[str, dict]:
    """Queue a pass of every running continuous campaign over all users (time-based conditions); return what each did.

    Users already handled are skipped in each chunk, so a sweep costs one read per chunk and
    issues only to users whose rule became true since the last pass.
    """
    now = now or timezone.now()
    done: dict[str, dict] = {}
    for campaign in continuous_campaigns_running(now):
        try:
            done[campaign.slug] = campaign_run(campaign=campaign, wait=False, now=None)
        except ApplicationError as error:
            logger.warning("continuous sweep: %s skipped: %s", campaign.slug, error.message)
            done[campaign.slug] = {"error": error.message}
    return done


def campaign_reach_continuous(*, campaign: Campaign) -> Campaign:
    """Make a campaign's reach continuous (it must decide by rules); the caller then makes the first full pass."""
    if campaign.mode != Campaign.Mode.RULES:
        raise ApplicationError(
            f"campaign {campaign.slug!r} is in {campaign.mode} mode; only a rules-mode campaign can reach continuously",
            field="reach",
        )
    if campaign.reach != Campaign.Reach.CONTINUOUS:
        campaign.reach = Campaign.Reach.CONTINUOUS
        campaign.save(update_fields=["reach", "updated_at"])
    return campaign
