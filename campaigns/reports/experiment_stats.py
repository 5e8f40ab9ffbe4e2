"""The report's experiment statistics: CUPED, always-valid intervals while a campaign runs, Holm, guardrails.

Added to the campaign report beside its fixed-horizon comparisons (``campaign_report`` calls
``experiment_statistics`` once); the statistics themselves are ``analytics.stats.experiments``.

* ``intervals``: which kind of interval the report shows. While a campaign can still gain
  users or conversions (before its end plus its conversion window) it is **always-valid**
  (the mixture SPRT; a manager may look every day); afterwards, and for imported experiments,
  **fixed-horizon**. Each comparison gets an ``always_valid`` block while running.
* ``cuped`` per comparison: conversion and revenue per user adjusted for pre-period
  covariates, with the unadjusted figure and the variance reduction beside it.
* ``multiple_testing``: Holm-adjusted p-values over the campaign's family (each treated arm's
  conversion and revenue, each rule's conversion), of the kind the report shows; each p-value
  in the report gets its ``p_value_holm`` beside it.
* ``guardrails`` per treated arm: membership churn hazard ratio and the redemption rollback
  share, with ``harm`` set (and a warning) when the interval shows harm.
"""

from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings

from analytics.stats.effects import NotEnoughData
from analytics.stats.experiments import (
    ALWAYS_VALID,
    DEFAULT_ROLLBACK_TOLERANCE,
    DEFAULT_TUNING_USERS,
    FIXED_HORIZON,
    always_valid_interval,
    churn_hazard_ratio,
    covariate_columns,
    cuped_difference,
    difference_variance,
    holm_adjust,
    rollback_rate,
)

from ..models import Campaign
from .experiment_selectors import campaign_pre_period_frame, campaign_rollbacks_by_arm
from .selectors import HOLDOUT

DEFAULT_PRE_PERIOD_DAYS = 28
CENT = Decimal("0.01")

METHODS = (
    "CUPED (Deng et al. 2013): conversion and revenue per user adjusted by least squares for each user's course "
    "spend and purchases in the {days} days before assignment (imported experiments: their pre_revenue and "
    "pre_converted), the adjusted difference being the treatment coefficient of y ~ treated + covariates; users "
    "without history (no event before assignment, or blank covariates) get zero covariates and a no-history "
    "indicator, so they are adjusted by their own group's mean; Welch intervals on the adjusted and unadjusted "
    "outcomes, variance reduction = 1 - adjusted variance / unadjusted variance; "
    "always-valid intervals while a campaign runs (until its end plus the conversion window): mixture sequential "
    "probability ratio test with a normal mixture (Johari, Koomen, Pekelis and Walsh 2017, 'Peeking at A/B tests', "
    "KDD; 'Always valid inference', Operations Research 2022), tuned to be narrowest at {tuning:,} users, p-values "
    "1/likelihood ratio; fixed-horizon intervals once it has ended; "
    "multiple testing: Holm step-down adjusted p-values (Holm 1979) over each treated arm's conversion and revenue "
    "and each rule's conversion, beside the raw ones; "
    "guardrails: membership churn hazard ratio (Cox proportional hazards, Wald interval), harmful when the interval "
    "lies above 1; redemption rollbacks as a share of redemptions (Wilson interval), harmful when the interval lies "
    "above {tolerance:.0%}"
)


def pre_period_days() -> int:
    return int(getattr(settings, "CROSSMKT_CUPED_PRE_DAYS", DEFAULT_PRE_PERIOD_DAYS))


def tuning_users() -> int:
    return int(getattr(settings, "CROSSMKT_SEQUENTIAL_TUNING_USERS", DEFAULT_TUNING_USERS))


def rollback_tolerance() -> float:
    return float(getattr(settings, "CROSSMKT_GUARDRAIL_ROLLBACK_TOLERANCE", DEFAULT_ROLLBACK_TOLERANCE))


def methods_text() -> str:
    """Return the methods sentence of these statistics with the configured settings filled in."""
    return METHODS.format(days=pre_period_days(), tuning=tuning_users(), tolerance=rollback_tolerance())


def interval_kind(campaign: Campaign, now: datetime) -> str:
    """Return "always-valid" while the campaign can still gain users or conversions, else "fixed-horizon"."""
    if campaign.kind == Campaign.Kind.EXTERNAL:
        return FIXED_HORIZON
    settled = campaign.ends_at + timedelta(days=int(campaign.conversion_window_days))
    return FIXED_HORIZON if now >= settled else ALWAYS_VALID


def _money(value: float) -> str:
    return str(Decimal(repr(float(value))).quantize(CENT, rounding=ROUND_HALF_UP))


