"""The campaign report as text for a terminal and as CSV rows."""

import csv
import io
from decimal import Decimal

from analytics.stats.experiments import ALWAYS_VALID
from analytics.stats.returns import NO_SPREAD_YET

from ..reports.campaign_report import CampaignReport
from .experiment_stats import experiment_csv_rows, experiment_text_lines

NOT_ENOUGH = "not enough data"


def _not_enough(reasons: dict, statistic: str) -> str:
    """Return "not enough data (why)" for a statistic the report could not compute."""
    reason = reasons.get(statistic)
    return f"{NOT_ENOUGH} ({reason})" if reason else NOT_ENOUGH


def _comparison_line(comparison: dict) -> str:
    """Say what one treated arm did over the control; a statistic it has too few users for says so."""
    conv, revenue, ret = comparison["conversion"], comparison["revenue"], comparison["campaign_return"]
    reasons = comparison.get("not_enough_data") or {}
    level = f"{(conv or revenue or {}).get('confidence', 0.95):.0%}"
    parts = [
        "conversion "
        + (
            _not_enough(reasons, "conversion")
            if conv is None
            else (
                f"{conv['difference']:+.4f} ({level} CI {conv['difference_lower']:+.4f} to "
                f"{conv['difference_upper']:+.4f}, p={conv['p_value']:.3g})"
            )
        ),
        "revenue/user "
        + (
            _not_enough(reasons, "revenue")
            if revenue is None
            else f"{revenue['difference']} CNY (Welch {revenue['welch_lower']} to {revenue['welch_upper']})"
        ),
        (
            f"incremental revenue: {_not_enough(reasons, 'campaign_return')}"
            if ret is None
            else f"spent {ret['cost']} CNY, incremental revenue {ret['incremental_revenue']} CNY"
        ),
        _spend_return_text(comparison.get("spend_return"), reasons, level),
    ]
    return f"Uplift of {comparison['arm']} over {comparison['control']}: " + "; ".join(parts)


def _spend_return_text(spend: dict | None, reasons: dict, level: str) -> str:
    """Say the arm's incremental margin and its ROI on what it spent, with their intervals."""
    if spend is None:
        return f"incremental margin and ROI on spent: {_not_enough(reasons, 'spend_return')}"
    # A running campaign's intervals are always-valid (safe to read every day), an ended one's fixed-horizon.
    if spend.get("interval_kind") == ALWAYS_VALID:
        ci = f"{level} always-valid CI"
    elif NO_SPREAD_YET in (spend.get("interval_method") or ""):
        ci = f"{level} fixed-horizon CI, no margin varies yet"
    else:
        ci = f"{level} CI"
    margin = (
        f"incremental margin {spend['incremental_margin']} CNY ({ci} {spend['incremental_margin_lower']} to "
        f"{spend['incremental_margin_upper']})"
    )
    if spend["roi"] is None:
        return f"{margin}, ROI on spent undefined ({spend['note']})"
    return f"{margin}, ROI on spent {spend['roi']} ({ci} {spend['roi_lower']} to {spend['roi_upper']})"


def cost_line(cost: dict) -> str:
    """Say what the campaign's offers reserved, spent, released and still hold, and what the budget holds."""
    budget = "no budget cap" if cost["budget"] is None else f"budget {cost['budget']} CNY"
    beyond = (
        f", {cost['beyond_reservation']} CNY of it beyond what was reserved"
        if Decimal(cost["beyond_reservation"])
        else ""
    )
    return (
        f"Cost: reserved {cost['reserved']} CNY, spent {cost['spent']} CNY{beyond}, released {cost['released']} CNY, "
        f"outstanding {cost['outstanding']} CNY ({budget}, {cost['budget_held']} CNY of it held)"
    )


def render_text(report: CampaignReport) -> str:
    """Render the report for a terminal: warnings first, then funnel, arms, uplift and rules."""
    data = report.to_dict()
    campaign = data["campaign"]
    lines = [
        f"Campaign report: {campaign['name']} ({campaign['slug']}), {campaign['status']}, as of {campaign['as_of']}"
    ]
    for warning in data["warnings"]:
        lines.append(f"WARNING: {warning}")
    funnel = data["funnel"]
    lines.append("Funnel: " + ", ".join(f"{key} {value}" for key, value in funnel.items()))
    if data["cost"]:
        lines.append(cost_line(data["cost"]))
    lines.append(f"{'arm':<12} {'users':>9} {'converted':>10} {'rate':>8} {'revenue/user':>13}")
    for arm in data["arms"]:
        rate = "-" if arm["conversion_rate"] is None else f"{arm['conversion_rate']:.2%}"
        lines.append(
            f"{arm['arm']:<12} {arm['users']:>9} {arm['conversions']:>10} {rate:>8} "
            f"{arm['revenue_per_user'] or '-':>13}"
        )
    for comparison in (data["uplift"] or {}).get("comparisons", []):
        lines.append(_comparison_line(comparison))
    for rule in data["rules"]:
        uplift = rule.get("conversion_uplift")
        detail = (
            _not_enough(rule.get("not_enough_data") or {}, "conversion_uplift")
            if uplift is None
            else (
                f"{uplift['difference']:+.4f} ({uplift['difference_lower']:+.4f} to {uplift['difference_upper']:+.4f})"
            )
        )
        lines.append(
            f"  rule {rule['rule']}: treated {rule['treated']['users']}, holdout {rule['holdout']['users']}, "
            f"conversion uplift {detail}"
        )
    models = data["uplift_models"]
    if models:
        lines.append(
            f"Uplift models ({models['model']}, the optimiser uses {models['selected_method']}; learned from "
            f"{', '.join(models['sources'])}), on held-out users:"
        )
        for model in models["models"]:
            curve = model["qini_curve"]
            points = ", ".join(
                f"{fraction:.0%} {qini:+.4f}"
                for fraction, qini in zip(curve["fraction"], curve["qini"], strict=True)
                if round(fraction * 100) in (10, 20, 50, 100)
            )
            lines.append(
                f"  {model['method']} {model['package']}: AUUC {model['auuc']:.4f} (random {model['auuc_random']:.4f}, "
                f"lift {model['auuc_lift']:+.4f}), Qini coefficient {model['qini_coefficient']:+.4f}; "
                f"Qini curve {points} ({model['users']} users)"
            )
    lines.extend(experiment_text_lines(data))
    lines.append(f"Methods: {data['methods']}")
    return "\n".join(lines)


