"""The campaign report: what a campaign caused, one implementation behind the command, the API and the admin.

Outcomes are read per assigned user (``campaigns.reports.selectors``). Each treated arm is
compared with the holdout: conversion difference with Newcombe's hybrid score interval, revenue
per user with Welch's interval and a percentile bootstrap, incremental revenue and ROI; the
holdout split is checked for sample-ratio mismatch before anything else is read.

A statistic the arms hold too few users for is ``null`` in the data with its reason under
``not_enough_data`` beside it (``{"revenue": "each arm needs at least two users ..."}``), and
a warning says so; everything that can be computed is still reported.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import pandas as pd
from django.utils import timezone

from analytics.selectors import uplift_models_summary
from analytics.stats.effects import ArmData, NotEnoughData, compare_arms, conversion_uplift
from analytics.stats.experiments import ALWAYS_VALID
from analytics.stats.returns import spend_return
from crossmkt_site.money import ZERO

from ..models import Campaign
from .experiment_stats import experiment_statistics, interval_kind, methods_text, tuning_users
from .selectors import HOLDOUT, ArmCost, campaign_arm_costs, campaign_funnel, campaign_outcome_frame

# What each offer kind costs, as campaigns.services.offer_costs implements it.
COST_MODEL = (
    "cost model: the budget reserves each offer's face value at issue (the rule's cost per offer, at least a "
    "coupon's amount off, a code's value or the deal's settlement price) and releases what expires or is revoked "
    "unused; spent is what offers really cost: a coupon its discount when redeemed (the ledger's), nothing unused; "
    "a movie ticket its code's value when issued, or when used if the stock pool says paid on use; a free-viewing "
    "trial the video partner's settlement price per activated trial; a membership grant the deal's settlement "
    "price when taken up; ROI and incremental margin are on spent"
)

METHODS = (
    "conversion difference: Newcombe hybrid score interval (Wilson intervals combined); "
    "relative uplift: log risk ratio (Katz); revenue per user: Welch t interval and percentile bootstrap "
    "(2,000 resamples, seeded); sample ratio: chi-square goodness of fit, flagged below p = 0.001; "
    "retention: Kaplan-Meier per arm with a log-rank test; "
    "funnel: offers issued and redeemed, and treated users who got an offer, used one, and used one and bought "
    "(no delivered step: partners do not report that a user saw an offer, so the system cannot know it); "
    + COST_MODEL
    + "; incremental margin: each purchase's margin per user, gross of the campaign's own coupons (the price paid "
    "less the course partner's share, plus the discount the ledger records for the campaign's coupons the user "
    "redeemed in the window, net of rollbacks: the partner's share is of what was paid, and the discount is our "
    "cost, counted once, in spent, and enters the incremental margin as observed money, as spent does), "
    "treated minus holdout scaled to the treated arm, once the campaign has ended with a hybrid score interval "
    "(Newcombe's square-and-add of each arm's score interval for its mean margin per user, the variance taken at "
    "the hypothesised mean, as Wilson's is: a holdout of a few buyers is not read as certain; Welch's t interval "
    "if a margin is below zero), while it runs with the always-valid mixture SPRT interval on the same difference "
    "(Welch's variance), as the other intervals then (spend_return.interval_kind and interval_method say which); "
    "ROI = (incremental margin - spent) / spent, its interval from the "
    "margin's (spent is observed, not estimated)"
)


# How the report's warnings name a statistic that could not be computed.
STATISTICS = {
    "conversion": "conversion uplift",
    "revenue": "revenue per user uplift",
    "campaign_return": "incremental revenue and ROI",
    "spend_return": "incremental margin and ROI on spent",
    "sample_ratio": "the sample-ratio check",
    "retention": "the retention comparison",
}


def _arm_data(group: pd.DataFrame, cost: Decimal = ZERO) -> ArmData:
    followed = group["duration_days"].notna().all() and len(group)
    return ArmData(
        users=len(group),
        conversions=int(group["converted"].sum()),
        revenue=list(group["revenue"]),
        cost=cost,
        retention_durations=list(group["duration_days"]) if followed else None,
        retention_churned=list(group["churned"]) if followed else None,
    )


def _arm_summary(arm: str, group: pd.DataFrame) -> dict:
    users = len(group)
    revenue = sum(group["revenue"], ZERO)
    return {
        "arm": arm,
        "users": users,
        "conversions": int(group["converted"].sum()),
        "conversion_rate": float(group["converted"].mean()) if users else None,
        "revenue": str(revenue),
        "revenue_per_user": str((revenue / users).quantize(Decimal("0.01"))) if users else None,
    }


@dataclass
class CampaignReport:
    """The report as data; ``to_dict`` is what the API returns and the command prints as JSON."""

    campaign: dict
    funnel: dict
    arms: list
    rules: list
    evaluation: dict | None
    warnings: list
    methods: str = METHODS
    uplift_models: dict | None = None
    # Experiment statistics (campaigns.reports.experiment_stats): intervals, multiple_testing, guardrails.
    experiment: dict | None = None
    cost: dict | None = None

    def to_dict(self) -> dict:
        experiment = self.experiment or {"intervals": None, "multiple_testing": None, "guardrails": []}
        return {
            **experiment,
            "campaign": self.campaign,
            "funnel": self.funnel,
            "cost": self.cost,
            "warnings": self.warnings,
            "arms": self.arms,
            "uplift": self.evaluation,
            "rules": self.rules,
            "methods": self.methods,
            "uplift_models": self.uplift_models,
        }


def campaign_report(*, campaign: Campaign, now: datetime | None = None, confidence: float = 0.95) -> CampaignReport:
    """Build the full report of one campaign from its assignments, offers and the behaviour since."""
    now = now or timezone.now()
    frame = campaign_outcome_frame(campaign, now=now)
    costs = campaign_arm_costs(campaign)
    warnings: list[str] = []
    evaluation = None
    experiment = None
    rules: list[dict] = []
    arms = [_arm_summary(arm, group) for arm, group in frame.groupby("arm")] if not frame.empty else []
    if not frame.empty and HOLDOUT in set(frame["arm"]) and len(set(frame["arm"])) > 1:
        by_arm = {arm: _arm_data(group, costs.get(arm, ArmCost()).spent) for arm, group in frame.groupby("arm")}
        shares = None
        if campaign.kind == Campaign.Kind.RULES:
            holdout_share = float(campaign.holdout_share)
            shares = {
                arm: (holdout_share if arm == HOLDOUT else (1 - holdout_share) / (len(by_arm) - 1)) for arm in by_arm
            }
        result = compare_arms(by_arm, HOLDOUT, confidence=confidence, configured_shares=shares)
        # The check carries a warning exactly when the split mismatches.
        if result.sample_ratio is not None and result.sample_ratio.warning is not None:
            warnings.append(result.sample_ratio.warning)
        for comparison in result.comparisons:
            for statistic, reason in comparison.not_enough_data.items():
                if statistic != "campaign_return":  # follows from the others, which say why
                    warnings.append(f"not enough data for the {STATISTICS[statistic]} of {comparison.arm}: {reason}")
        for statistic, reason in result.not_enough_data.items():
            warnings.append(f"not enough data for {STATISTICS[statistic]}: {reason}")
        evaluation = result.to_dict()
        _add_spend_returns(
            evaluation, frame, costs, confidence, always_valid=interval_kind(campaign, now) == ALWAYS_VALID
        )
        rules = _rule_uplifts(frame, confidence)
        experiment, experiment_warnings = experiment_statistics(
            campaign=campaign, frame=frame, evaluation=evaluation, rules=rules, now=now, confidence=confidence
        )
        warnings.extend(experiment_warnings)
    elif not frame.empty:
        warnings.append("no holdout users: the campaign's effect cannot be measured, only its reach")
    return CampaignReport(
        campaign={
            "slug": campaign.slug,
            "name": campaign.name,
            "kind": campaign.kind,
            "status": campaign.status,
            "starts_at": campaign.starts_at.isoformat(),
            "ends_at": campaign.ends_at.isoformat(),
            "timezone": str(campaign.timezone),
            "budget": None if campaign.budget is None else str(campaign.budget),
            "spent": str(campaign.spent),
            "holdout_share": str(campaign.holdout_share),
            "as_of": now.isoformat(),
            "mode": campaign.mode,
        },
        funnel=campaign_funnel(campaign, frame),
        arms=arms,
        rules=rules,
        evaluation=evaluation,
        warnings=warnings,
        uplift_models=uplift_models_summary(campaign_slug=campaign.slug),
        methods=f"{METHODS}; {methods_text()}",
        experiment=experiment,
        cost=_cost_summary(campaign, costs, warnings),
    )


def _cost_summary(campaign: Campaign, costs: dict[str, ArmCost], warnings: list[str]) -> dict:
    """Say what the campaign reserved, spent, released and still holds, in total and per arm."""
    total = sum(costs.values(), ArmCost())
    if total.beyond_reservation:
        warnings.append(
            f"percent-off coupons took {total.beyond_reservation} CNY more off orders than their rules reserved; "
            "that is spent and counted, but the budget did not hold it: raise the rules' cost per offer"
        )
    return {
        **total.to_dict(),
        "budget": None if campaign.budget is None else str(campaign.budget),
        "budget_held": str(campaign.spent),
        "by_arm": {arm: cost.to_dict() for arm, cost in sorted(costs.items())},
    }


def _add_spend_returns(
    evaluation: dict, frame: pd.DataFrame, costs: dict[str, ArmCost], confidence: float, *, always_valid: bool
) -> None:
    """Give each treated arm's comparison its incremental margin and ROI on what the arm spent, with intervals.

    While the campaign runs the intervals are always-valid, as the report's others are then: the
    ROI is the figure a manager reads every day.
    """
    # The treated arm's own coupon discounts are in its margin and again in spent: observed money, not estimated.
    held = frame.loc[frame["arm"] == HOLDOUT, "margin"]
    for comparison in evaluation["comparisons"]:
        arm = comparison["arm"]
        group = frame[frame["arm"] == arm]
        treated = group["margin"] - group["discount"]
        discount = sum(group["discount"], ZERO)
        try:
            comparison["spend_return"] = spend_return(
                costs.get(arm, ArmCost()).spent,
                list(treated),
                list(held),
                confidence,
                observed_margin=discount,
                always_valid=always_valid,
                tuning_users=tuning_users(),
            ).to_dict()
        except NotEnoughData as error:  # the revenue comparison's warning already says why
            comparison["spend_return"] = None
            comparison.setdefault("not_enough_data", {})["spend_return"] = error.reason


def _rule_uplifts(frame: pd.DataFrame, confidence: float) -> list[dict]:
    """Compare treated and held-out users rule by rule (each user counts under the first rule they matched)."""
    rows = []
    for rule, group in frame.groupby("rule"):
        treated, held = group[group["arm"] != HOLDOUT], group[group["arm"] == HOLDOUT]
        row: dict = {
            "rule": rule,
            "treated": _arm_summary("treated", treated),
            "holdout": _arm_summary(HOLDOUT, held),
            "conversion_uplift": None,
        }
        if not len(held) or not len(treated):
            side = "held-out" if not len(held) else "treated"
            row["not_enough_data"] = {"conversion_uplift": f"no {side} user matched this rule first"}
        else:
            row["conversion_uplift"] = conversion_uplift(
                int(treated["converted"].sum()),
                len(treated),
                int(held["converted"].sum()),
                len(held),
                confidence,
            ).to_dict()
        rows.append(row)
    return rows
