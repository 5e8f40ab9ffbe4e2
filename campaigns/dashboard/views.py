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
from analytics.stats.experiments import ALWAYS_VALID, FIXED_HORIZON
from crossmkt_site.errors import ApplicationError

from ..models import Campaign
from ..selectors.settlement import period_last_closed, period_parse
from . import charts
from .selectors import RECENT_DAYS, CampaignFigures, DashboardFigures, ScopeFigures, dashboard_figures

HOLDOUT = "holdout"
# Ended campaigns drawn in full below the running ones; the others are a line of the table each.
ENDED_DETAILED = 3


def _money(amount: Decimal | None) -> str:
    return "-" if amount is None else f"{amount:,.2f}"


def _rate(part: int | Decimal, whole: int | Decimal) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _effect_detail(totals: ScopeFigures) -> str:
    """Say what the incremental margin of a group rests on, or why there is none."""
    if totals.incremental_margin is None and totals.compared:
        return _("not enough data: the arms need at least two users each")
    if totals.incremental_margin is None:
        return _("no campaign with a holdout to measure against")
    values = {
        "roi": totals.roi,
        "spent": _money(totals.measured_spent),
        "measured": totals.measured,
        "campaigns": totals.campaigns,
    }
    if totals.roi is None:
        return _("nothing spent yet, so no ROI; measured in %(measured)d of %(campaigns)d campaigns") % values
    return _("ROI on spent %(roi)s (%(spent)s CNY spent); measured in %(measured)d of %(campaigns)d campaigns") % values


def _group_cards(key: str, totals: ScopeFigures, *, running: bool) -> list[dict]:
    """Return one group's cards: campaigns, offers, money and effect, all over the same campaigns."""
    issued, redeemed = totals.offers_issued, totals.offers_redeemed
    money = {
        "reserved": _money(totals.reserved),
        "spent": _money(totals.spent),
        "released": _money(totals.released),
    }
    if running:
        budget = {
            "key": f"{key}-budget",
            "label": _("Budget held / cap (CNY)"),
            "value": f"{_money(totals.budget_held)} / {_money(totals.budget_cap)}",
            "detail": _("%(share)s held; reserved %(reserved)s, spent %(spent)s, released %(released)s")
            % {"share": _rate(totals.budget_held, totals.budget_cap), **money},
        }
    else:
        budget = {
            "key": f"{key}-budget",
            "label": _("Spent (CNY)"),
            "value": money["spent"],
            "detail": _("reserved %(reserved)s, released %(released)s") % money,
        }
    return [
        {
            "key": f"{key}-campaigns",
            "label": _("Campaigns"),
            "value": f"{totals.campaigns:,}",
            "detail": _("with a holdout measured: %(measured)d") % {"measured": totals.measured},
        },
        {
            "key": f"{key}-offers",
            "label": _("Offers issued / redeemed"),
            "value": f"{issued:,} / {redeemed:,}",
            "detail": _("redemption rate %(rate)s") % {"rate": _rate(redeemed, issued)},
        },
        budget,
        {
            "key": f"{key}-effect",
            "label": _("Incremental margin (CNY)"),
            "value": _money(totals.incremental_margin),
            "detail": _effect_detail(totals),
        },
    ]


