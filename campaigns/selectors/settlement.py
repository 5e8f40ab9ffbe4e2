"""Settlement between the two partners of a deal, one calendar month at a time: computed and read.

The arithmetic, per deal and month (the month read in the deal's time zone, so an event
at 23:59 Shanghai time on the 30th of November is November's for a deal in
Asia/Shanghai, although it is still the 30th in UTC a minute after 16:00):

* **Grants, source pays target.** Every grant whose triggering event falls in the month
  and that is *confirmed* (the target partner was told, so it owes the benefit) is
  billed at its settlement amount, the deal's ``settlement_price`` when the grant was
  reserved. Grants are counted per price, one line each, so ``quantity × unit amount``
  is exact: a count times an amount in fen. Reserved grants are not billed yet and
  compensated ones never are.
* **Revenue share, target pays source.** The revenue base is the sum of the amounts of
  the behaviour events the target partner recorded in the month from users with a
  confirmed grant of the deal, from the moment of their grant (its triggering event)
  on, whichever month they were granted in. The share owed is ``revenue_share × base``,
  applied once to the month's total and rounded half-up to the fen, so rounding costs
  at most half a fen per statement and never accumulates over events. Sums run in
  whole fen in the database (SQLite would otherwise add binary floats).
* **Net balance.** Grants minus revenue share; a positive difference is paid by the
  source partner, a negative one by the target partner.

Net redemptions of the deal's offers are shown for reference; campaign offers are paid
from the campaign's budget, not between the partners.

This module reads: it computes drafts and returns issued statements, storing nothing.
Issuing and correcting are ``campaigns.services.settlement``; rendering is
``campaigns.presenters.settlement``.
"""

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db import connection
from django.db.models import Count
from django.utils import timezone

from analytics.models import BehaviorEvent
from crossmkt_site.errors import ApplicationError
from crossmkt_site.money import ZERO, to_cny

from ..models import Deal, DealGrant, Direction, RedemptionEntry, SettlementLine, SettlementStatement

# Years outside 2000-2099 are certainly typing mistakes, and they keep every month's bounds representable.
PERIOD_PATTERN = r"^20[0-9]{2}-(0[1-9]|1[0-2])$"
PERIOD_HELP = "a calendar month as YYYY-MM, e.g. 2026-11 (2000-01 to 2099-12)"

Kind = SettlementLine.Kind


def period_parse(value: str, *, field: str = "period") -> date:
    """Return the first day of the month a ``YYYY-MM`` string names, or an error naming the field."""
    if not isinstance(value, str) or not re.fullmatch(PERIOD_PATTERN, value):
        raise ApplicationError(f"{field} must be {PERIOD_HELP}, got {value!r}", code="invalid", field=field)
    year, month = value.split("-")
    return date(int(year), int(month), 1)


def deal_zone(deal: Deal) -> ZoneInfo:
    """Return the deal's time zone, whether the field holds a zone or, on a fresh instance, its name."""
    return deal.timezone if isinstance(deal.timezone, ZoneInfo) else ZoneInfo(str(deal.timezone))


