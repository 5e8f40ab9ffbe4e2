"""The campaign report: what a campaign caused, one implementation behind the command, the API and the admin.

Outcomes are read per assigned user: conversion is a purchase of one of the campaign's
promoted courses (any course when it promotes none) within the campaign's conversion
window after the user's assignment (and before now); revenue is the sum of those purchases. Each treated arm is compared with the holdout: conversion
difference with Newcombe's hybrid score interval, revenue per user with Welch's interval
and a percentile bootstrap, incremental revenue and ROI; the holdout split is checked for
sample-ratio mismatch before anything else is read.
"""

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import pandas as pd
from django.db import connection
from django.utils import timezone

from campaigns.models import Campaign, CampaignAssignment, Offer
from crossmkt_site.money import ZERO

from ..stats.effects import ArmData, compare_arms

HOLDOUT = CampaignAssignment.HOLDOUT
METHODS = (
    "conversion difference: Newcombe hybrid score interval (Wilson intervals combined); "
    "relative uplift: log risk ratio (Katz); revenue per user: Welch t interval and percentile bootstrap "
    "(2,000 resamples, seeded); sample ratio: chi-square goodness of fit, flagged below p = 0.001; "
    "retention: Kaplan-Meier per arm with a log-rank test"
)


def _imported_outcome_frame(campaign: Campaign) -> pd.DataFrame:
    """Return the outcomes of an experiment run elsewhere, in the frame shape of our own campaigns."""
    from ..models import ExperimentOutcome

    rows = list(ExperimentOutcome.objects.filter(campaign=campaign).values_list("user_ref", "arm", "converted", "revenue"))
    frame = pd.DataFrame(rows, columns=["user_id", "arm", "converted", "revenue"])
    return frame.assign(rule="", churned=False, duration_days=float("nan"))


def campaign_outcome_frame(campaign: Campaign, *, now: datetime | None = None) -> pd.DataFrame:
    """Return one row per assigned user: arm, rule, converted, revenue, and retention time and churn."""
    if campaign.kind == Campaign.Kind.EXTERNAL:
        return _imported_outcome_frame(campaign)
    now = now or timezone.now()
    skus = list(campaign.promoted_courses.values_list("sku", flat=True))
    promoted = f"AND p.item_id IN ({', '.join(['%(sku' + str(i) + ')s' for i in range(len(skus))])})" if skus else ""
    window = f"{int(campaign.conversion_window_days) * 86400} seconds"
    window_end = ("a.assigned_at + CAST(%(window)s AS interval)" if connection.vendor == "postgresql"
                  else "datetime(a.assigned_at, %(window)s)")
    sql = f"""
        SELECT a.user_id, a.arm, COALESCE(r.name, '') AS rule, a.assigned_at,
               COUNT(p.id) AS purchases, COALESCE(SUM(p.amount), 0) AS revenue,
               MIN(c.occurred_at) AS cancelled_at
        FROM campaigns_campaignassignment a
        LEFT JOIN campaigns_rule r ON r.id = a.rule_id
        LEFT JOIN analytics_behaviorevent p ON p.user_id = a.user_id AND p.kind = 'course_purchase' {promoted}
             AND p.occurred_at >= a.assigned_at AND p.occurred_at < {window_end} AND p.occurred_at < %(now)s
        LEFT JOIN analytics_behaviorevent c ON c.user_id = a.user_id AND c.kind = 'membership_cancel'
             AND c.occurred_at >= a.assigned_at AND c.occurred_at < %(now)s
        WHERE a.campaign_id = %(campaign)s
        GROUP BY a.user_id, a.arm, r.name, a.assigned_at
        ORDER BY a.user_id
    """
    with connection.cursor() as cursor:
        params = {"campaign": campaign.pk, "now": now, "window": window} | {f"sku{i}": sku for i, sku in enumerate(skus)}
        cursor.execute(sql, params)
        frame = pd.DataFrame(cursor.fetchall(), columns=[column[0] for column in cursor.description])
    if frame.empty:
        return frame.assign(converted=pd.Series(dtype=bool), duration_days=pd.Series(dtype=float), churned=pd.Series(dtype=bool))
    frame["converted"] = frame["purchases"] > 0
    frame["revenue"] = frame["revenue"].map(lambda value: Decimal(value).quantize(Decimal("0.01")))
    assigned = pd.to_datetime(frame["assigned_at"], utc=True)
    cancelled = pd.to_datetime(frame["cancelled_at"], utc=True)
    frame["churned"] = cancelled.notna()
    frame["duration_days"] = ((cancelled.fillna(pd.Timestamp(now)) - assigned).dt.total_seconds() / 86400).clip(lower=0)
    return frame


