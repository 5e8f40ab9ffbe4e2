"""The admin dashboard: KPI cards, and charts of the latest campaigns and the month's settlement as inline SVG."""

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from analytics.selectors import uplift_models_summary
from crossmkt_site.errors import ApplicationError

from ..selectors.settlement import period_last_closed, period_parse
from . import charts
from .selectors import CampaignFigures, DashboardFigures, dashboard_figures

HOLDOUT = "holdout"


def _money(amount: Decimal | None) -> str:
    return "-" if amount is None else f"{amount:,.2f}"


def _cards(figures: DashboardFigures) -> list[dict]:
    """Return the KPI cards: a label, the figure, and a line that puts it in context."""
    issued, redeemed = figures.offers_issued, figures.offers_redeemed
    spent, cap = figures.budget_spent, figures.budget_cap
    compared = any((item.report.get("uplift") or {}).get("comparisons") for item in figures.campaigns)
    if figures.incremental_margin is None and compared:
        effect = _("not enough data: the arms need at least two users each")
    elif figures.incremental_margin is None:
        effect = _("no campaign with a holdout to measure against yet")
    elif figures.roi is None:
        effect = _("nothing spent yet (%(spent)s CNY), so no ROI") % {"spent": _money(figures.campaign_spent)}
    else:
        effect = _("ROI %(roi)s on %(spent)s CNY spent") % {
            "roi": figures.roi,
            "spent": _money(figures.campaign_spent),
        }
    costs = figures.running_costs
    owed = [balance for balance in figures.balances if balance.amount > 0]
    return [
        {
            "key": "active",
            "label": _("Active campaigns"),
            "value": str(figures.active_campaigns),
            "detail": _("running now"),
        },
        {
            "key": "offers",
            "label": _("Offers issued / redeemed"),
            "value": f"{issued:,} / {redeemed:,}",
            "detail": _("redemption rate %(rate)s") % {"rate": f"{redeemed / issued:.1%}" if issued else "-"},
        },
        {
            "key": "budget",
            "label": _("Budget held / cap (CNY)"),
            "value": f"{_money(spent)} / {_money(cap)}",
            "detail": _(
                "%(share)s of the running campaigns' budgets; reserved %(reserved)s, spent %(spent)s, "
                "released %(released)s"
            )
            % {
                "share": f"{spent / cap:.1%}" if cap else "-",
                "reserved": _money(costs["reserved"]),
                "spent": _money(costs["spent"]),
                "released": _money(costs["released"]),
            },
        },
        {
            "key": "effect",
            "label": _("Incremental margin, latest campaigns (CNY)"),
            "value": _money(figures.incremental_margin),
            "detail": effect,
        },
        {
            "key": "settlement",
            "label": _("Settlement %(period)s (CNY)") % {"period": f"{figures.period:%Y-%m}"},
            "value": ", ".join(f"{item.partner.name} +{_money(item.amount)}" for item in owed[:2]) or _("all square"),
            "detail": _("statements issued: %(issued)d; drafts computed now: %(drafts)d")
            % {"issued": figures.statements_issued, "drafts": figures.statements_draft},
        },
    ]


def _comparison_label(item: CampaignFigures, arm: str, arms: int) -> str:
    return item.campaign.name if arms == 1 else f"{item.campaign.name} · {arm}"


def _not_enough_note(label: str, comparison: dict, statistic: str) -> str:
    return _("%(label)s: not enough data (%(reason)s)") % {
        "label": label,
        "reason": (comparison.get("not_enough_data") or {}).get(statistic, "-"),
    }