def period_bounds(period: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the month's first instant and the next month's first instant, both at midnight in the zone."""
    following = date(period.year + (period.month == 12), period.month % 12 + 1, 1)
    return (
        datetime(period.year, period.month, 1, tzinfo=zone),
        datetime(following.year, following.month, 1, tzinfo=zone),
    )


def period_last_closed(*, zone: ZoneInfo, now: datetime | None = None) -> date:
    """Return the latest month that has ended in the zone (last month, seen from now)."""
    local = timezone.localtime(now or timezone.now(), zone)
    return date(local.year - (local.month == 1), (local.month - 2) % 12 + 1, 1)


@dataclass
class SettlementFigures:
    """What one deal's month adds up to in the database right now."""

    grants: dict[Decimal, int] = field(default_factory=dict)
    revenue_base: Decimal = ZERO
    redemptions: int = 0


@dataclass(frozen=True)
class SettlementWindow:
    deal_id: int
    target_partner_id: int
    start: datetime
    end: datetime


def settlement_figures(windows: Sequence[SettlementWindow]) -> dict[int, SettlementFigures]:
    """Count confirmed grants, revenue of granted users and redemptions per deal, three queries per distinct window."""
    figures = {window.deal_id: SettlementFigures() for window in windows}
    by_window: dict[tuple[datetime, datetime], list[SettlementWindow]] = defaultdict(list)
    for window in windows:
        by_window[(window.start, window.end)].append(window)
    for (start, end), group in by_window.items():
        ids = [window.deal_id for window in group]
        grants = (
            DealGrant.objects.filter(
                deal_id__in=ids, status=DealGrant.Status.CONFIRMED, triggered_at__gte=start, triggered_at__lt=end
            )
            .values_list("deal_id", "amount")
            .annotate(count=Count("pk"))
            .order_by()
        )
        for deal_id, amount, count in grants:
            prices = figures[deal_id].grants
            prices[amount] = prices.get(amount, 0) + count
        targets = {window.deal_id: window.target_partner_id for window in group}
        for deal_id, partner_id, fen in _revenue_fen(ids, start, end):
            if targets[deal_id] == partner_id:
                figures[deal_id].revenue_base = (Decimal(int(fen)) / 100).quantize(Decimal("0.01"))
        redemptions = (
            RedemptionEntry.objects.filter(offer__deal_id__in=ids, created_at__gte=start, created_at__lt=end)
            .values_list("offer__deal_id", "kind")
            .annotate(count=Count("pk"))
            .order_by()
        )
        for deal_id, kind, count in redemptions:
            figures[deal_id].redemptions += count if kind == RedemptionEntry.Kind.REDEEM else -count
    return figures


def _revenue_fen(deal_ids: Sequence[int], start: datetime, end: datetime) -> list[tuple[int, int, int]]:
    """Return (deal, partner, fen) sums of granted users' spending in the window, from each user's grant on."""
    adapt = connection.ops.adapt_datetimefield_value
    sql = f"""
        SELECT g.deal_id, e.partner_id, SUM(CAST(ROUND(e.amount * 100) AS BIGINT))
        FROM {BehaviorEvent._meta.db_table} e
        JOIN {DealGrant._meta.db_table} g ON g.user_id = e.user_id
        WHERE g.deal_id IN ({", ".join(["%s"] * len(deal_ids))}) AND g.status = %s
          AND e.occurred_at >= %s AND e.occurred_at < %s AND e.occurred_at >= g.triggered_at AND e.amount > 0
        GROUP BY g.deal_id, e.partner_id
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [*deal_ids, DealGrant.Status.CONFIRMED, adapt(start), adapt(end)])
        return cursor.fetchall()


@dataclass(frozen=True)
class SettlementSheet:
    """A statement with its lines: a draft computed now (nothing stored), or an issued statement as stored."""

    statement: SettlementStatement
    lines: tuple[SettlementLine, ...]

    @property
    def is_draft(self) -> bool:
        return self.statement.status == SettlementStatement.Status.DRAFT

    @property
    def signed_balance(self) -> Decimal:
        """Return the balance with every correction, positive when the source partner pays."""
        return sum((_signed(line.amount, line.direction) for line in self.lines), ZERO)

    @property
    def balance(self) -> tuple[Decimal, str]:
        """Return the balance with every correction as (amount, direction)."""
        return _netted(self.signed_balance)


def _signed(amount: Decimal, direction: str) -> Decimal:
    return amount if direction == Direction.SOURCE_TO_TARGET else -amount


def _netted(signed: Decimal) -> tuple[Decimal, str]:
    return (signed, Direction.SOURCE_TO_TARGET) if signed >= 0 else (-signed, Direction.TARGET_TO_SOURCE)


def _share_description(base: Decimal, share: Decimal) -> str:
    return f"revenue share {share * 100:.2f}% of {base} CNY spent at the target partner by granted users"


def _draft(
    deal: Deal, period: date, figures: SettlementFigures, start: datetime, end: datetime, now: datetime
) -> SettlementSheet:
    """Build the unsaved statement and lines for a deal's month from its figures."""
    lines = []
    for price in sorted(figures.grants) or [deal.settlement_price]:
        count = figures.grants.get(price, 0)
        lines.append(
            SettlementLine(
                kind=Kind.GRANTS,
                description=f"{count} confirmed grants at {price} CNY",
                quantity=Decimal(count),
                unit_amount=price,
                amount=price * count,
                direction=Direction.SOURCE_TO_TARGET,
                recorded_at=now,
            )
        )
    share = deal.revenue_share
    lines.append(
        SettlementLine(
            kind=Kind.REVENUE_SHARE,
            description=_share_description(figures.revenue_base, share),
            quantity=figures.revenue_base,
            unit_amount=share,
            amount=to_cny(figures.revenue_base * share),
            direction=Direction.TARGET_TO_SOURCE,
            recorded_at=now,
        )
    )
    grants_amount = sum((line.amount for line in lines if line.kind == Kind.GRANTS), ZERO)
    revenue_share_amount = lines[-1].amount
    net_amount, net_direction = _netted(grants_amount - revenue_share_amount)
    statement = SettlementStatement(
        deal=deal,
        period=period,
        status=SettlementStatement.Status.DRAFT,
        timezone=str(deal_zone(deal)),
        period_start=start,
        period_end=end,
        source_partner=deal.source_partner,
        target_partner=deal.target_partner,
        grants_count=sum(figures.grants.values()),
        grants_amount=grants_amount,
        revenue_base=figures.revenue_base,
        revenue_share=share,
        revenue_share_amount=revenue_share_amount,
        redemptions=figures.redemptions,
        net_amount=net_amount,
        net_direction=net_direction,
    )
    return SettlementSheet(statement, tuple(lines))


def settlements_compute(
    *, deals: Iterable[Deal], period: date, now: datetime | None = None
) -> dict[int, SettlementSheet]:
    """Compute draft statements of many deals for one month, in a few queries per distinct time zone; store nothing."""
    now = now or timezone.now()
    deals = list(deals)
    bounds = {deal.pk: period_bounds(period, deal_zone(deal)) for deal in deals}
    figures = settlement_figures(
        [SettlementWindow(deal.pk, deal.target_partner_id, *bounds[deal.pk]) for deal in deals]
    )
    return {deal.pk: _draft(deal, period, figures[deal.pk], *bounds[deal.pk], now) for deal in deals}


def settlement_compute(*, deal: Deal, period: date, now: datetime | None = None) -> SettlementSheet:
    """Compute the draft statement of a deal's month from the data as it is now; store nothing."""
    return settlements_compute(deals=[deal], period=period, now=now)[deal.pk]


def settlements_get(*, deals: Iterable[Deal], period: date, now: datetime | None = None) -> dict[int, SettlementSheet]:
    """Return each deal's issued statement for the month with its lines, or its draft where none was issued."""
    deals = list(deals)
    issued = {
        statement.deal_id: statement
        for statement in SettlementStatement.objects.filter(deal__in=deals, period=period)
        .select_related("deal", "source_partner", "target_partner")
        .prefetch_related("lines")
    }
    sheets = settlements_compute(deals=[deal for deal in deals if deal.pk not in issued], period=period, now=now)
    sheets.update(
        {deal_id: SettlementSheet(statement, tuple(statement.lines.all())) for deal_id, statement in issued.items()}
    )
    return sheets


def settlement_get(*, deal: Deal, period: date, now: datetime | None = None) -> SettlementSheet:
    """Return the deal's issued statement for the month, or the draft computed now if it was not issued."""
    return settlements_get(deals=[deal], period=period, now=now)[deal.pk]