def _revenue_as_money(block: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Return the block with its money figures as CNY strings of two places (money is never a float in a report)."""
    return {key: (_money(value) if key in keys and value is not None else value) for key, value in block.items()}


def _always_valid(treated: np.ndarray, control: np.ndarray, confidence: float) -> dict[str, Any]:
    estimate, variance = difference_variance(treated, control)
    return always_valid_interval(
        estimate, variance, len(treated) + len(control), confidence=confidence, tuning_users=tuning_users()
    ).to_dict()


def _outcomes(group: pd.DataFrame) -> dict[str, np.ndarray]:
    return {
        "conversion": group["converted"].astype(float).to_numpy(),
        "revenue": np.array([float(value) for value in group["revenue"]], dtype=float),
    }


def _cuped_block(
    treated: pd.DataFrame, control: pd.DataFrame, names: tuple[str, ...], kind: str, confidence: float
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "covariates": list(names),
        "pre_period_days": pre_period_days(),
        "users_without_history": int((~treated["has_history"]).sum() + (~control["has_history"]).sum()),
        "interval_kind": kind,
    }
    x_t, x_c = treated[list(names)].to_numpy(float), control[list(names)].to_numpy(float)
    outcomes_t, outcomes_c = _outcomes(treated), _outcomes(control)
    for metric in ("conversion", "revenue"):
        result = cuped_difference(
            outcomes_t[metric], outcomes_c[metric], x_t, x_c, covariate_names=names, confidence=confidence
        )
        figures: dict[str, Any] = {
            "estimate": result.estimate,
            "lower": result.lower,
            "upper": result.upper,
            "p_value": result.p_value,
            "standard_error": result.standard_error,
            "unadjusted_estimate": result.unadjusted_estimate,
            "unadjusted_lower": result.unadjusted_lower,
            "unadjusted_upper": result.unadjusted_upper,
            "unadjusted_p_value": result.unadjusted_p_value,
            "unadjusted_standard_error": result.unadjusted_standard_error,
            "variance_reduction": result.variance_reduction,
            "theta": list(result.theta),
        }
        if kind == ALWAYS_VALID:
            users = result.users_treated + result.users_control
            for prefix, estimate, se in (
                ("", result.estimate, result.standard_error),
                ("unadjusted_", result.unadjusted_estimate, result.unadjusted_standard_error),
            ):
                try:
                    valid = always_valid_interval(
                        estimate, se * se, users, confidence=confidence, tuning_users=tuning_users()
                    )
                except NotEnoughData:
                    continue
                figures[f"{prefix}lower"], figures[f"{prefix}upper"] = valid.lower, valid.upper
                figures[f"{prefix}p_value"] = valid.p_value
        if metric == "revenue":
            figures = _revenue_as_money(
                figures, ("estimate", "lower", "upper", "unadjusted_estimate", "unadjusted_lower", "unadjusted_upper")
            )
        block[metric] = figures
    return block


def _covariates(campaign: Campaign, frame: pd.DataFrame) -> tuple[pd.DataFrame | None, tuple[str, ...], str | None]:
    """Return the outcome frame joined with the covariate matrix, the covariate names, or why there are none."""
    pre = campaign_pre_period_frame(campaign, days=pre_period_days())
    names = [column for column in pre.columns if column not in ("user_id", "has_history")]
    if not names:
        return None, (), "the experiment's outcomes were imported without pre_revenue or pre_converted columns"
    joined = frame.merge(pre, on="user_id", how="left")
    joined["has_history"] = joined["has_history"].fillna(False).astype(bool)
    matrix, kept = covariate_columns({name: joined[name].to_numpy(float) for name in names}, joined["has_history"])
    if not kept:
        return None, (), "the pre-period covariates are the same for every user, so they cannot adjust anything"
    covariates = pd.DataFrame(matrix, columns=list(kept), index=joined.index)
    return pd.concat([joined[["arm", "rule", "converted", "revenue", "has_history"]], covariates], axis=1), kept, None


def experiment_statistics(
    *,
    campaign: Campaign,
    frame: pd.DataFrame,
    evaluation: dict[str, Any],
    rules: list[dict[str, Any]],
    now: datetime,
    confidence: float,
) -> tuple[dict[str, Any], list[str]]:
    """Add CUPED, always-valid and Holm figures to the evaluation's comparisons and rules; return new blocks.

    ``evaluation`` and ``rules`` are the report's data and gain keys in place (``cuped``,
    ``always_valid``, ``p_value_holm``); the returned dict holds the report's new top-level blocks
    (``intervals``, ``multiple_testing``, ``guardrails``) and the list holds warnings.
    """
    kind = interval_kind(campaign, now)
    warnings: list[str] = []
    control = frame[frame["arm"] == HOLDOUT]
    with_covariates, names, no_cuped = _covariates(campaign, frame)
    rollbacks = campaign_rollbacks_by_arm(campaign) if campaign.kind != Campaign.Kind.EXTERNAL else {}
    followed = "duration_days" in frame and frame["duration_days"].notna().all()
    family: list[tuple[str, dict[str, Any]]] = []
    guardrails: list[dict[str, Any]] = []

    for comparison in evaluation["comparisons"]:
        arm = comparison["arm"]
        treated = frame[frame["arm"] == arm]
        missing = comparison.setdefault("not_enough_data", {})
        comparison["cuped"] = None
        if with_covariates is None:
            missing["cuped"] = no_cuped
        else:
            try:
                comparison["cuped"] = _cuped_block(
                    with_covariates[with_covariates["arm"] == arm],
                    with_covariates[with_covariates["arm"] == HOLDOUT],
                    names,
                    kind,
                    confidence,
                )
            except NotEnoughData as error:
                missing["cuped"] = error.reason
        if kind == ALWAYS_VALID:
            outcomes_t, outcomes_c = _outcomes(treated), _outcomes(control)
            comparison["always_valid"] = {}
            for metric in ("conversion", "revenue"):
                try:
                    block = _always_valid(outcomes_t[metric], outcomes_c[metric], confidence)
                except NotEnoughData as error:
                    missing[f"always_valid_{metric}"] = error.reason
                    continue
                if metric == "revenue":
                    block = _revenue_as_money(block, ("estimate", "lower", "upper"))
                comparison["always_valid"][metric] = block
                family.append((f"{arm}: {metric}", block))
        else:
            for metric in ("conversion", "revenue"):
                if comparison.get(metric) is not None:
                    family.append((f"{arm}: {metric}", comparison[metric]))
        guardrails.append(_guardrails(arm, treated, control, rollbacks.get(arm), followed, confidence, warnings))

    for rule in rules:
        treated = frame[(frame["rule"] == rule["rule"]) & (frame["arm"] != HOLDOUT)]
        held = frame[(frame["rule"] == rule["rule"]) & (frame["arm"] == HOLDOUT)]
        if kind == ALWAYS_VALID:
            try:
                rule["always_valid"] = _always_valid(
                    _outcomes(treated)["conversion"], _outcomes(held)["conversion"], confidence
                )
                family.append((f"rule {rule['rule']}: conversion", rule["always_valid"]))
            except NotEnoughData as error:
                rule.setdefault("not_enough_data", {})["always_valid"] = error.reason
        elif rule.get("conversion_uplift") is not None:
            family.append((f"rule {rule['rule']}: conversion", rule["conversion_uplift"]))

    adjusted = holm_adjust([block.get("p_value") for _, block in family])
    tests = []
    for (name, block), holm in zip(family, adjusted, strict=True):
        block["p_value_holm"] = holm
        tests.append({"test": name, "p_value": block.get("p_value"), "p_value_holm": holm})
    blocks = {
        "intervals": {
            "kind": kind,
            "confidence": confidence,
            "method": (
                "mixture sequential probability ratio test (normal mixture), always valid at every look"
                if kind == ALWAYS_VALID
                else "fixed horizon: valid when read once, after the campaign"
            ),
            "tuning_users": tuning_users() if kind == ALWAYS_VALID else None,
        },
        "multiple_testing": {"method": "holm", "p_value_kind": kind, "tests": tests},
        "guardrails": guardrails,
    }
    return blocks, warnings


def _guardrails(
    arm: str,
    treated: pd.DataFrame,
    control: pd.DataFrame,
    rollbacks: tuple[int, int] | None,
    followed: bool,
    confidence: float,
    warnings: list[str],
) -> dict[str, Any]:
    row: dict[str, Any] = {"arm": arm, "churn": None, "rollbacks": None, "not_enough_data": {}}
    if followed:
        try:
            churn = churn_hazard_ratio(
                treated["duration_days"].to_numpy(float),
                treated["churned"].to_numpy(bool),
                control["duration_days"].to_numpy(float),
                control["churned"].to_numpy(bool),
                confidence=confidence,
            )
            row["churn"] = churn.to_dict()
            if churn.harm:
                warnings.append(
                    f"guardrail: members of {arm} cancel faster than the holdout (churn hazard ratio "
                    f"{churn.hazard_ratio:.2f}, {churn.confidence:.0%} CI {churn.lower:.2f} to {churn.upper:.2f})"
                )
        except NotEnoughData as error:
            row["not_enough_data"]["churn"] = error.reason
    else:
        row["not_enough_data"]["churn"] = "membership cancellations are not followed for this campaign"
    redeemed, rolled_back = rollbacks or (0, 0)
    try:
        rate = rollback_rate(redeemed, rolled_back, tolerance=rollback_tolerance(), confidence=confidence)
        row["rollbacks"] = rate.to_dict()
        if rate.harm:
            warnings.append(
                f"guardrail: {rate.rollbacks} of {rate.redemptions} redemptions of {arm} were rolled back "
                f"({rate.rate:.1%}, {rate.confidence:.0%} CI {rate.lower:.1%} to {rate.upper:.1%}, "
                f"above the tolerated {rate.tolerance:.0%})"
            )
    except NotEnoughData as error:
        row["not_enough_data"]["rollbacks"] = error.reason
    return row
