"""The numbers behind the admin dashboard, in a number of queries that does not grow with the data.

Campaign figures come from ``campaign_report``, the one report implementation, for the
campaigns that matter now: every campaign running, then those that ended in the last
``RECENT_DAYS`` (ranked by what they earned net of what they spent), at most ``MAX_REPORTS`` in all;
campaigns not yet begun are listed without a report. Each group has its own totals, so a
figure never mixes running and finished campaigns. Settlement comes from ``settlements_get``
(issued statements where there are, drafts computed now elsewhere), a few queries for all
deals, as flows each way between two partners.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import BigIntegerField, Case, F, Q, Sum, When
from django.db.models.functions import Cast, Round, TruncDate
from django.utils import timezone

from crossmkt_site.money import ZERO

from ..models import Campaign, Deal, Direction, Offer, Partner, SettlementLine
from ..reports.campaign_report import campaign_report
from ..selectors.settlement import SettlementSheet, period_bounds, settlements_get

# Each report is a handful of queries and a 2,000-resample bootstrap per treated arm: a bounded number keeps the
# page quick (the demo's seven campaigns take about a second each on SQLite).
MAX_REPORTS = 12
# Campaigns that ended this many days ago or less are still worth a manager's look; older ones are in the list.
RECENT_DAYS = 90
RATIO = Decimal("0.0001")


@dataclass
class CampaignFigures:
    """A campaign: its report (as the API returns it), by day of issue budget held and spent, and what it earned."""

    campaign: Campaign
    report: dict
    spending: list[tuple[date, Decimal, Decimal]] = field(default_factory=list)
    # Over its treated arms, as the report measures them: incremental margin, spent, ROI on spent.
    incremental_margin: Decimal | None = None
    spent: Decimal = ZERO
    roi: Decimal | None = None

    @property
    def net_return(self) -> Decimal | None:
        """Return what the campaign earned net of what it spent (incremental margin less spent), if measured."""
        return None if self.incremental_margin is None else self.incremental_margin - self.spent


@dataclass
class ScopeFigures:
    """Totals over one group of campaigns (running now, or ended recently): every figure of a card row."""

    campaigns: int
    offers_issued: int
    offers_redeemed: int
    reserved: Decimal
    spent: Decimal
    released: Decimal
    budget_held: Decimal
    budget_cap: Decimal
    # Over the group's treated arms with a holdout to measure against; None when none has one.
    incremental_margin: Decimal | None
    measured_spent: Decimal
    roi: Decimal | None
    measured: int
    compared: bool


@dataclass
class SettlementFlow:
    """What one partner owes another for the month, over every deal between them, by what it is for."""

    payer: Partner
    payee: Partner
    grants: Decimal
    revenue_share: Decimal
    other: Decimal

    @property
    def amount(self) -> Decimal:
        return self.grants + self.revenue_share + self.other


@dataclass
class PartnerBalance:
    """What a partner is owed (positive) or owes (negative) over all its deals for the month."""

    partner: Partner
    amount: Decimal


@dataclass
class DashboardFigures:
    now: datetime
    period: date
    # Running now, newest first; ended since ``since``, the highest net return first (unmeasured last).
    running: list[CampaignFigures]
    ended: list[CampaignFigures]
    # Not begun yet (listed, nothing to report), and campaigns in scope left out beyond MAX_REPORTS.
    scheduled: list[Campaign]
    left_out: int
    since: date
    running_totals: ScopeFigures
    ended_totals: ScopeFigures
    balances: list[PartnerBalance]
    flows: list[SettlementFlow]
    statements_issued: int
    statements_draft: int


def _fen(expression) -> Sum:
    """Sum money in whole fen, so SQLite's binary floats cannot lose a fen."""
    return Sum(Cast(Round(expression * 100), BigIntegerField()))


# What an offer holds of its campaign's budget (campaigns.services.offer_costs.held), as SQL.
HELD = Case(
    When(status__in=Offer.OPEN_STATUSES, then=F("cost")),
    When(spent__lt=F("cost"), then=F("spent")),
    default=F("cost"),
)