def _settlement_lines(figures: DashboardFigures) -> tuple[list[str], list[str]]:
    """Say who owes whom for the month, each direction on its own line, and each pair's net."""
    lines, nets = [], []
    done: set[tuple[int, int]] = set()
    by_pair = {(flow.payer.pk, flow.payee.pk): flow for flow in figures.flows}
    for flow in figures.flows:
        pair = tuple(sorted((flow.payer.pk, flow.payee.pk)))
        if pair in done:
            continue
        done.add(pair)  # type: ignore[arg-type]
        back = by_pair.get((flow.payee.pk, flow.payer.pk))
        for item in (flow, back):
            if item is None:
                continue
            parts = []
            if item.grants:
                parts.append(_("grants %(amount)s") % {"amount": _money(item.grants)})
            if item.revenue_share:
                parts.append(_("revenue share %(amount)s") % {"amount": _money(item.revenue_share)})
            if item.other:
                parts.append(_("corrections %(amount)s") % {"amount": _money(item.other)})
            lines.append(
                _("%(payer)s owes %(payee)s %(amount)s (%(what)s)")
                % {
                    "payer": item.payer.name,
                    "payee": item.payee.name,
                    "amount": _money(item.amount),
                    "what": ", ".join(parts),
                }
            )
        net = flow.amount - (back.amount if back else 0)
        if back is not None and net:
            payer, payee = (flow.payer, flow.payee) if net > 0 else (flow.payee, flow.payer)
            nets.append(
                _("net: %(payer)s pays %(payee)s %(amount)s")
                % {"payer": payer.name, "payee": payee.name, "amount": _money(abs(net))}
            )
    return lines, nets


def _card_rows(figures: DashboardFigures) -> list[dict]:
    """Return the KPI cards in rows, each row over one stated scope: running now, ended recently, the month."""
    lines, nets = _settlement_lines(figures)
    period = f"{figures.period:%Y-%m}"
    return [
        {
            "key": "running",
            "scope": _("Running now: every campaign whose window is open (%(count)d)")
            % {"count": figures.running_totals.campaigns},
            "cards": _group_cards("running", figures.running_totals, running=True),
        },
        {
            "key": "ended",
            "scope": _(
                "Ended since %(since)s (the last %(days)d days): every campaign that ended or stopped (%(count)d)"
            )
            % {"since": f"{figures.since:%Y-%m-%d}", "days": RECENT_DAYS, "count": figures.ended_totals.campaigns},
            "cards": _group_cards("ended", figures.ended_totals, running=False),
        },
        {
            "key": "settlement",
            "scope": _("Settlement month %(period)s: every deal") % {"period": period},
            "cards": [
                {
                    "key": "settlement",
                    "label": _("Who owes whom, %(period)s (CNY)") % {"period": period},
                    "value": "" if lines else _("nothing owed either way"),
                    "lines": lines,
                    "detail": "; ".join(nets),
                    "wide": True,
                },
                {
                    "key": "statements",
                    "label": _("Statements, %(period)s") % {"period": period},
                    "value": f"{figures.statements_issued} / {figures.statements_issued + figures.statements_draft}",
                    "detail": _("statements issued: %(issued)d; drafts computed now: %(drafts)d")
                    % {"issued": figures.statements_issued, "drafts": figures.statements_draft},
                },
            ],
        },
    ]


def _comparison_label(item: CampaignFigures, arm: str, arms: int) -> str:
    return item.campaign.name if arms == 1 else f"{item.campaign.name} · {arm}"


def _not_enough_note(label: str, comparison: dict, statistic: str) -> str:
    return _("%(label)s: not enough data (%(reason)s)") % {
        "label": label,
        "reason": (comparison.get("not_enough_data") or {}).get(statistic, "-"),
    }


def _shown_intervals(item: CampaignFigures, comparison: dict) -> tuple[str, dict | None, dict | None]:
    """Return the interval kind the campaign's report shows and, in it, the conversion and revenue blocks.

    While a campaign runs (up to its end plus its conversion window) the report shows the
    always-valid (mSPRT) interval, safe to look at every day; afterwards the fixed-horizon one
    (Newcombe for conversion, Welch for revenue per user). Each block: estimate, lower, upper.
    """
    kind = (item.report.get("intervals") or {}).get("kind") or FIXED_HORIZON
    if kind == ALWAYS_VALID:
        valid = comparison.get("always_valid") or {}
        return kind, valid.get("conversion"), valid.get("revenue")
    conversion, revenue = comparison.get("conversion"), comparison.get("revenue")
    return (
        kind,
        None
        if conversion is None
        else {
            "estimate": conversion["difference"],
            "lower": conversion["difference_lower"],
            "upper": conversion["difference_upper"],
        },
        None
        if revenue is None
        else {"estimate": revenue["difference"], "lower": revenue["welch_lower"], "upper": revenue["welch_upper"]},
    )


