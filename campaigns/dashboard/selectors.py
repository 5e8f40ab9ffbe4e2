"""The numbers behind the admin dashboard, in a number of queries that does not grow with the data.

Campaign figures come from ``campaign_report``, the one report implementation, for the
latest few campaigns only; settlement balances come from ``settlements_get`` (issued
statements where there are, drafts computed now elsewhere), a few queries for all deals.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import BigIntegerField, Case, Count, DecimalField, F, Q, Sum, Value, When
from django.db.models.functions import Cast, Round, TruncDate
from django.utils import timezone

from crossmkt_site.money import ZERO

from ..models import Campaign, Deal, Offer, Partner
from ..reports.campaign_report import campaign_report
from ..selectors.settlement import SettlementSheet, period_bounds, settlements_get

# Each report is a handful of queries and a 2,000-resample bootstrap per treated arm: a few keep the page quick.
LATEST_CAMPAIGNS = 4
RATIO = Decimal("0.0001")


@dataclass
class CampaignFigures:
    """One of the latest campaigns: its report (as the API returns it) and, by day of issue, budget held and spent."""

    campaign: Campaign
    report: dict
    spending: list[tuple[date, Decimal, Decimal]] = field(default_factory=list)


@dataclass
class PartnerBalance:
    """What a partner is owed (positive) or owes (negative) over all its deals for the month."""

    partner: Partner
    amount: Decimal


@dataclass
class DashboardFigures:
    now: datetime
    period: date
    active_campaigns: int
    offers_issued: int
    offers_redeemed: int
    budget_spent: Decimal
    budget_cap: Decimal
    campaigns: list[CampaignFigures]
    # Over the latest campaigns' treated arms: incremental margin, what they spent, and ROI on it.
    incremental_margin: Decimal | None
    campaign_spent: Decimal
    roi: Decimal | None
    # Of the running campaigns' offers: face value reserved, spent, released.
    running_costs: dict[str, Decimal]
    balances: list[PartnerBalance]
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


def _running_costs(running) -> dict[str, Decimal]:
    """Return what the running campaigns' offers reserved, spent and gave back, in CNY."""
    released = Case(
        When(status__in=Offer.OPEN_STATUSES, then=Value(0)),
        When(spent__lt=F("cost"), then=F("cost") - F("spent")),
        default=Value(0),
        output_field=DecimalField(max_digits=14, decimal_places=2),
    )
    totals = Offer.objects.filter(campaign__in=running).aggregate(
        reserved_fen=_fen(F("cost")), spent_fen=_fen(F("spent")), released_fen=_fen(released)
    )
    return {name.removesuffix("_fen"): Decimal(int(fen or 0)) / 100 for name, fen in totals.items()}


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


def dashboard_figures(*, period: date, now: datetime | None = None, latest: int = LATEST_CAMPAIGNS) -> DashboardFigures:
    """Gather the dashboard's KPIs, the latest campaigns' reports and the month's settlement balances."""
    now = now or timezone.now()
    offers = Offer.objects.aggregate(issued=Count("pk"), redeemed=Count("pk", filter=Q(status=Offer.Status.REDEEMED)))
    running = Campaign.objects.running_at(now)
    budget = running.filter(budget__isnull=False).aggregate(spent=Sum("spent"), cap=Sum("budget"))
    campaigns = list(Campaign.objects.exclude(status=Campaign.Status.DRAFT).order_by("-starts_at", "-pk")[:latest])
    spending = _spending_by_day(campaigns, ZoneInfo(settings.TIME_ZONE))
    figures = [
        CampaignFigures(campaign, campaign_report(campaign=campaign, now=now).to_dict(), spending.get(campaign.pk, []))
        for campaign in campaigns
    ]
    incremental, cost, roi = _return_of([item.report for item in figures])
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
        active_campaigns=running.count(),
        offers_issued=offers["issued"],
        offers_redeemed=offers["redeemed"],
        budget_spent=(budget["spent"] or ZERO).quantize(Decimal("0.01")),
        budget_cap=(budget["cap"] or ZERO).quantize(Decimal("0.01")),
        campaigns=figures,
        incremental_margin=incremental,
        campaign_spent=cost,
        roi=roi,
        running_costs=_running_costs(running),
        balances=partner_balances(sheets),
        statements_issued=sum(not sheet.is_draft for sheet in sheets),
        statements_draft=sum(sheet.is_draft for sheet in sheets),
    )