def _spending_by_day(campaigns: list[Campaign], zone: ZoneInfo) -> dict[int, list[tuple[date, Decimal, Decimal]]]:
    """Return per campaign, by day of issue, what its offers hold of the budget and what they spent, in one query."""
    rows = (
        Offer.objects.filter(campaign__in=campaigns)
        .annotate(day=TruncDate("issued_at", tzinfo=zone))
        .values_list("campaign_id", "day")
        .annotate(held=_fen(HELD), spent_fen=_fen(F("spent")))
        .order_by("campaign_id", "day")
    )
    by_campaign: dict[int, list[tuple[date, Decimal, Decimal]]] = defaultdict(list)
    for campaign_id, day, held, spent in rows:
        by_campaign[campaign_id].append((day, Decimal(int(held or 0)) / 100, Decimal(int(spent or 0)) / 100))
    return by_campaign


def _return_of(reports: list[dict]) -> tuple[Decimal | None, Decimal, Decimal | None]:
    """Add up incremental margin and spend over the treated arms of the reports; ROI on spent is of the sums."""
    returns = [
        comparison.get("spend_return")
        for report in reports
        for comparison in (report.get("uplift") or {}).get("comparisons", [])
        if comparison.get("spend_return") is not None  # an arm too small to measure: the report says why
    ]
    if not returns:
        return None, ZERO, None
    incremental = sum((Decimal(item["incremental_margin"]) for item in returns), ZERO)
    spent = sum((Decimal(item["spent"]) for item in returns), ZERO)
    roi = ((incremental - spent) / spent).quantize(RATIO) if spent > 0 else None
    return incremental, spent, roi


def _totals(items: list[CampaignFigures]) -> ScopeFigures:
    """Add up one group's offers, money and effect from its campaigns' reports."""
    reports = [item.report for item in items]
    incremental, spent, roi = _return_of(reports)
    costs = [report.get("cost") or {} for report in reports]
    capped = [item.campaign for item in items if item.campaign.budget is not None]
    return ScopeFigures(
        campaigns=len(items),
        offers_issued=sum(report["funnel"].get("issued", 0) for report in reports),
        offers_redeemed=sum(report["funnel"].get("redeemed", 0) for report in reports),
        reserved=sum((Decimal(cost.get("reserved", "0")) for cost in costs), ZERO),
        spent=sum((Decimal(cost.get("spent", "0")) for cost in costs), ZERO),
        released=sum((Decimal(cost.get("released", "0")) for cost in costs), ZERO),
        budget_held=sum((campaign.spent for campaign in capped), ZERO).quantize(Decimal("0.01")),
        budget_cap=sum((campaign.budget or ZERO for campaign in capped), ZERO).quantize(Decimal("0.01")),
        incremental_margin=incremental,
        measured_spent=spent,
        roi=roi,
        measured=sum(item.incremental_margin is not None for item in items),
        compared=any((report.get("uplift") or {}).get("comparisons") for report in reports),
    )


def _figures(campaign: Campaign, now: datetime, spending: list) -> CampaignFigures:
    report = campaign_report(campaign=campaign, now=now).to_dict()
    incremental, spent, roi = _return_of([report])
    return CampaignFigures(campaign, report, spending, incremental, spent, roi)


def partner_balances(sheets: list[SettlementSheet]) -> list[PartnerBalance]:
    """Net every sheet's balance into one amount per partner: positive is owed to it, negative owed by it."""
    totals: dict[int, Decimal] = defaultdict(Decimal)
    partners: dict[int, Partner] = {}
    for sheet in sheets:
        statement = sheet.statement
        signed = sheet.signed_balance
        totals[statement.target_partner_id] += signed
        totals[statement.source_partner_id] -= signed
        partners[statement.target_partner_id] = statement.target_partner
        partners[statement.source_partner_id] = statement.source_partner
    return sorted(
        (PartnerBalance(partners[pk], amount) for pk, amount in totals.items()),
        key=lambda balance: (-balance.amount, balance.partner.slug),
    )