def _uplift_charts(figures: DashboardFigures) -> list[str]:
    """Draw conversion and revenue uplift per treated arm; an arm too small for a statistic is a note instead."""
    conversion, revenue = [], []
    conversion_notes, revenue_notes = [], []
    for item in figures.campaigns:
        comparisons = (item.report.get("uplift") or {}).get("comparisons", [])
        for comparison in comparisons:
            label = _comparison_label(item, comparison["arm"], len(comparisons))
            conv = comparison["conversion"]
            if conv is None:
                conversion_notes.append(_not_enough_note(label, comparison, "conversion"))
            else:
                conversion.append(
                    charts.Interval(
                        label,
                        conv["difference"],
                        conv["difference_lower"],
                        conv["difference_upper"],
                        _("%(estimate)+.1f pp (%(lower)+.1f to %(upper)+.1f)")
                        % {
                            "estimate": conv["difference"] * 100,
                            "lower": conv["difference_lower"] * 100,
                            "upper": conv["difference_upper"] * 100,
                        },
                    )
                )
            money = comparison["revenue"]
            if money is None:
                revenue_notes.append(_not_enough_note(label, comparison, "revenue"))
                continue
            revenue.append(
                charts.Interval(
                    label,
                    Decimal(money["difference"]),
                    Decimal(money["welch_lower"]),
                    Decimal(money["welch_upper"]),
                    _("%(estimate)s CNY (%(lower)s to %(upper)s)")
                    % {"estimate": money["difference"], "lower": money["welch_lower"], "upper": money["welch_upper"]},
                )
            )
    no_holdout = _("No campaign with a holdout yet.")
    confidence = next(
        (item.report["uplift"]["confidence"] for item in figures.campaigns if item.report.get("uplift")), 0.95
    )
    level = {"level": f"{confidence:.0%}"}
    return [
        charts.interval_chart(
            title=_("Conversion uplift over holdout, %(level)s interval") % level,
            intervals=conversion,
            axis_label=_("treated minus holdout, percentage points"),
            empty=no_holdout,
            notes=conversion_notes,
        ),
        charts.interval_chart(
            title=_("Revenue per user uplift over holdout (CNY), %(level)s Welch interval") % level,
            intervals=revenue,
            axis_label=_("treated minus holdout, CNY per user"),
            empty=no_holdout,
            percent=False,
            notes=revenue_notes,
        ),
    ]


def _qini_charts() -> list[str]:
    """Draw, per offer package the uplift models know, each method's Qini curve on held-out users.

    Each is drawn against random targeting.
    """
    summary = uplift_models_summary()
    if summary is None:
        return []
    by_package: dict[str, list[dict]] = {}
    for model in summary["models"]:
        by_package.setdefault(model["package"], []).append(model)
    drawn = []
    for package, models in by_package.items():
        colors = iter(charts.SERIES_COLORS)
        series = [
            charts.Series(
                _("%(method)s: AUUC %(auuc).4f, Qini %(qini)+.4f")
                % {"method": model["method"], "auuc": model["auuc"], "qini": model["qini_coefficient"]},
                list(zip(model["qini_curve"]["fraction"], model["qini_curve"]["qini"], strict=True)),
                color=next(colors, charts.COLORS["treated"]),
            )
            for model in models
        ]
        random = models[0]["qini_curve"]
        series.append(
            charts.Series(
                _("random targeting"),
                list(zip(random["fraction"], random["random"], strict=True)),
                color=charts.COLORS["holdout"],
                dashed=True,
            )
        )
        drawn.append(
            charts.line_chart(
                title=_("Qini curve of %(package)s (%(model)s, held-out users)")
                % {"package": package, "model": summary["model"]},
                series=series,
                x_ticks=[(0, "0%"), (0.5, "50%"), (1, "100%")],
                y_label=_("incremental conversions per user"),
                empty=_("No uplift model trained yet."),
            )
        )
    return drawn


def _funnel_chart(item: CampaignFigures) -> str:
    steps = [
        ("eligible", _("eligible")),
        ("treated", _("treated")),
        ("holdout", _("held out")),
        ("issued", _("offers issued")),
        ("delivered", _("delivered")),
        ("redeemed", _("redeemed")),
        ("converted", _("converted (treated)")),
    ]
    funnel = item.report["funnel"]
    bars = [charts.Bar(label, funnel[key], f"{funnel[key]:,}") for key, label in steps if key in funnel]
    return charts.bar_chart(
        title=_("Funnel"), bars=bars if funnel.get("eligible") else [], empty=_("No users assigned yet.")
    )