def _confidence(figures: DashboardFigures) -> float:
    """Return the confidence level the reports' intervals are at (every report uses the same)."""
    return next(
        (
            item.report["uplift"]["confidence"]
            for item in (*figures.running, *figures.ended)
            if item.report.get("uplift")
        ),
        0.95,
    )


def _kind_name(kind: str) -> str:
    return _("always-valid") if kind == ALWAYS_VALID else _("fixed-horizon")


def _uplift_charts(figures: DashboardFigures) -> list[str]:
    """Draw conversion and revenue uplift per treated arm with the interval its report shows, and say which kind.

    An arm too small for a statistic is a note instead.
    """
    conversion, revenue = [], []
    conversion_notes, revenue_notes = [], []
    kinds = set()
    for item in (*figures.running, *figures.ended):
        comparisons = (item.report.get("uplift") or {}).get("comparisons", [])
        for comparison in comparisons:
            label = _comparison_label(item, comparison["arm"], len(comparisons))
            kind, conv, money = _shown_intervals(item, comparison)
            kinds.add(kind)
            name = _kind_name(kind)
            if conv is None:
                statistic = "always_valid_conversion" if kind == ALWAYS_VALID else "conversion"
                conversion_notes.append(_not_enough_note(label, comparison, statistic))
            else:
                conversion.append(
                    charts.Interval(
                        label,
                        conv["estimate"],
                        conv["lower"],
                        conv["upper"],
                        _("%(estimate)+.1f pp (%(lower)+.1f to %(upper)+.1f), %(kind)s")
                        % {
                            "estimate": conv["estimate"] * 100,
                            "lower": conv["lower"] * 100,
                            "upper": conv["upper"] * 100,
                            "kind": name,
                        },
                    )
                )
            if money is None:
                statistic = "always_valid_revenue" if kind == ALWAYS_VALID else "revenue"
                revenue_notes.append(_not_enough_note(label, comparison, statistic))
                continue
            revenue.append(
                charts.Interval(
                    label,
                    Decimal(money["estimate"]),
                    Decimal(money["lower"]),
                    Decimal(money["upper"]),
                    _("%(estimate)s CNY (%(lower)s to %(upper)s), %(kind)s")
                    % {"estimate": money["estimate"], "lower": money["lower"], "upper": money["upper"], "kind": name},
                )
            )
    no_holdout = _("No campaign with a holdout yet.")
    level = {"level": f"{_confidence(figures):.0%}"}
    if kinds == {ALWAYS_VALID}:
        which = _("%(level)s always-valid intervals (mSPRT)") % level
    elif kinds == {FIXED_HORIZON}:
        which = _("%(level)s fixed-horizon intervals") % level
    else:
        which = _("%(level)s intervals, kind per row") % level
    kinds_note = _(
        "Each row names its interval, as its campaign's report shows it: always-valid (mSPRT, safe to check "
        "daily) until the campaign's last conversions are in (its end plus its conversion window), "
        "fixed-horizon after."
    )
    for drawn, notes in ((conversion, conversion_notes), (revenue, revenue_notes)):
        if drawn:
            notes.append(kinds_note)
    return [
        charts.interval_chart(
            title=_("Conversion uplift over holdout, %(which)s") % {"which": which},
            intervals=conversion,
            axis_label=_("treated minus holdout, percentage points"),
            empty=no_holdout,
            notes=conversion_notes,
        ),
        charts.interval_chart(
            title=_("Revenue per user uplift (CNY), %(which)s") % {"which": which},
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
    """Draw the treated users' funnel, each step a subset of the one before, and say what it cannot show."""
    funnel = item.report["funnel"]
    steps = [
        ("treated", _("treated users")),
        ("users_issued", _("got an offer")),
        ("users_redeemed", _("used an offer")),
        ("users_redeemed_converted", _("used one and bought")),
    ]
    bars = [charts.Bar(label, funnel[key], f"{funnel[key]:,}") for key, label in steps if key in funnel]
    notes = [
        _(
            "Offers: %(issued)s issued, %(redeemed)s redeemed. Treated users who bought a promoted course, "
            "with the offer or without: %(converted)s; held out: %(holdout)s users."
        )
        % {name: f"{funnel.get(name, 0):,}" for name in ("issued", "redeemed", "converted", "holdout")},
        _(
            "No delivered step: partners are told of the offers and show them to their users, and none "
            "reports back that a user saw one."
        ),
    ]
    return charts.bar_chart(
        title=_("Funnel of treated users"),
        bars=bars if funnel.get("eligible") else [],
        empty=_("No users assigned yet."),
        notes=notes,
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
                _("%(arm)s: CUPED reduced the variance by %(reduction).1f%%")
                # A reduction that rounds to nothing reads 0.0%, not -0.0%, as in the report's text.
                % {"arm": arm, "reduction": round(cuped["variance_reduction"] * 100, 1) + 0.0}
            )
        elif (comparison.get("not_enough_data") or {}).get("cuped"):
            notes.append(_not_enough_note(arm, comparison, "cuped"))
    if kind == ALWAYS_VALID:
        title = _("Conversion uplift, always-valid interval, unadjusted and CUPED")
        notes.append(_("Always-valid (mSPRT): safe to check daily while the campaign runs."))
    else:
        title = _("Conversion uplift, fixed-horizon interval, unadjusted and CUPED")
        notes.append(_("Fixed-horizon: valid read once, after the campaign's last conversions are in."))
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
            "kind": _kind_name(spend.get("interval_kind") or FIXED_HORIZON),
        }
        if spend["roi"] is None:
            lines.append(
                _("%(arm)s: incremental margin %(margin)s CNY (%(low)s to %(high)s, %(kind)s); nothing spent") % values
            )
        else:
            lines.append(
                _(
                    "%(arm)s: incremental margin %(margin)s CNY (%(low)s to %(high)s), "
                    "ROI on spent %(roi)s (%(roi_low)s to %(roi_high)s), %(kind)s intervals"
                )
                % values
            )
    return lines


def _interval_text(low: str, high: str) -> str:
    return _("%(low)s to %(high)s") % {"low": low, "high": high}


def _window(campaign: Campaign) -> str:
    """Say a campaign's window by its first and last day in its own zone (it ends at the end of its last day)."""
    zone = ZoneInfo(str(campaign.timezone))
    last = timezone.localtime(campaign.ends_at - timedelta(microseconds=1), zone)
    return _interval_text(f"{timezone.localtime(campaign.starts_at, zone):%Y-%m-%d}", f"{last:%Y-%m-%d}")


def _table_row(item: CampaignFigures, group: str, detailed: bool) -> dict:
    """One campaign's line in the list: what it is, what it reached, spent and earned."""
    campaign, report = item.campaign, item.report
    returns = [
        comparison["spend_return"]
        for comparison in (report.get("uplift") or {}).get("comparisons", [])
        if comparison.get("spend_return") is not None
    ]
    margin_range = roi_range = ""
    if len(returns) == 1:
        only = returns[0]
        margin_range = _interval_text(
            _money(Decimal(only["incremental_margin_lower"])), _money(Decimal(only["incremental_margin_upper"]))
        )
        if only["roi"] is not None:
            roi_range = _interval_text(only["roi_lower"], only["roi_upper"])
    return {
        "campaign": campaign,
        "group": group,
        "detailed": detailed,
        "window": _window(campaign),
        "treated": f"{report['funnel'].get('treated', 0):,}",
        "offers": f"{report['funnel'].get('issued', 0):,} / {report['funnel'].get('redeemed', 0):,}",
        "spent": _money(Decimal((report.get("cost") or {}).get("spent", "0"))),
        "margin": _money(item.incremental_margin),
        "net": _money(item.net_return),
        "losing": item.net_return is not None and item.net_return < 0,
        "margin_range": margin_range,
        "roi": "-" if item.roi is None else str(item.roi),
        "roi_range": roi_range,
    }


def _stopped(campaign: Campaign) -> str:
    """Name the state of a campaign that is not running: paused (its window may still be open) or ended."""
    return _("paused") if campaign.status == Campaign.Status.PAUSED else _("ended")


def _ended_detailed(figures: DashboardFigures) -> tuple[list[CampaignFigures], CampaignFigures | None]:
    """Return the ended campaigns drawn in full: the best few by net return, and the one that lost most, if any did."""
    best = figures.ended[:ENDED_DETAILED]
    worst = figures.ended[-1] if len(figures.ended) > ENDED_DETAILED else None
    if worst is None or worst.net_return is None or worst.net_return >= 0:
        worst = None
    return best, worst


def _selection_text(figures: DashboardFigures, best: list[CampaignFigures], worst: CampaignFigures | None) -> str:
    """Say which campaigns the page details and lists, so nobody takes them for all of them."""
    text = _(
        "Detailed below: every running campaign (%(running)d), newest first, then the %(shown)d of the "
        "%(ended)d campaigns ended since %(since)s that earned the most net of what they spent (incremental "
        "margin less spent)."
    ) % {
        "running": len(figures.running),
        "shown": len(best),
        "ended": len(figures.ended),
        "since": f"{figures.since:%Y-%m-%d}",
    }
    if worst is not None:
        text += " " + _("Then the one that lost the most.")
    text += " " + _("The table lists them all, ranked the same way, with the campaigns scheduled to start.")
    if figures.left_out:
        text += " " + _("%(count)d more campaigns in that time are left out (the oldest ending first).") % {
            "count": figures.left_out
        }
    return text


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
    best, worst = _ended_detailed(figures)
    shown_ended = [*best, *([worst] if worst is not None else [])]
    rank = {id(item): index for index, item in enumerate(figures.ended, start=1)}
    detailed = [(item, _("running")) for item in figures.running] + [
        (
            item,
            _("%(state)s, #%(rank)d of %(count)d by net return")
            % {"state": _stopped(item.campaign), "rank": rank[id(item)], "count": len(figures.ended)},
        )
        for item in shown_ended
    ]
    panels = [
        {
            "campaign": item.campaign,
            "group": group,
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
        for item, group in detailed
    ]
    rows = [_table_row(item, _("running"), True) for item in figures.running]
    detailed_ids = {id(item) for item in shown_ended}
    rows += [_table_row(item, _stopped(item.campaign), id(item) in detailed_ids) for item in figures.ended]
    context = {
        **admin.site.each_context(request),
        "title": _("Dashboard"),
        "period": f"{period:%Y-%m}",
        "card_rows": _card_rows(figures),
        "selection": _selection_text(figures, best, worst),
        "rows": rows,
        "table_help": _(
            "Incremental margin: treated minus holdout margin, scaled to the treated users, with its %(level)s "
            "interval below (one treated arm only): always-valid while the campaign runs, fixed-horizon after, as its "
            "report shows it; ROI on spent = (incremental margin - spent) / spent."
        )
        % {"level": f"{_confidence(figures):.0%}"},
        "scheduled": [{"campaign": campaign, "window": _window(campaign)} for campaign in figures.scheduled],
        "overview_charts": [
            mark_safe(chart) for chart in (*_uplift_charts(figures), _balance_chart(figures), *_qini_charts())
        ],
        "panels": panels,
        "as_of": timezone.localtime(now),
    }
    return TemplateResponse(request, "admin/campaigns/dashboard.html", context)
