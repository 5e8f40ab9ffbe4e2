"""What the report's experiment statistics read: pre-period covariates per assigned user and rollbacks per arm.

Pre-period covariates (for CUPED) of one of our campaigns are each user's course purchases and
their spend in the ``days`` before assignment (all courses, not only the promoted ones: the habit
of buying predicts the outcome best). A user with no behaviour event of any kind recorded before
assignment has no history; zeros would call them a non-buyer, so ``has_history`` says so and
the statistics treat them apart. An experiment run elsewhere brings its own ``pre_revenue`` and
``pre_converted`` columns; a blank there is a user without history.
"""

import numpy as np
import pandas as pd
from django.db import connection

from analytics.models import ExperimentOutcome

from ..models import Campaign, RedemptionEntry


def campaign_pre_period_frame(campaign: Campaign, *, days: int) -> pd.DataFrame:
    """Return one row per assigned user: user_id and the covariates, with ``has_history``.

    Our campaigns give ``pre_revenue`` and ``pre_purchases``; an imported experiment gives
    ``pre_revenue`` and ``pre_converted`` (empty frame when it imported neither).
    """
    if campaign.kind == Campaign.Kind.EXTERNAL:
        return _imported_pre_period_frame(campaign)
    window = f"{int(days) * 86400} seconds"
    window_start = (
        "a.assigned_at - CAST(%(window)s AS interval)"
        if connection.vendor == "postgresql"
        else "datetime(a.assigned_at, '-' || %(window)s)"
    )
    sql = f"""
        SELECT a.user_id, COUNT(p.id) AS pre_purchases, COALESCE(SUM(p.amount), 0) AS pre_revenue,
               EXISTS (SELECT 1 FROM analytics_behaviorevent h
                       WHERE h.user_id = a.user_id AND h.occurred_at < a.assigned_at) AS has_history
        FROM campaigns_campaignassignment a
        LEFT JOIN analytics_behaviorevent p ON p.user_id = a.user_id AND p.kind = 'course_purchase'
             AND p.occurred_at >= {window_start} AND p.occurred_at < a.assigned_at
        WHERE a.campaign_id = %(campaign)s
        GROUP BY a.user_id, a.assigned_at
        ORDER BY a.user_id
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"campaign": campaign.pk, "window": window})
        frame = pd.DataFrame(cursor.fetchall(), columns=[column[0] for column in cursor.description])
    if frame.empty:
        return frame
    frame["pre_revenue"] = frame["pre_revenue"].astype(float)
    frame["pre_purchases"] = frame["pre_purchases"].astype(float)
    frame["has_history"] = frame["has_history"].astype(bool)
    return frame


def _imported_pre_period_frame(campaign: Campaign) -> pd.DataFrame:
    rows = list(
        ExperimentOutcome.objects.filter(campaign=campaign).values_list("user_ref", "pre_revenue", "pre_converted")
    )
    frame = pd.DataFrame(rows, columns=["user_id", "pre_revenue", "pre_converted"])
    given = [name for name in ("pre_revenue", "pre_converted") if frame[name].notna().any()]
    if frame.empty or not given:
        return pd.DataFrame(columns=["user_id", "has_history"])
    covariates = frame[["user_id", *given]].copy()
    for name in given:
        covariates[name] = pd.to_numeric(covariates[name].map(lambda value: np.nan if value is None else float(value)))
    covariates["has_history"] = covariates[given].notna().all(axis=1)
    return covariates


def campaign_rollbacks_by_arm(campaign: Campaign) -> dict[str, tuple[int, int]]:
    """Return, per arm, the number of redemptions of the campaign's offers and how many were rolled back."""
    sql = f"""
        SELECT a.arm,
               SUM(CASE WHEN e.kind = '{RedemptionEntry.Kind.REDEEM.value}' THEN 1 ELSE 0 END),
               SUM(CASE WHEN e.kind = '{RedemptionEntry.Kind.ROLLBACK.value}' THEN 1 ELSE 0 END)
        FROM campaigns_redemptionentry e
        JOIN campaigns_offer o ON o.id = e.offer_id
        JOIN campaigns_campaignassignment a ON a.campaign_id = o.campaign_id AND a.user_id = o.user_id
        WHERE o.campaign_id = %s
        GROUP BY a.arm
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [campaign.pk])
        return {arm: (int(redeemed or 0), int(rolled or 0)) for arm, redeemed, rolled in cursor.fetchall()}