def render_csv(report: CampaignReport) -> str:
    """Render the per-arm and per-rule figures as CSV rows.

    The columns are section, name, users, conversions, rate, revenue, uplift, lower, upper.
    ``cost`` rows carry reserved, spent, released, outstanding, beyond_reservation, budget and
    budget_held (in total, then as ``arm:figure``) in the revenue column; per treated arm an
    ``incremental_margin`` row (revenue: spent; uplift, lower, upper: the incremental margin and
    its interval) and a ``roi_on_spent`` row (uplift, lower, upper: ROI on spent and its interval).
    Uplift models follow as ``uplift_model`` rows named ``method:package`` (users: held-out
    users; uplift: AUUC; lower: AUUC of a random ranking; upper: Qini coefficient) and
    ``qini_curve`` rows named ``method:package@fraction`` (uplift: the Qini curve there).
    A statistic an arm or rule has too few users for gives a ``not_enough_data`` row named
    ``arm:statistic`` (or ``rule:name``) with "not enough data: why" in the uplift column.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "section",
            "name",
            "users",
            "conversions",
            "conversion_rate",
            "revenue",
            "uplift",
            "uplift_lower",
            "uplift_upper",
        ]
    )
    data = report.to_dict()
    comparisons = (data["uplift"] or {}).get("comparisons", [])
    uplifts = {c["arm"]: c["conversion"] or {} for c in comparisons}
    for arm in data["arms"]:
        conv = uplifts.get(arm["arm"], {})
        writer.writerow(
            [
                "arm",
                arm["arm"],
                arm["users"],
                arm["conversions"],
                arm["conversion_rate"],
                arm["revenue"],
                conv.get("difference"),
                conv.get("difference_lower"),
                conv.get("difference_upper"),
            ]
        )
    for rule in data["rules"]:
        conv = rule.get("conversion_uplift") or {}
        writer.writerow(
            [
                "rule",
                rule["rule"],
                rule["treated"]["users"],
                rule["treated"]["conversions"],
                rule["treated"]["conversion_rate"],
                rule["treated"]["revenue"],
                conv.get("difference"),
                conv.get("difference_lower"),
                conv.get("difference_upper"),
            ]
        )
    for key, value in data["funnel"].items():
        writer.writerow(["funnel", key, value, "", "", "", "", "", ""])
    for key, value in (data["cost"] or {}).items():
        if key != "by_arm":
            writer.writerow(["cost", key, "", "", "", value, "", "", ""])
    for arm, cost in ((data["cost"] or {}).get("by_arm") or {}).items():
        for key, value in cost.items():
            writer.writerow(["cost", f"{arm}:{key}", "", "", "", value, "", "", ""])
    for comparison in comparisons:
        spend = comparison.get("spend_return")
        if spend is not None:
            writer.writerow(
                [
                    "incremental_margin",
                    comparison["arm"],
                    spend["users_treated"],
                    "",
                    "",
                    spend["spent"],
                    spend["incremental_margin"],
                    spend["incremental_margin_lower"],
                    spend["incremental_margin_upper"],
                ]
            )
            writer.writerow(
                [
                    "roi_on_spent",
                    comparison["arm"],
                    spend["users_treated"],
                    "",
                    "",
                    spend["spent"],
                    spend["roi"],
                    spend["roi_lower"],
                    spend["roi_upper"],
                ]
            )
    missing = [
        (f"{comparison['arm']}:{statistic}", reason)
        for comparison in comparisons
        for statistic, reason in (comparison.get("not_enough_data") or {}).items()
    ]
    missing += [
        (statistic, reason) for statistic, reason in ((data["uplift"] or {}).get("not_enough_data") or {}).items()
    ]
    missing += [
        (f"rule:{rule['rule']}", reason)
        for rule in data["rules"]
        for reason in (rule.get("not_enough_data") or {}).values()
    ]
    for name, reason in missing:
        writer.writerow(["not_enough_data", name, "", "", "", "", f"{NOT_ENOUGH}: {reason}", "", ""])
    for model in (data["uplift_models"] or {}).get("models", []):
        name = f"{model['method']}:{model['package']}"
        writer.writerow(
            [
                "uplift_model",
                name,
                model["users"],
                "",
                "",
                "",
                model["auuc"],
                model["auuc_random"],
                model["qini_coefficient"],
            ]
        )
        for fraction, qini in zip(model["qini_curve"]["fraction"], model["qini_curve"]["qini"], strict=True):
            writer.writerow(["qini_curve", f"{name}@{fraction:.2f}", "", "", "", "", qini, "", ""])
    writer.writerows(experiment_csv_rows(data))
    return out.getvalue()
