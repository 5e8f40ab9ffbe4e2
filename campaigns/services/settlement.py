"""Issuing and correcting settlement statements: a finished month frozen, and what is found later booked as corrections.

Issuing freezes a month: the statement copies the month's bounds, the partners and the
share, and its lines never change (the database refuses it on PostgreSQL). Anything
found later (a grant confirmed after issue, a late event, a grant reversed by hand) is
booked by ``settlement_correct`` as correction lines pointing at the line they correct,
bringing the statement's balance to what a fresh computation of the same frozen month
gives. The arithmetic of a month is ``campaigns.selectors.settlement``.
"""

from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from crossmkt_site.errors import ApplicationError
from crossmkt_site.money import ZERO, to_cny

from ..models import Deal, Direction, SettlementLine, SettlementStatement
from ..selectors.settlement import (
    SettlementFigures,
    SettlementSheet,
    SettlementWindow,
    deal_zone,
    period_bounds,
    settlement_compute,
    settlement_figures,
)

Kind = SettlementLine.Kind


def settlement_issue(*, deal: Deal, period: date, now: datetime | None = None, issued_by: str = "") -> SettlementSheet:
    """Freeze a deal's finished month as an issued statement; issuing a month again returns the statement it has."""
    now = now or timezone.now()
    _start, end = period_bounds(period, deal_zone(deal))
    label = f"{period:%Y-%m}"
    if end > now:
        raise ApplicationError(
            f"{label} has not ended yet in {deal.timezone}; a month can be issued once it is over "
            "(a draft is shown until then)",
            code="period_open",
            field="period",
        )
    if end <= deal.starts_at:
        raise ApplicationError(
            f"deal {deal.slug!r} starts after {label}; there is nothing to settle", code="invalid", field="period"
        )
    with transaction.atomic():
        # The deal's row lock makes concurrent issuers of the same month wait and then find the statement.
        deal = (
            Deal.objects.select_for_update(of=("self",))
            .select_related("source_partner", "target_partner")
            .get(pk=deal.pk)
        )
        existing = SettlementStatement.objects.filter(deal=deal, period=period).first()
        if existing is not None:
            return SettlementSheet(existing, tuple(existing.lines.order_by("pk")))
        draft = settlement_compute(deal=deal, period=period, now=now)
        statement = draft.statement
        statement.status, statement.issued_at = SettlementStatement.Status.ISSUED, now
        statement.issued_by = issued_by[:150]
        statement.save()
        for line in draft.lines:
            line.statement = statement
        SettlementLine.objects.bulk_create(draft.lines)
    return SettlementSheet(statement, tuple(statement.lines.order_by("pk")))


def settlement_correct(
    *, statement: SettlementStatement, now: datetime | None = None, reason: str = ""
) -> list[SettlementLine]:
    """Book correction lines that bring an issued statement to what its frozen month adds up to now; return them.

    The month's bounds, partners and revenue share are the statement's own; only the data
    is read afresh. Running it again without new data books nothing.
    """
    now = now or timezone.now()
    with transaction.atomic():
        statement = SettlementStatement.objects.select_for_update().get(pk=statement.pk)
        if statement.status != SettlementStatement.Status.ISSUED:
            raise ApplicationError(
                "only an issued statement can be corrected; a draft is simply computed again",
                code="not_issued",
                field="statement",
            )
        lines = list(statement.lines.select_related("corrects").order_by("pk"))
        window = SettlementWindow(
            statement.deal_id, statement.target_partner_id, statement.period_start, statement.period_end
        )
        figures = settlement_figures([window])[statement.deal_id]
        suffix = f" ({reason})" if reason else ""
        corrections = [
            *_grant_corrections(lines, figures, now, suffix),
            *_revenue_corrections(statement, lines, figures, now, suffix),
        ]
        for line in corrections:
            line.statement = statement
        SettlementLine.objects.bulk_create(corrections)
    return corrections


def _root_kind(line: SettlementLine) -> str:
    if line.kind != Kind.CORRECTION:
        return line.kind
    if line.corrects is None:  # a correction always names the line it corrects
        raise ValueError(f"correction line {line.pk} corrects no line")
    return line.corrects.kind


def _grant_corrections(
    lines: list[SettlementLine], figures: SettlementFigures, now: datetime, suffix: str
) -> list[SettlementLine]:
    originals = [line for line in lines if line.kind == Kind.GRANTS]
    booked: dict[Decimal, Decimal] = defaultdict(Decimal)
    for line in lines:
        if _root_kind(line) == Kind.GRANTS:
            booked[line.unit_amount.quantize(Decimal("0.01"))] += line.quantity
    corrections = []
    for price in sorted(set(booked) | set(figures.grants)):
        change = Decimal(figures.grants.get(price, 0)) - booked[price]
        if not change:
            continue
        corrected = next((line for line in originals if line.unit_amount == price), originals[0])
        corrections.append(
            SettlementLine(
                kind=Kind.CORRECTION,
                description=f"confirmed grants at {price} CNY recounted: {change:+.0f}{suffix}",
                quantity=change,
                unit_amount=price,
                amount=price * change,
                direction=Direction.SOURCE_TO_TARGET,
                corrects=corrected,
                recorded_at=now,
            )
        )
    return corrections


def _revenue_corrections(
    statement: SettlementStatement, lines: list[SettlementLine], figures: SettlementFigures, now: datetime, suffix: str
) -> list[SettlementLine]:
    original = next(line for line in lines if line.kind == Kind.REVENUE_SHARE)
    booked = [line for line in lines if _root_kind(line) == Kind.REVENUE_SHARE]
    base_change = figures.revenue_base - sum((line.quantity for line in booked), ZERO)
    # The corrected total is the share of the corrected base, rounded once, as a fresh statement would have it.
    amount_change = to_cny(figures.revenue_base * statement.revenue_share) - sum((line.amount for line in booked), ZERO)
    if not base_change and not amount_change:
        return []
    return [
        SettlementLine(
            kind=Kind.CORRECTION,
            description=f"revenue of granted users recounted: {base_change:+} CNY{suffix}",
            quantity=base_change,
            unit_amount=statement.revenue_share,
            amount=amount_change,
            direction=Direction.TARGET_TO_SOURCE,
            corrects=original,
            recorded_at=now,
        )
    ]