def _retention_chart(item: CampaignFigures) -> str:
    uplift = item.report.get("uplift") or {}
    retention = uplift.get("retention") or {}
    too_few = (uplift.get("not_enough_data") or {}).get("retention")
    series, colors = [], iter(charts.SERIES_COLORS)
    for curve in retention.get("curves", []):
        is_holdout = curve["arm"] == HOLDOUT
        series.append(
            charts.Series(
                _("holdout") if is_holdout else curve["arm"],
                list(zip(curve["times"], curve["survival"], strict=True)),
                color=charts.COLORS["holdout"] if is_holdout else next(colors, charts.COLORS["treated"]),
                dashed=is_holdout,
            )
        )
    title = _("Retention (Kaplan-Meier), treated vs holdout")
    if retention.get("log_rank"):
        title += _(", log-rank p = %(p).3g") % {"p": retention["log_rank"]["p_value"]}
    return charts.step_chart(
        title=title,
        series=series,
        x_label=_("days since assignment"),
        y_label=_("still a member"),
        empty=(
            _("Not enough data (%(reason)s).") % {"reason": too_few}
            if too_few
            else _("No retention data (no holdout, or outcomes imported without times).")
        ),
    )


def _experiment_chart(item: CampaignFigures) -> str:
    """Draw each arm's conversion uplift with the interval the report shows, unadjusted and CUPED-adjusted."""
    report = item.report
    kind = (report.get("intervals") or {}).get("kind")
    intervals, notes = [], []
    for comparison in (report.get("uplift") or {}).get("comparisons", []):
        arm = comparison["arm"]
        shown = (comparison.get("always_valid") or {}).get("conversion") if kind == "always-valid" else None
        conv = comparison.get("conversion")
        if shown is None and conv is not None and kind != "always-valid":
            shown = {
                "estimate": conv["difference"],
                "lower": conv["difference_lower"],
                "upper": conv["difference_upper"],
            }
        cuped = (comparison.get("cuped") or {}).get("conversion")
        for label, block in ((arm, shown), (_("%(arm)s, CUPED") % {"arm": arm}, cuped)):
            if block is None:
                continue
            intervals.append(
                charts.Interval(
                    label,
                    block["estimate"],
                    block["lower"],
                    block["upper"],
                    _("%(estimate)+.1f pp (%(lower)+.1f to %(upper)+.1f)")
                    % {
                        "estimate": block["estimate"] * 100,
                        "lower": block["lower"] * 100,
                        "upper": block["upper"] * 100,
                    },
                )
            )
        if cuped is not None:
            notes.append(
                _("%(arm)s: CUPED reduced the variance by %(reduction).0f%%")
                % {"arm": arm, "reduction": cuped["variance_reduction"] * 100}
            )
        elif (comparison.get("not_enough_data") or {}).get("cuped"):
            notes.append(_not_enough_note(arm, comparison, "cuped"))
    title = (
        _("Conversion uplift, always-valid interval (safe to check daily), unadjusted and CUPED")
        if kind == "always-valid"
        else _("Conversion uplift, fixed-horizon interval, unadjusted and CUPED")
    )
    return charts.interval_chart(
        title=title,
        intervals=intervals,
        axis_label=_("treated minus holdout, percentage points"),
        empty=_("No campaign with a holdout yet."),
        notes=notes,
    )


