"""Conversions partners report: recorded once per (partner, conversion id); a repeat returns the first report."""

from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction

from crossmkt_site.bounds import event_time_problem, money_problem
from crossmkt_site.errors import ApplicationError
from crossmkt_site.money import to_cny

from ..models import Conversion, EndUser
from .live import pending_users_record


def _same_report(conversion: Conversion, values: dict) -> bool:
    return all(getattr(conversion, name) == value for name, value in values.items())


def _first_report(*, partner_id: int, conversion_id: str, values: dict) -> Conversion:
    conversion = Conversion.objects.get(partner_id=partner_id, conversion_id=conversion_id)
    if not _same_report(conversion, values):
        raise ApplicationError(
            f"conversion {conversion_id!r} was already reported with different data; use a new conversion_id",
            code="conflict",
            field="conversion_id",
            status=409,
        )
    return conversion


def conversion_amount_check(*, amount: Decimal, occurred_at: datetime, now: datetime) -> Decimal:
    """Return the amount in CNY; refuse a negative amount, one above the ceiling, or a time outside the window.

    The bounds are ``crossmkt_site.bounds``': the largest amount accepted, and plausible times from
    CROSSMKT_EARLIEST_EVENT_TIME to now plus CROSSMKT_FUTURE_TOLERANCE.
    """
    amount = to_cny(amount)
    if amount < 0:
        raise ApplicationError("a conversion amount cannot be negative", field="amount")
    problem = money_problem(str(amount))
    if problem is not None:
        raise ApplicationError(problem, field="amount")
    problem = event_time_problem(occurred_at, now=now)
    if problem is not None:
        raise ApplicationError(f"occurred_at is {problem}", field="occurred_at", status=422)
    return amount


def conversion_create(
    *,
    partner_id: int,
    conversion_id: str,
    user: EndUser,
    amount: Decimal,
    occurred_at: datetime,
    offer_id: int | None = None,
    campaign_id: int | None = None,
) -> tuple[Conversion, bool]:
    """Store a checked conversion once per (partner, conversion id); return it and whether it is new.

    A repeat with the same data returns the first report; with different data it is a 409.
    """
    values = {
        "user": user,
        "amount": amount,
        "occurred_at": occurred_at,
        "offer_id": offer_id,
        "campaign_id": campaign_id,
    }
    if Conversion.objects.filter(partner_id=partner_id, conversion_id=conversion_id).exists():
        return _first_report(partner_id=partner_id, conversion_id=conversion_id, values=values), False
    try:
        with transaction.atomic():
            conversion = Conversion.objects.create(partner_id=partner_id, conversion_id=conversion_id, **values)
            pending_users_record(user_ids=[user.pk])
            return conversion, True
    except IntegrityError:
        # The same report arrived twice at once and the other request committed first.
        if not Conversion.objects.filter(partner_id=partner_id, conversion_id=conversion_id).exists():
            raise
        return _first_report(partner_id=partner_id, conversion_id=conversion_id, values=values), False
