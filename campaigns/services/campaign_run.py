"""Running a campaign: who qualifies, who is held out, which offer each treated user gets.

A run is split into ranges of user ids that any worker can take (``campaign_issue_chunk``),
planned by ``campaign_planning`` (or chosen by ``campaign_optimise`` in optimise mode).
Each chunk evaluates every rule over its users at once, draws the holdout by a stable hash
of (campaign, user), applies priority, exclusivity and the per-user limit, and then, holding
the campaign row's lock, skips users already handled, clamps to the budget and the offer
cap, writes assignments and offers in bulk, and reserves their cost. Ticket and trial offers
each take an item of their partner's stock pool in the same transaction, and the partners'
``offers.issued`` webhooks are written with the offers. Running a chunk twice
issues nothing the second time; the database constraints back every one of these limits.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import numpy as np
import pandas as pd
from celery import group, signature
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from crossmkt_site.bulk import bulk_insert_frame
from crossmkt_site.errors import ApplicationError
from crossmkt_site.groups import results_as_they_finish, workers_require
from crossmkt_site.money import ZERO

from ..models import Campaign, CampaignAssignment, Offer
from .campaign_optimise import campaign_optimise_plan, optimised_chunk_plan
from .campaign_planning import (
    CHUNK_USERS,
    ChunkPlan,
    RulePlan,
    campaign_chunks,
    campaign_rule_plans,
    holdout_draw,
    load_chunk,
    new_codes,
    plan_chunk,
    users_unassigned,
)
from .offer_costs import offer_issue_spend, offer_reservation
from .stock import stock_assign, stock_hold
from .webhooks import webhook_offers_issued

# The task that issues one chunk, queued by name: the task module builds on this one, not the other way round.
ISSUE_CHUNK_TASK = "campaigns.tasks.issue_campaign_chunk"
HOLDOUT = CampaignAssignment.HOLDOUT
TREATMENT = CampaignAssignment.TREATMENT


def campaign_check_runnable(campaign: Campaign, now: datetime) -> None:
    """Refuse to issue for a campaign that is not running, outside its window, or promoting unlicensed films."""
    if campaign.kind != Campaign.Kind.RULES:
        raise ApplicationError(f"campaign {campaign.slug!r} is an external experiment; nothing to run", field="kind")
    if campaign.status != Campaign.Status.RUNNING:
        raise ApplicationError(
            f"campaign {campaign.slug!r} is {campaign.status}; "
            "set it to running to issue offers (a dry run works in any state)",
            code="not_running",
            field="status",
        )
    zone = campaign.timezone
    if not (campaign.starts_at <= now < campaign.ends_at):
        raise ApplicationError(
            f"campaign {campaign.slug!r} runs from {campaign.starts_at.astimezone(zone):%Y-%m-%d %H:%M} to "
            f"{campaign.ends_at.astimezone(zone):%Y-%m-%d %H:%M} ({zone}); it is outside that window now",
            code="outside_window",
            field="starts_at",
        )
    unlicensed = [film.title for film in campaign.promoted_films.all() if not film.licensed_at(now)]
    if unlicensed:
        raise ApplicationError(
            f"campaign {campaign.slug!r} promotes films outside their licence window: {', '.join(unlicensed)}",
            code="licence",
            field="promoted_films",
        )


@dataclass
class ChunkResult:
    eligible: int = 0
    holdout: int = 0
    issued: int = 0
    cost: Decimal = ZERO
    skipped_existing: int = 0
    clamped: int = 0

    def as_dict(self) -> dict:
        return {key: str(value) if isinstance(value, Decimal) else value for key, value in self.__dict__.items()}


def campaign_issue_chunk(
    *,
    campaign_id: int,
    id_range: tuple[int, int] | None = None,
    now: datetime | None = None,
    optimisation: dict | None = None,
    user_ids: Sequence[int] | None = None,
    touched_at: Mapping[int, datetime] | None = None,
) -> ChunkResult:
    """Assign and issue offers for one range of user ids, or for these users; running it again issues nothing.

    An optimise-mode campaign's chunk chooses with ``optimisation`` (the plan's model run
    and multiplier, from ``campaign_run``) instead of giving every rule's offer. The live path
    passes ``user_ids`` (users whose features and scores it has just refreshed) and, per user,
    ``touched_at`` (when their events were accepted), which each offer keeps. A range of a
    continuous campaign leaves out users the live path has still to evaluate (see ``load_chunk``).
    """
    now = now or timezone.now()
    campaign = Campaign.objects.get(pk=campaign_id)
    campaign_check_runnable(campaign, now)
    plans = campaign_rule_plans(campaign)
    if user_ids is not None:
        user_ids = sorted({int(pk) for pk in user_ids})
        if not user_ids:
            return ChunkResult()
        id_range = (user_ids[0], user_ids[-1] + 1)
    if id_range is None:
        raise ValueError("campaign_issue_chunk needs an id_range or user_ids")
    lo, hi = id_range
    # Users handled by an earlier run are not read again: a re-run costs one pass over the index.
    if user_ids is None:
        handled = CampaignAssignment.objects.filter(campaign=campaign, user_id__gte=lo, user_id__lt=hi).count()
    else:
        unassigned = users_unassigned(campaign, user_ids)
        handled, user_ids = len(user_ids) - len(unassigned), unassigned
    plan = _chunk_plan(
        campaign,
        plans,
        id_range,
        now,
        optimisation,
        unassigned_in=campaign if user_ids is None else None,
        user_ids=user_ids,
        skip_pending=user_ids is None and campaign.reach == Campaign.Reach.CONTINUOUS,
    )
    result = ChunkResult(eligible=len(plan.user_ids), holdout=int(plan.holdout.sum()), skipped_existing=handled)
    if not len(plan.user_ids):
        return result
    with transaction.atomic():
        # One issuer per campaign at a time: evaluation above ran in parallel; the writes
        # below, and the budget they draw on, are serialised by this row lock.
        campaign = Campaign.objects.select_for_update().get(pk=campaign_id)
        if campaign.status != Campaign.Status.RUNNING:
            return result
        assigned_rows = CampaignAssignment.objects.filter(campaign=campaign, user_id__gte=lo, user_id__lt=hi)
        if user_ids is not None:  # the live path's users only, not every assignment their wide range holds
            assigned_rows = assigned_rows.filter(user_id__in=plan.user_ids.tolist())
        assigned = set(assigned_rows.values_list("user_id", flat=True))
        fresh = ~np.isin(plan.user_ids, np.fromiter(assigned, dtype=np.int64, count=len(assigned)))
        result.skipped_existing += int((~fresh).sum())  # assigned by another run since the read above
        picks_fresh = np.isin(plan.pick_users, plan.user_ids[fresh])
        pick_users, pick_rules, pick_sequence = (
            plan.pick_users[picks_fresh],
            plan.pick_rules[picks_fresh],
            plan.pick_sequence[picks_fresh],
        )
        # Clamp to budget and cap in a random order ("reach") that favours neither old nor new users.
        order = np.lexsort((pick_sequence, holdout_draw(campaign, pick_users, "reach")))
        pick_users, pick_rules, pick_sequence = pick_users[order], pick_rules[order], pick_sequence[order]
        expires_at = min(now + timedelta(days=campaign.offer_valid_days), campaign.ends_at)
        # A ticket or trial offer needs an item of its partner's pool; one that finds none is not issued.
        rules = [p.rule for p in plans]
        stock = stock_hold(rules=rules, pick_rules=pick_rules, valid_until=expires_at)
        pick_users, pick_rules, pick_sequence = (
            pick_users[stock.covered],
            pick_rules[stock.covered],
            pick_sequence[stock.covered],
        )
        # Each offer reserves its face value (the cost model: at least its code's value or deal price).
        items = stock.hand_out(pick_rules)
        reservations = [offer_reservation(rule, None) for rule in rules]
        costs = np.array(
            [
                reservations[r] if item is None else offer_reservation(rules[r], item)
                for r, item in zip(pick_rules.tolist(), items, strict=True)
            ],
            dtype=object,
        )
        keep = _within_limits(campaign, costs)
        # A user gets all the offers picked for them or none: the budget never splits a package (the
        # coupon of "a coupon and a free week" without the week), whose cost the optimiser weighed whole.
        keep &= ~np.isin(pick_users, pick_users[~keep])
        result.clamped = int(len(stock.covered) - stock.covered.sum()) + int(len(keep) - keep.sum())
        pick_users, pick_rules, pick_sequence, costs = (
            pick_users[keep],
            pick_rules[keep],
            pick_sequence[keep],
            costs[keep],
        )
        # Items of picks the budget dropped stay in the pool (they were only locked).
        items = [item for item, kept in zip(items, keep.tolist(), strict=True) if kept]
        spent = np.array(
            [offer_issue_spend(rules[r].offer_kind, item) for r, item in zip(pick_rules.tolist(), items, strict=True)],
            dtype=object,
        )
        # A treated user the budget or the stock could not reach gets no assignment, so a later run may
        # still reach them.
        # Held-out users are cut at the same point of the reach order, so both arms stay random
        # samples of the eligible users in the configured proportion.
        assign_users = plan.user_ids[fresh]
        assign_holdout = plan.holdout[fresh]
        holdout_reached = np.ones(len(assign_users), dtype=bool)
        if result.clamped:
            served = holdout_draw(campaign, np.unique(pick_users), "reach")
            holdout_reached = holdout_draw(campaign, assign_users, "reach") <= (served.max() if len(served) else -1.0)
        keep_assignment = (assign_holdout & holdout_reached) | np.isin(assign_users, pick_users)
        rule_ids = np.array([plans[i].rule.pk for i in plan.matched_rule[fresh]], dtype=np.int64)
        codes = new_codes(len(pick_users))
        with connection.cursor() as cursor:
            bulk_insert_frame(
                cursor,
                CampaignAssignment._meta.db_table,
                pd.DataFrame(
                    {
                        "campaign_id": campaign.pk,
                        "user_id": assign_users[keep_assignment],
                        "arm": np.where(assign_holdout[keep_assignment], HOLDOUT, TREATMENT).astype(object),
                        "rule_id": rule_ids[keep_assignment],
                        "assigned_at": pd.Timestamp(now),
                    }
                ),
            )
            bulk_insert_frame(
                cursor,
                Offer._meta.db_table,
                _offers_frame(
                    campaign,
                    rules,
                    pick_users,
                    pick_rules,
                    pick_sequence,
                    codes,
                    now,
                    expires_at,
                    costs,
                    spent,
                    touched_at,
                ),
            )
        stock_assign(campaign_id=campaign.pk, id_range=id_range, issued_at=now, codes=codes, items=items)
        total = sum(costs, ZERO)
        Campaign.objects.filter(pk=campaign.pk).update(
            spent=F("spent") + total, issued_count=F("issued_count") + len(pick_users)
        )
        result.issued, result.cost = len(pick_users), total
        # Written with the offers, sent once they are committed.
        webhook_offers_issued(
            campaign=campaign,
            rules=[p.rule for p in plans],
            user_ids=pick_users,
            rule_indexes=pick_rules,
            codes=codes,
            stock=items,
            issued_at=now,
            expires_at=expires_at,
        )
    return result


def _chunk_plan(
    campaign: Campaign,
    plans: list[RulePlan],
    id_range: tuple[int, int],
    now: datetime,
    optimisation: dict | None,
    unassigned_in: Campaign | None = None,
    user_ids: Sequence[int] | None = None,
    skip_pending: bool = False,
) -> ChunkPlan:
    frame = load_chunk(plans, id_range, now, unassigned_in=unassigned_in, user_ids=user_ids, skip_pending=skip_pending)
    if campaign.mode != Campaign.Mode.OPTIMISE:
        return plan_chunk(campaign, plans, frame)
    return optimised_chunk_plan(
        campaign=campaign, plans=plans, frame=frame, id_range=id_range, now=now, optimisation=optimisation
    )


def _within_limits(campaign: Campaign, costs: np.ndarray) -> np.ndarray:
    """Return which of the ordered offers fit in what is left of the budget and the offer cap."""
    keep = np.ones(len(costs), dtype=bool)
    if campaign.global_limit is not None:
        keep[max(campaign.global_limit - campaign.issued_count, 0) :] = False
    if campaign.budget is not None:
        remaining = campaign.budget - campaign.spent
        # ZERO as a 0-d object array, which is what np.where makes of the Decimal anyway.
        running = np.cumsum(np.where(keep, costs, np.array(ZERO, dtype=object))) if len(costs) else costs
        keep &= np.array([spent <= remaining for spent in running], dtype=bool)
    return keep


def _offers_frame(
    campaign, rules, users, rule_indexes, sequences, codes, now, expires_at, costs, spent, touched_at=None
) -> pd.DataFrame:
    """The offer rows to write, column by column: each rule's terms spread over the users it picked."""

    def per_rule(values, dtype=object):
        return pd.array(values, dtype=dtype)[rule_indexes] if len(rules) else pd.array([], dtype=dtype)

    # When the user's events were accepted: the live path's offers only (a run's stay empty).
    touched = (
        pd.to_datetime(pd.Series([touched_at.get(int(user)) for user in users], dtype=object), utc=True)
        if touched_at
        else pd.Series(pd.NaT, index=range(len(users)), dtype="datetime64[ns, UTC]")
    )
    return pd.DataFrame(
        {
            "code": np.asarray(codes, dtype=object),
            "campaign_id": campaign.pk,
            "rule_id": per_rule([rule.pk for rule in rules], "Int64"),
            "user_id": users.astype(np.int64),
            "sequence": sequences.astype(np.int64),
            "allowance": campaign.per_user_limit,
            "kind": per_rule([rule.offer_kind for rule in rules]),
            "partner_id": per_rule([rule.benefit_partner_id for rule in rules], "Int64"),
            "deal_id": per_rule([rule.deal_id for rule in rules], "Int64"),
            "amount_off": per_rule([rule.amount_off for rule in rules]),
            "percent_off": per_rule([rule.percent_off for rule in rules]),
            "min_spend": per_rule([rule.min_spend for rule in rules]),
            "days": per_rule([rule.days for rule in rules], "Int64"),
            "cost": pd.array(costs, dtype=object),
            "spent": pd.array(spent, dtype=object),
            "status": Offer.Status.ISSUED.value,
            "issued_at": pd.Timestamp(now),
            "expires_at": pd.Timestamp(expires_at),
            "touched_at": touched.array,
        }
    )


