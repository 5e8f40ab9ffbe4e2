"""The report's experiment statistics (CUPED, interval kind, Holm, guardrails) as text lines and CSV rows."""

from typing import Any


def _interval(block: dict[str, Any], prefix: str = "", signed: bool = True) -> str:
    estimate, lower, upper = block[f"{prefix}estimate"], block[f"{prefix}lower"], block[f"{prefix}upper"]
    if isinstance(estimate, str):  # money: CNY strings
        return f"{estimate} CNY ({lower} to {upper})"
    return (
        f"{estimate:+.4f} ({lower:+.4f} to {upper:+.4f})" if signed else f"{estimate:.4f} ({lower:.4f} to {upper:.4f})"
    )


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _bound(value: float | None, spec: str) -> str:
    """Format an interval bound; an infinite bound is null in the data and printed as "inf"."""
    return "inf" if value is None else format(value, spec)


def experiment_text_lines(data: dict[str, Any]) -> list[str]:
    """Return the text lines of the interval kind, CUPED, Holm and the guardrails."""
    intervals = data.get("intervals")
    if not intervals:
        return []
    level = f"{intervals['confidence']:.0%}"
    lines = [f"Intervals: {intervals['kind']} ({intervals['method']}), {level}"]
    for comparison in (data.get("uplift") or {}).get("comparisons", []):
        arm = comparison["arm"]
        valid = comparison.get("always_valid") or {}
        for metric, block in valid.items():
            lines.append(
                f"  {arm} {metric}, always-valid: {_interval(block)}, p={_p(block['p_value'])}, "
                f"Holm p={_p(block.get('p_value_holm'))}"
            )
        if intervals["kind"] != "always-valid":
            for metric in ("conversion", "revenue"):
                block = comparison.get(metric)
                if block:
                    lines.append(f"  {arm} {metric}: p={_p(block['p_value'])}, Holm p={_p(block.get('p_value_holm'))}")
        cuped = comparison.get("cuped")
        if cuped:
            for metric in ("conversion", "revenue"):
                block = cuped[metric]
                lines.append(
                    f"  {arm} {metric}, CUPED ({', '.join(cuped['covariates'])}; {cuped['users_without_history']} "
                    f"users without history): {_interval(block)} against unadjusted "
                    f"{_interval(block, 'unadjusted_')}, variance reduction {_percent(block['variance_reduction'])}"
                )
        elif (comparison.get("not_enough_data") or {}).get("cuped"):
            lines.append(f"  {arm}: no CUPED ({comparison['not_enough_data']['cuped']})")
    for guard in data.get("guardrails") or []:
        parts = []
        churn, rollbacks = guard.get("churn"), guard.get("rollbacks")
        if churn:
            parts.append(
                f"churn hazard ratio {_bound(churn['hazard_ratio'], '.2f')} "
                f"({_bound(churn['lower'], '.2f')} to {_bound(churn['upper'], '.2f')})"
                + (" HARM" if churn["harm"] else "")
            )
        if rollbacks:
            parts.append(
                f"rollbacks {rollbacks['rollbacks']} of {rollbacks['redemptions']} redemptions "
                f"({rollbacks['lower']:.1%} to {rollbacks['upper']:.1%}, tolerated {rollbacks['tolerance']:.0%})"
                + (" HARM" if rollbacks["harm"] else "")
            )
        for name, reason in (guard.get("not_enough_data") or {}).items():
            parts.append(f"{name}: {reason}")
        lines.append(f"  Guardrails of {guard['arm']}: " + "; ".join(parts))
    return lines


def experiment_csv_rows(data: dict[str, Any]) -> list[list[Any]]:
    """Return CSV rows in the report's nine columns (section, name, users, conversions, rate, revenue, uplift, bounds).

    * ``cuped`` and ``cuped_unadjusted`` rows named ``arm:metric``: estimate and interval;
      ``cuped_variance_reduction``: the reduction in the uplift column.
    * ``always_valid`` rows named ``arm:metric`` (while the campaign runs): estimate and interval.
    * ``holm`` rows named after the test: uplift is the raw p-value, uplift_upper the Holm-adjusted one.
    * ``guardrail_churn`` rows named by arm: hazard ratio and interval; ``guardrail_rollbacks``:
      users are redemptions, conversions are rollbacks, rate and its interval.
    """
    rows: list[list[Any]] = []
    for comparison in (data.get("uplift") or {}).get("comparisons", []):
        arm = comparison["arm"]
        cuped = comparison.get("cuped") or {}
        for metric in ("conversion", "revenue"):
            block = cuped.get(metric)
            if block:
                name = f"{arm}:{metric}"
                rows.append(["cuped", name, "", "", "", "", block["estimate"], block["lower"], block["upper"]])
                rows.append(
                    [
                        "cuped_unadjusted",
                        name,
                        "",
                        "",
                        "",
                        "",
                        block["unadjusted_estimate"],
                        block["unadjusted_lower"],
                        block["unadjusted_upper"],
                    ]
                )
                rows.append(["cuped_variance_reduction", name, "", "", "", "", block["variance_reduction"], "", ""])
        for metric, block in (comparison.get("always_valid") or {}).items():
            rows.append(
                ["always_valid", f"{arm}:{metric}", "", "", "", "", block["estimate"], block["lower"], block["upper"]]
            )
    for test in (data.get("multiple_testing") or {}).get("tests", []):
        rows.append(["holm", test["test"], "", "", "", "", test["p_value"], "", test["p_value_holm"]])
    for guard in data.get("guardrails") or []:
        churn, rollbacks = guard.get("churn"), guard.get("rollbacks")
        if churn:
            rows.append(
                ["guardrail_churn", guard["arm"], "", "", "", "", churn["hazard_ratio"], churn["lower"], churn["upper"]]
            )
        if rollbacks:
            rows.append(
                [
                    "guardrail_rollbacks",
                    guard["arm"],
                    rollbacks["redemptions"],
                    rollbacks["rollbacks"],
                    rollbacks["rate"],
                    "",
                    "",
                    rollbacks["lower"],
                    rollbacks["upper"],
                ]
            )
    return rows


def _percent(share: float) -> str:
    """A share as a percentage to one decimal, never "-0.0%" (a reduction that rounds to nothing is 0.0%)."""
    return f"{round(share * 100, 1) + 0.0:.1f}%"
