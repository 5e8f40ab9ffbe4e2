"""What the campaign report reads: each assigned user's outcome, each arm's cost, the offers' funnel.

Outcomes are read per assigned user: conversion is a purchase of one of the campaign's
promoted courses (any course when it promotes none) within the campaign's conversion window
after the user's assignment (and before now); revenue is the sum of those purchases (what the user paid,
net of any coupon), and margin what the purchases bring us gross of the campaign's own coupons:
what was paid less the course partner's share, plus the discount the redemption ledger records
for this campaign's coupons the user redeemed in the window (not rolled back). The discount is
the coupon's cost (spent, under the cost model), so it is counted once, there; the partner's
share is of what was paid (the partner is paid on the price the user paid), so the discount is
ours alone.
An experiment run elsewhere is read from its imported outcomes (its margin is its revenue).

Costs follow ``campaigns.services.offer_costs``: per arm, the face value reserved by every
offer issued, what the offers really cost (spent), what they gave back (released) and what
open offers still hold (outstanding).
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import pandas as pd
from django.db import connection
from django.utils import timezone

from analytics.models import ExperimentOutcome
from crossmkt_site.money import FEN, ZERO

from ..models import Campaign, CampaignAssignment, Offer

HOLDOUT = CampaignAssignment.HOLDOUT


def _imported_outcome_frame(campaign: Campaign) -> pd.DataFrame:
    """Return the outcomes of an experiment run elsewhere, in the frame shape of our own campaigns."""
    rows = list(
        ExperimentOutcome.objects.filter(campaign=campaign).values_list("user_ref", "arm", "converted", "revenue")
    )
    frame = pd.DataFrame(rows, columns=["user_id", "arm", "converted", "revenue"])
    return frame.assign(
        rule="", churned=False, duration_days=float("nan"), margin=frame["revenue"], discount=[ZERO] * len(frame)
    )


def campaign_outcome_frame(campaign: Campaign, *, now: datetime | None = None) -> pd.DataFrame:
    """Return one row per assigned user: arm, rule, converted, revenue, and retention time and churn."""
    if campaign.kind == Campaign.Kind.EXTERNAL:
        return _imported_outcome_frame(campaign)
    now = now or timezone.now()
    skus = list(campaign.promoted_courses.values_list("sku", flat=True))
    promoted = f"AND p.item_id IN ({', '.join(['%(sku' + str(i) + ')s' for i in range(len(skus))])})" if skus else ""
    window = f"{int(campaign.conversion_window_days) * 86400} seconds"
    window_end = (
        "a.assigned_at + CAST(%(window)s AS interval)"
        if connection.vendor == "postgresql"
        else "datetime(a.assigned_at, %(window)s)"
    )
    # The cancellation is a subquery, not a join: joined, every cancellation would count each purchase again.
    sql = f"""
        SELECT a.user_id, a.arm, COALESCE(r.name, '') AS rule, a.assigned_at,
               COUNT(p.id) AS purchases, COALESCE(SUM(p.amount), 0) AS revenue,
               COALESCE(SUM(p.amount * (1 - COALESCE(co.partner_share, 0))), 0) AS margin,
               (SELECT MIN(c.occurred_at) FROM analytics_behaviorevent c
                WHERE c.user_id = a.user_id AND c.kind = 'membership_cancel'
                  AND c.occurred_at >= a.assigned_at AND c.occurred_at < %(now)s) AS cancelled_at,
               (SELECT COALESCE(SUM(e.discount), 0) FROM campaigns_redemptionentry e
                JOIN campaigns_offer o ON o.id = e.offer_id
                WHERE o.campaign_id = %(campaign)s AND o.user_id = a.user_id AND o.kind = 'coupon'
                  AND e.kind = 'redeem' AND o.redeemed_at >= a.assigned_at AND o.redeemed_at < {window_end}
                  AND o.redeemed_at < %(now)s
                  AND NOT EXISTS (SELECT 1 FROM campaigns_redemptionentry b WHERE b.reverses_id = e.id)
               ) AS discount
        FROM campaigns_campaignassignment a
        LEFT JOIN campaigns_rule r ON r.id = a.rule_id
        LEFT JOIN analytics_behaviorevent p ON p.user_id = a.user_id AND p.kind = 'course_purchase' {promoted}
             AND p.occurred_at >= a.assigned_at AND p.occurred_at < {window_end} AND p.occurred_at < %(now)s
        LEFT JOIN campaigns_course co ON co.partner_id = p.partner_id AND co.sku = p.item_id
        WHERE a.campaign_id = %(campaign)s
        GROUP BY a.user_id, a.arm, r.name, a.assigned_at
        ORDER BY a.user_id
    """
    with connection.cursor() as cursor:
        params: dict[str, int | str | datetime] = {"campaign": campaign.pk, "now": now, "window": window}
        params.update({f"sku{i}": sku for i, sku in enumerate(skus)})
        cursor.execute(sql, params)
        frame = pd.DataFrame(cursor.fetchall(), columns=[column[0] for column in cursor.description])
    if frame.empty:
        return frame.assign(
            converted=pd.Series(dtype=bool), duration_days=pd.Series(dtype=float), churned=pd.Series(dtype=bool)
        )
    frame["converted"] = frame["purchases"] > 0
    for money in ("revenue", "margin", "discount"):
        frame[money] = frame[money].map(lambda value: Decimal(str(value)).quantize(Decimal("0.01")))
    # Margin is gross of the campaign's own coupons: what was paid, less the partner's share, plus the discount
    # (which the cost model counts as spent), so the discount is counted once, as a cost.
    frame["margin"] = frame["margin"] + frame["discount"]
    assigned = pd.to_datetime(frame["assigned_at"], utc=True)
    cancelled = pd.to_datetime(frame["cancelled_at"], utc=True)
    frame["churned"] = cancelled.notna()
    frame["duration_days"] = ((cancelled.fillna(pd.Timestamp(now)) - assigned).dt.total_seconds() / 86400).clip(lower=0)
    return frame


@dataclass
class ArmCost:
    """Money of one arm's offers under the cost model; ``reserved = spent + released + outstanding - beyond``."""

    reserved: Decimal = ZERO
    spent: Decimal = ZERO
    released: Decimal = ZERO
    outstanding: Decimal = ZERO
    # What percent-off coupons took off orders above the estimate their rule reserved.
    beyond_reservation: Decimal = ZERO

    def __add__(self, other: "ArmCost") -> "ArmCost":
        return ArmCost(**{name: getattr(self, name) + getattr(other, name) for name in self.__dataclass_fields__})

    def to_dict(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in self.__dataclass_fields__}