@dataclass
class RuleForecast:
    """What one rule would do in a run: users it would treat, users it would hold out, offers and cost."""

    rule: str
    priority: int
    treated: int = 0
    holdout: int = 0
    offers: int = 0
    cost: Decimal = ZERO


@dataclass
class DryRun:
    campaign: str
    eligible: int = 0
    holdout: int = 0
    rules: list[RuleForecast] = field(default_factory=list)
    budget: Decimal | None = None
    remaining: Decimal | None = None
    mode: str = Campaign.Mode.RULES
    # The rule-based and the optimised choice side by side (campaign_optimise.Comparison), or
    # why they cannot be compared (no uplift model yet).
    comparison: object | None = None
    comparison_missing: str | None = None

    @property
    def cost(self) -> Decimal:
        return sum((rule.cost for rule in self.rules), ZERO)

    @property
    def offers(self) -> int:
        return sum(rule.offers for rule in self.rules)


def campaign_dry_run(*, campaign: Campaign, now: datetime | None = None, on_chunk=None) -> DryRun:
    """Forecast reach and cost per rule over every reachable user, writing nothing.

    With an uplift model trained, the forecast also sets the rule-based choice beside the
    optimised one (spend and expected incremental margin); an optimise-mode campaign's
    forecast per rule is its optimised choice among the users it has not handled yet.
    """
    now = now or timezone.now()
    plans = campaign_rule_plans(campaign)
    forecast = DryRun(
        campaign=campaign.slug,
        budget=campaign.budget,
        mode=campaign.mode,
        remaining=None if campaign.budget is None else campaign.budget - campaign.spent,
        rules=[RuleForecast(plan.rule.name, plan.rule.priority) for plan in plans],
    )
    optimising = campaign.mode == Campaign.Mode.OPTIMISE
    optimisation = None
    try:
        optimisation = campaign_optimise_plan(campaign=campaign, plans=plans, now=now)
        forecast.comparison = optimisation.comparison
    except ApplicationError as error:
        if optimising:
            raise
        forecast.comparison_missing = error.message
    chunks = campaign_chunks()
    for done, id_range in enumerate(chunks, 1):
        plan = _chunk_plan(
            campaign,
            plans,
            id_range,
            now,
            optimisation.as_task() if optimisation else None,
            unassigned_in=campaign if optimising else None,
        )
        forecast.eligible += len(plan.user_ids)
        forecast.holdout += int(plan.holdout.sum())
        for index, rule_forecast in enumerate(forecast.rules):
            first = plan.matched_rule == index
            rule_forecast.holdout += int((first & plan.holdout).sum())
            rule_forecast.treated += int((first & ~plan.holdout).sum())
            offers = int((plan.pick_rules == index).sum())
            rule_forecast.offers += offers
            rule_forecast.cost += offer_reservation(plans[index].rule, None) * offers
        if on_chunk:
            on_chunk(done, len(chunks))
    return forecast