def _arm_costs(campaign: Campaign) -> dict[str, Decimal]:
    """Money each arm's offers hold or used: issued and redeemed offers, not expired or revoked ones."""
    sql = """
        SELECT a.arm, COALESCE(SUM(o.cost), 0) FROM campaigns_offer o
        JOIN campaigns_campaignassignment a ON a.campaign_id = o.campaign_id AND a.user_id = o.user_id
        WHERE o.campaign_id = %s AND o.status NOT IN ('expired', 'revoked')
        GROUP BY a.arm
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [campaign.pk])
        return {arm: Decimal(cost).quantize(Decimal("0.01")) for arm, cost in cursor.fetchall()}


def _funnel(campaign: Campaign, frame: pd.DataFrame) -> dict[str, int]:
    offers = Offer.objects.filter(campaign=campaign)
    treated = frame[frame["arm"] != HOLDOUT] if not frame.empty else frame
    return {
        "eligible": len(frame),
        "treated": len(treated),
        "holdout": int((frame["arm"] == HOLDOUT).sum()) if not frame.empty else 0,
        "issued": offers.count(),
        "delivered": offers.filter(delivered_at__isnull=False).count(),
        "redeemed": offers.filter(status=Offer.Status.REDEEMED).count(),
        "converted": int(treated["converted"].sum()) if not treated.empty else 0,
    }


def _arm_data(group: pd.DataFrame, cost: Decimal = ZERO) -> ArmData:
    followed = group["duration_days"].notna().all() and len(group)
    return ArmData(
        users=len(group), conversions=int(group["converted"].sum()), revenue=list(group["revenue"]), cost=cost,
        retention_durations=list(group["duration_days"]) if followed else None,
        retention_churned=list(group["churned"]) if followed else None,
    )


def _arm_summary(arm: str, group: pd.DataFrame) -> dict:
    users = len(group)
    revenue = sum(group["revenue"], ZERO)
    return {
        "arm": arm, "users": users, "conversions": int(group["converted"].sum()),
        "conversion_rate": float(group["converted"].mean()) if users else None,
        "revenue": str(revenue), "revenue_per_user": str((revenue / users).quantize(Decimal("0.01"))) if users else None,
    }


def uplift_models_summary(*, campaign: Campaign | None = None) -> dict | None:
    """Return the active uplift run's held-out evaluation: per method and offer package, AUUC and the Qini curve.

    None while no uplift model is trained. ``learned_from_this_campaign`` says whether the
    campaign's own records were among the experiments the models learned from.
    """
    from ..models import ModelRun

    run = ModelRun.objects.filter(model=ModelRun.Model.UPLIFT, is_active=True).defer("artifact").first()
    if run is None:
        return None
    metrics = run.metrics or {}
    models = []
    for method, packages in (metrics.get("evaluation") or {}).items():
        for package, curves in packages.items():
            conversion, value = curves["conversion"], curves.get("value") or {}
            models.append({
                "method": method, "package": package, "users": conversion["users"],
                "users_treated": conversion["users_treated"], "users_control": conversion["users_control"],
                "auuc": conversion["auuc"], "auuc_random": conversion["auuc_random"], "auuc_lift": conversion["auuc_lift"],
                "qini_coefficient": conversion["qini_coefficient"], "revenue_auuc_lift": value.get("auuc_lift"),
                "qini_curve": {"fraction": conversion["fraction"], "qini": conversion["qini"],
                               "random": conversion["random_qini"]},
            })
    sources = [source["campaign"] for source in metrics.get("sources", [])]
    return {
        "model": f"uplift v{run.version}", "trained_at": run.created_at.isoformat(),
        "selected_method": metrics.get("selected_method"), "sources": sources,
        "learned_from_this_campaign": campaign is not None and campaign.slug in sources,
        "outcome": "conversion (0/1) of held-out users of the experiments; AUUC and Qini per user of that set",
        "models": models,
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

    def to_dict(self) -> dict:
        return {
            "campaign": self.campaign, "funnel": self.funnel, "warnings": self.warnings, "arms": self.arms,
            "uplift": self.evaluation, "rules": self.rules, "methods": self.methods, "uplift_models": self.uplift_models,
        }


def campaign_report(*, campaign: Campaign, now: datetime | None = None, confidence: float = 0.95) -> CampaignReport:
    """Build the full report of one campaign from its assignments, offers and the behaviour since."""
    now = now or timezone.now()
    frame = campaign_outcome_frame(campaign, now=now)
    costs = _arm_costs(campaign)
    warnings: list[str] = []
    evaluation = None
    rules: list[dict] = []
    arms = [_arm_summary(arm, group) for arm, group in frame.groupby("arm")] if not frame.empty else []
    if not frame.empty and HOLDOUT in set(frame["arm"]) and len(set(frame["arm"])) > 1:
        by_arm = {arm: _arm_data(group, costs.get(arm, ZERO)) for arm, group in frame.groupby("arm")}
        shares = None
        if campaign.kind == Campaign.Kind.RULES:
            holdout_share = float(campaign.holdout_share)
            shares = {arm: (holdout_share if arm == HOLDOUT else (1 - holdout_share) / (len(by_arm) - 1)) for arm in by_arm}
        result = compare_arms(by_arm, HOLDOUT, confidence=confidence, configured_shares=shares)
        if result.sample_ratio is not None and result.sample_ratio.mismatch:
            warnings.append(result.sample_ratio.warning)
        evaluation = result.to_dict()
        rules = _rule_uplifts(frame, confidence)
    elif not frame.empty:
        warnings.append("no holdout users: the campaign's effect cannot be measured, only its reach")
    return CampaignReport(
        campaign={
            "slug": campaign.slug, "name": campaign.name, "kind": campaign.kind, "status": campaign.status,
            "starts_at": campaign.starts_at.isoformat(), "ends_at": campaign.ends_at.isoformat(),
            "timezone": str(campaign.timezone), "budget": None if campaign.budget is None else str(campaign.budget),
            "spent": str(campaign.spent), "holdout_share": str(campaign.holdout_share), "as_of": now.isoformat(),
            "mode": campaign.mode,
        },
        funnel=_funnel(campaign, frame), arms=arms, rules=rules, evaluation=evaluation, warnings=warnings,
        uplift_models=uplift_models_summary(campaign=campaign),
    )


def _rule_uplifts(frame: pd.DataFrame, confidence: float) -> list[dict]:
    """Compare treated and held-out users rule by rule (each user counts under the first rule they matched)."""
    from ..stats.effects import conversion_uplift

    rows = []
    for rule, group in frame.groupby("rule"):
        treated, held = group[group["arm"] != HOLDOUT], group[group["arm"] == HOLDOUT]
        row = {"rule": rule, "treated": _arm_summary("treated", treated), "holdout": _arm_summary(HOLDOUT, held)}
        if len(treated) and len(held):
            row["conversion_uplift"] = conversion_uplift(
                int(treated["converted"].sum()), len(treated), int(held["converted"].sum()), len(held), confidence,
            ).to_dict()
        rows.append(row)
    return rows


def render_text(report: CampaignReport) -> str:
    """Render the report for a terminal: warnings first, then funnel, arms, uplift and rules."""
    data = report.to_dict()
    campaign = data["campaign"]
    lines = [f"Campaign report: {campaign['name']} ({campaign['slug']}), {campaign['status']}, as of {campaign['as_of']}"]
    for warning in data["warnings"]:
        lines.append(f"WARNING: {warning}")
    funnel = data["funnel"]
    lines.append("Funnel: " + ", ".join(f"{key} {value}" for key, value in funnel.items()))
    lines.append(f"{'arm':<12} {'users':>9} {'converted':>10} {'rate':>8} {'revenue/user':>13}")
    for arm in data["arms"]:
        rate = "-" if arm["conversion_rate"] is None else f"{arm['conversion_rate']:.2%}"
        lines.append(f"{arm['arm']:<12} {arm['users']:>9} {arm['conversions']:>10} {rate:>8} {arm['revenue_per_user'] or '-':>13}")
    for comparison in (data["uplift"] or {}).get("comparisons", []):
        conv, revenue, ret = comparison["conversion"], comparison["revenue"], comparison["campaign_return"]
        lines.append(
            f"Uplift of {comparison['arm']} over {comparison['control']}: conversion {conv['difference']:+.4f} "
            f"(95% CI {conv['difference_lower']:+.4f} to {conv['difference_upper']:+.4f}, p={conv['p_value']:.3g}); "
            f"revenue/user {revenue['difference']} CNY (Welch {revenue['welch_lower']} to {revenue['welch_upper']}); "
            f"cost {ret['cost']} CNY, incremental revenue {ret['incremental_revenue']} CNY, ROI {ret['roi']}"
        )
    for rule in data["rules"]:
        uplift = rule.get("conversion_uplift")
        detail = "no holdout" if uplift is None else f"{uplift['difference']:+.4f} ({uplift['difference_lower']:+.4f} to {uplift['difference_upper']:+.4f})"
        lines.append(f"  rule {rule['rule']}: treated {rule['treated']['users']}, holdout {rule['holdout']['users']}, conversion uplift {detail}")
    models = data["uplift_models"]
    if models:
        lines.append(f"Uplift models ({models['model']}, the optimiser uses {models['selected_method']}; learned from "
                     f"{', '.join(models['sources'])}), on held-out users:")
        for model in models["models"]:
            curve = model["qini_curve"]
            points = ", ".join(f"{fraction:.0%} {qini:+.4f}" for fraction, qini in zip(curve["fraction"], curve["qini"])
                               if round(fraction * 100) in (10, 20, 50, 100))
            lines.append(f"  {model['method']} {model['package']}: AUUC {model['auuc']:.4f} (random {model['auuc_random']:.4f}, "
                         f"lift {model['auuc_lift']:+.4f}), Qini coefficient {model['qini_coefficient']:+.4f}; "
                         f"Qini curve {points} ({model['users']} users)")
    lines.append(f"Methods: {data['methods']}")
    return "\n".join(lines)


def render_csv(report: CampaignReport) -> str:
    """Render the per-arm and per-rule figures as CSV rows (section, name, users, conversions, rate, revenue, uplift, lower, upper).

    Uplift models follow as ``uplift_model`` rows named ``method:package`` (users: held-out
    users; uplift: AUUC; lower: AUUC of a random ranking; upper: Qini coefficient) and
    ``qini_curve`` rows named ``method:package@fraction`` (uplift: the Qini curve there).
    """
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["section", "name", "users", "conversions", "conversion_rate", "revenue", "uplift", "uplift_lower", "uplift_upper"])
    data = report.to_dict()
    uplifts = {c["arm"]: c["conversion"] for c in (data["uplift"] or {}).get("comparisons", [])}
    for arm in data["arms"]:
        conv = uplifts.get(arm["arm"], {})
        writer.writerow(["arm", arm["arm"], arm["users"], arm["conversions"], arm["conversion_rate"], arm["revenue"],
                         conv.get("difference"), conv.get("difference_lower"), conv.get("difference_upper")])
    for rule in data["rules"]:
        conv = rule.get("conversion_uplift") or {}
        writer.writerow(["rule", rule["rule"], rule["treated"]["users"], rule["treated"]["conversions"],
                         rule["treated"]["conversion_rate"], rule["treated"]["revenue"],
                         conv.get("difference"), conv.get("difference_lower"), conv.get("difference_upper")])
    for key, value in data["funnel"].items():
        writer.writerow(["funnel", key, value, "", "", "", "", "", ""])
    for model in (data["uplift_models"] or {}).get("models", []):
        name = f"{model['method']}:{model['package']}"
        writer.writerow(["uplift_model", name, model["users"], "", "", "", model["auuc"], model["auuc_random"],
                         model["qini_coefficient"]])
        for fraction, qini in zip(model["qini_curve"]["fraction"], model["qini_curve"]["qini"]):
            writer.writerow(["qini_curve", f"{name}@{fraction:.2f}", "", "", "", "", qini, "", ""])
    return out.getvalue()