def campaign_arm_costs(campaign: Campaign) -> dict[str, ArmCost]:
    """Return per arm the face value its offers reserved, what they cost, gave back and still hold."""
    sql = """
        SELECT a.arm, COUNT(o.id),
               COALESCE(SUM(o.cost), 0),
               COALESCE(SUM(o.spent), 0),
               COALESCE(SUM(CASE WHEN o.status IN ('issued', 'delivered') THEN 0
                                 WHEN o.spent < o.cost THEN o.cost - o.spent ELSE 0 END), 0),
               COALESCE(SUM(CASE WHEN o.status NOT IN ('issued', 'delivered') THEN 0
                                 WHEN o.spent < o.cost THEN o.cost - o.spent ELSE 0 END), 0),
               COALESCE(SUM(CASE WHEN o.spent > o.cost THEN o.spent - o.cost ELSE 0 END), 0)
        FROM campaigns_offer o
        JOIN campaigns_campaignassignment a ON a.campaign_id = o.campaign_id AND a.user_id = o.user_id
        WHERE o.campaign_id = %s
        GROUP BY a.arm
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [campaign.pk])
        return {
            arm: ArmCost(*(Decimal(str(value)).quantize(FEN) for value in money))
            for arm, _count, *money in cursor.fetchall()
        }


def campaign_funnel(campaign: Campaign, frame: pd.DataFrame) -> dict[str, int]:
    """Count the campaign's funnel: users by arm, offers issued and redeemed, and the treated users at each step.

    ``issued`` and ``redeemed`` count offers (a user may hold several); ``users_issued``,
    ``users_redeemed`` and ``users_redeemed_converted`` count treated users who got an offer, used
    one, and used one and bought a promoted course in the conversion window, so
    ``treated >= users_issued >= users_redeemed >= users_redeemed_converted``; ``converted`` is every
    treated user who bought, with the offer or without. There is no delivered step: partners are
    told of offers (``offers.issued`` webhooks, the offers API) and show them to their users, and
    none reports back that a user saw one, so the system cannot know it.
    """
    offers = Offer.objects.filter(campaign=campaign)
    treated = frame[frame["arm"] != HOLDOUT] if not frame.empty else frame
    redeemers = set(offers.filter(status=Offer.Status.REDEEMED).values_list("user_id", flat=True).distinct().order_by())
    bought = set(treated.loc[treated["converted"], "user_id"]) if not treated.empty else set()
    return {
        "eligible": len(frame),
        "treated": len(treated),
        "holdout": int((frame["arm"] == HOLDOUT).sum()) if not frame.empty else 0,
        "issued": offers.count(),
        "redeemed": offers.filter(status=Offer.Status.REDEEMED).count(),
        "converted": int(treated["converted"].sum()) if not treated.empty else 0,
        "users_issued": offers.values("user_id").distinct().order_by().count(),
        "users_redeemed": len(redeemers),
        "users_redeemed_converted": len(redeemers & bought),
    }