def campaign_run(
    *,
    campaign: Campaign,
    wait: bool = True,
    on_chunk=None,
    now: datetime | None = None,
    chunk_users: int = CHUNK_USERS,
    timeout: float | None = None,
) -> dict:
    """Check the campaign can run, then issue chunk by chunk on the workers (in process when tasks are eager).

    When waiting, a worker must answer before anything is queued, and the wait ends after
    ``timeout`` seconds (default: the WORKER_WAIT_TIMEOUT setting) with what is still pending.
    """
    explicit_now = now is not None
    now = now or timezone.now()
    campaign_check_runnable(campaign, now)
    plans = campaign_rule_plans(campaign)  # refuse broken rules before any worker starts
    chunks = campaign_chunks(chunk_users=chunk_users)
    totals = ChunkResult()
    if not chunks:
        return totals.as_dict()
    if wait:
        workers_require()
    as_of = now.isoformat() if explicit_now else None
    optimisation = None
    if campaign.mode == Campaign.Mode.OPTIMISE:
        # One pass over every user prices a CNY of budget; each chunk then chooses for its own users with it.
        optimisation = campaign_optimise_plan(campaign=campaign, plans=plans, now=now).as_task()
    job = group(
        signature(ISSUE_CHUNK_TASK, args=(campaign.pk, lo, hi, as_of, optimisation)) for lo, hi in chunks
    ).apply_async()
    if not wait:
        return {"chunks": len(chunks), "group_id": job.id}
    labels = [f"{campaign.slug} users {lo}-{hi - 1}" for lo, hi in chunks]
    for done, (_position, result) in enumerate(results_as_they_finish(job, labels=labels, timeout=timeout), 1):
        chunk = cast(dict[str, Any], result)  # each task returns its ChunkResult as a dict
        for key in ChunkResult.__dataclass_fields__:
            value = chunk[key]
            setattr(totals, key, getattr(totals, key) + (Decimal(value) if key == "cost" else value))
        if on_chunk:
            on_chunk(done, len(chunks))
    return totals.as_dict()