def settlement_flows(sheets: list[SettlementSheet]) -> list[SettlementFlow]:
    """Add up what each partner owes each other partner over every sheet's lines, both directions kept apart.

    A deal's source partner owes its target the grants' settlement price; the target owes the
    source the revenue share; corrections go the way their line says. Largest flow first.
    """
    flows: dict[tuple[int, int], SettlementFlow] = {}
    for sheet in sheets:
        statement = sheet.statement
        for line in sheet.lines:
            forward = line.direction == Direction.SOURCE_TO_TARGET
            payer, payee = (
                (statement.source_partner, statement.target_partner)
                if forward
                else (statement.target_partner, statement.source_partner)
            )
            flow = flows.setdefault(
                (payer.pk, payee.pk),
                SettlementFlow(payer=payer, payee=payee, grants=ZERO, revenue_share=ZERO, other=ZERO),
            )
            if line.kind == SettlementLine.Kind.GRANTS:
                flow.grants += line.amount
            elif line.kind == SettlementLine.Kind.REVENUE_SHARE:
                flow.revenue_share += line.amount
            else:
                flow.other += line.amount
    return sorted(
        (flow for flow in flows.values() if flow.amount),
        key=lambda flow: (-flow.amount, flow.payer.slug, flow.payee.slug),
    )


def dashboard_figures(*, period: date, now: datetime | None = None, max_reports: int = MAX_REPORTS) -> DashboardFigures:
    """Gather the campaigns that matter now with their reports and group totals, and the month's settlement."""
    now = now or timezone.now()
    zone = ZoneInfo(settings.TIME_ZONE)
    since = now - timedelta(days=RECENT_DAYS)
    begun = Campaign.objects.exclude(status=Campaign.Status.DRAFT).filter(starts_at__lte=now)
    running_ids = set(Campaign.objects.running_at(now).values_list("pk", flat=True))
    # Running first (newest first), then what ended (or was stopped) recently, the latest ending first.
    candidates = sorted(
        begun.filter(Q(pk__in=running_ids) | Q(ends_at__gte=since)),
        key=lambda campaign: (
            campaign.pk not in running_ids,
            -(campaign.starts_at if campaign.pk in running_ids else campaign.ends_at).timestamp(),
            -campaign.pk,
        ),
    )
    reported, left_out = candidates[:max_reports], max(len(candidates) - max_reports, 0)
    spending = _spending_by_day(reported, zone)
    figures = [_figures(campaign, now, spending.get(campaign.pk, [])) for campaign in reported]
    running = [item for item in figures if item.campaign.pk in running_ids]
    # What ended is ranked by what it earned net of what it spent: a campaign that bought its margin at a loss
    # ranks below one that earned less but spent less; unmeasured ones come last.
    ended = sorted(
        (item for item in figures if item.campaign.pk not in running_ids),
        key=lambda item: (item.net_return is None, -(item.net_return or ZERO), item.campaign.slug),
    )
    scheduled = list(
        Campaign.objects.exclude(status__in=[Campaign.Status.DRAFT, Campaign.Status.ENDED])
        .filter(starts_at__gt=now)
        .order_by("starts_at", "pk")
    )
    # Deals begun by the end of the month (a day past it in UTC covers every zone); deals that ended still
    # settle the revenue share of the users they granted.
    month_end = period_bounds(period, ZoneInfo("UTC"))[1] + timedelta(days=1)
    deals = list(
        Deal.objects.exclude(status=Deal.Status.DRAFT)
        .filter(starts_at__lt=month_end)
        .select_related("source_partner", "target_partner")
        .order_by("pk")
    )
    sheets = list(settlements_get(deals=deals, period=period, now=now).values())
    return DashboardFigures(
        now=now,
        period=period,
        running=running,
        ended=ended,
        scheduled=scheduled,
        left_out=left_out,
        since=timezone.localtime(since, zone).date(),
        running_totals=_totals(running),
        ended_totals=_totals(ended),
        balances=partner_balances(sheets),
        flows=settlement_flows(sheets),
        statements_issued=sum(not sheet.is_draft for sheet in sheets),
        statements_draft=sum(sheet.is_draft for sheet in sheets),
    )