def _budget_chart(item: CampaignFigures, now: datetime) -> str:
    campaign = item.campaign
    zone = ZoneInfo(settings.TIME_ZONE)
    first = timezone.localtime(campaign.starts_at, zone).date()
    last = max(first, min(timezone.localtime(now, zone).date(), timezone.localtime(campaign.ends_at, zone).date()))
    points, total = [(0, Decimal("0"))], Decimal("0")
    spent_points, spent_total = [(0, Decimal("0"))], Decimal("0")
    for day, held, spent in item.spending:
        total += held
        spent_total += spent
        points.append((max((day - first).days, 0), total))
        spent_points.append((max((day - first).days, 0), spent_total))
    points.append((max((last - first).days, points[-1][0]), total))
    spent_points.append((points[-1][0], spent_total))
    span = points[-1][0]
    ticks = sorted({0: first, span // 2: first + timedelta(days=span // 2), span: first + timedelta(days=span)}.items())
    cap = campaign.budget
    return charts.line_chart(
        title=_("Budget held and spent vs cap (CNY)"),
        series=[
            charts.Series(_("held (open offers' face value, used offers' cost)"), points),
            charts.Series(_("spent"), spent_points, color=charts.COLORS["positive"], dashed=True),
        ],
        x_ticks=[(x, f"{day:%m-%d}") for x, day in ticks],
        y_label=_("CNY"),
        cap=cap,
        cap_label=_("cap %(cap)s") % {"cap": _money(cap)} if cap is not None else "",
        empty=_("No offers issued yet."),
    )


def _balance_chart(figures: DashboardFigures) -> str:
    bars = [charts.Bar(item.partner.name, item.amount, f"{item.amount:+,.2f}") for item in figures.balances]
    return charts.bar_chart(
        title=_("Settlement balance per partner, %(period)s (CNY; positive: is owed)")
        % {"period": f"{figures.period:%Y-%m}"},
        bars=bars,
        signed=True,
        empty=_("No deals to settle this month."),
    )


def _money_lines(report: dict) -> list[str]:
    """Say what a campaign reserved, spent and released, and per treated arm its margin and ROI on spent."""
    cost = report.get("cost")
    if not cost:
        return []
    lines = [
        _(
            "Reserved %(reserved)s CNY, spent %(spent)s CNY, released %(released)s CNY, "
            "still outstanding %(outstanding)s CNY"
        )
        % {name: _money(Decimal(cost[name])) for name in ("reserved", "spent", "released", "outstanding")}
    ]
    for comparison in (report.get("uplift") or {}).get("comparisons", []):
        spend = comparison.get("spend_return")
        if spend is None:
            continue
        values = {
            "arm": comparison["arm"],
            "margin": _money(Decimal(spend["incremental_margin"])),
            "low": _money(Decimal(spend["incremental_margin_lower"])),
            "high": _money(Decimal(spend["incremental_margin_upper"])),
            "roi": spend["roi"],
            "roi_low": spend["roi_lower"],
            "roi_high": spend["roi_upper"],
        }
        if spend["roi"] is None:
            lines.append(_("%(arm)s: incremental margin %(margin)s CNY (%(low)s to %(high)s); nothing spent") % values)
        else:
            lines.append(
                _(
                    "%(arm)s: incremental margin %(margin)s CNY (%(low)s to %(high)s), "
                    "ROI on spent %(roi)s (%(roi_low)s to %(roi_high)s)"
                )
                % values
            )
    return lines


def dashboard_view(request):
    """Show the dashboard for a month (``?period=YYYY-MM``, by default the last finished month)."""
    if not request.user.has_perm("campaigns.view_campaign"):
        raise PermissionDenied
    now = timezone.now()
    period: date = period_last_closed(zone=ZoneInfo(settings.TIME_ZONE), now=now)
    if request.GET.get("period"):
        try:
            period = period_parse(request.GET["period"])
        except ApplicationError as error:
            messages.error(request, error.message)
    figures = dashboard_figures(period=period, now=now)
    panels = [
        {
            "campaign": item.campaign,
            "warnings": item.report.get("warnings", []),
            "money": _money_lines(item.report),
            "charts": [
                mark_safe(chart)
                for chart in (
                    _funnel_chart(item),
                    _retention_chart(item),
                    _budget_chart(item, now),
                    _experiment_chart(item),
                )
            ],
        }
        for item in figures.campaigns
    ]
    context = {
        **admin.site.each_context(request),
        "title": _("Dashboard"),
        "period": f"{period:%Y-%m}",
        "cards": _cards(figures),
        "overview_charts": [
            mark_safe(chart) for chart in (*_uplift_charts(figures), _balance_chart(figures), *_qini_charts())
        ],
        "panels": panels,
        "as_of": timezone.localtime(now),
    }
    return TemplateResponse(request, "admin/campaigns/dashboard.html", context)
