"""What the door admits: amounts of money and event times within bounds every pipeline stage can hold.

One implementation for the API and the CSV imports. Money arrives as text and is checked as
text (no float ever touches it): digits with at most two decimals, no sign, no comma, at most
``CROSSMKT_MAX_AMOUNT`` (a business ceiling, never above what the money column holds). Times
must fall in a plausible window: from ``CROSSMKT_EARLIEST_EVENT_TIME`` to now plus
``CROSSMKT_FUTURE_TOLERANCE``; the window always lies inside what NumPy's ``datetime64[ns]``
(1677-09-21 to 2262-04-11) holds, so no accepted time can overflow a later computation.

The checks are functions of one value returning the problem as text (or None): callers that
check a column call them once per distinct value.
"""

import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .money import to_cny

# The money column: 14 digits, two of them decimals (crossmkt_site.money.MoneyField).
MONEY_COLUMN_MAX = Decimal("999999999999.99")
# NumPy datetime64[ns] ends on 2262-04-11; a window reaching past this could not be computed on.
LATEST_REPRESENTABLE = datetime(2262, 1, 1, tzinfo=UTC)
EARLIEST_REPRESENTABLE = datetime(1678, 1, 1, tzinfo=UTC)

# [0-9], not \d: \d also matches other scripts' digits, which the database cannot read as numbers.
_MONEY = re.compile(r"\+?[0-9]+(\.[0-9]{1,2})?")
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_NEGATIVE_ZERO = re.compile(r"-0*(\.0*)?")
_DECIMAL_COMMA = re.compile(r"[0-9]+,[0-9]{1,2}")


def max_amount() -> Decimal:
    """Return the largest amount accepted, from CROSSMKT_MAX_AMOUNT; refuse a ceiling the column cannot hold."""
    ceiling = to_cny(str(settings.CROSSMKT_MAX_AMOUNT))
    if not Decimal("0") < ceiling <= MONEY_COLUMN_MAX:
        raise ImproperlyConfigured(
            f"CROSSMKT_MAX_AMOUNT must be above 0 and at most {MONEY_COLUMN_MAX} (the money column); it is {ceiling}"
        )
    return ceiling


def money_problem(text: str, *, ceiling: Decimal | None = None) -> str | None:
    """Return why ``text`` is not an amount of CNY we accept, or None when it is one."""
    if "," in text:
        if _DECIMAL_COMMA.fullmatch(text.lstrip("+")):
            return f'decimal commas are not accepted: write "{text.lstrip("+").replace(",", ".")}", not "{text}"'
        return f"commas are not accepted in amounts (no decimal commas, no thousands separators): {text}"
    if not _NUMBER.fullmatch(text):
        return f"not a number: {text!r}"
    if text.startswith("-") and not _NEGATIVE_ZERO.fullmatch(text):
        return f"negative amount: {text}"
    if not (_MONEY.fullmatch(text) or _NEGATIVE_ZERO.fullmatch(text)):
        return f"not an amount in CNY with at most two decimals: {text}"
    ceiling = max_amount() if ceiling is None else ceiling
    if Decimal(text) > ceiling:
        return f"above the largest amount accepted, {ceiling}: {text}"
    return None


def money_parse(text: str) -> Decimal:
    """Return ``text`` as CNY; raise ValueError saying what is wrong with it."""
    problem = money_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return to_cny(text.lstrip("+-"))


def event_time_window(now: datetime) -> tuple[datetime, datetime]:
    """Return the earliest and the latest time accepted for something that happened, as of ``now``."""
    earliest = settings.CROSSMKT_EARLIEST_EVENT_TIME
    if earliest.tzinfo is None:
        raise ImproperlyConfigured("CROSSMKT_EARLIEST_EVENT_TIME needs a time zone, e.g. 1990-01-01T00:00:00+08:00")
    earliest = max(earliest, EARLIEST_REPRESENTABLE)
    latest = min(now + settings.CROSSMKT_FUTURE_TOLERANCE, LATEST_REPRESENTABLE)
    return earliest, latest


def describe_window(earliest: datetime, latest: datetime) -> str:
    """Say the window in words a partner can act on, in TIME_ZONE."""
    return f"{_iso(earliest)} to {_iso(latest)} (now plus {_tolerance()})"


def event_time_problem(value: datetime, *, now: datetime) -> str | None:
    """Return why an aware time is outside the window, or None when it is inside."""
    earliest, latest = event_time_window(now)
    if earliest <= value <= latest:
        return None
    return out_of_window_message(_iso(value), earliest, latest, future=value > latest)


def out_of_window_message(shown: str, earliest: datetime, latest: datetime, *, future: bool) -> str:
    """Say that a time is too early or in the future, with the window it must fall in."""
    when = "in the future" if future else "too early"
    return f"{when}, outside the accepted window {describe_window(earliest, latest)}: {shown}"


def _iso(value: datetime) -> str:
    return value.astimezone(zoneinfo.ZoneInfo(settings.TIME_ZONE)).isoformat(timespec="seconds")


def _tolerance() -> str:
    tolerance: timedelta = settings.CROSSMKT_FUTURE_TOLERANCE
    hours = tolerance.total_seconds() / 3600
    if hours % 24 == 0:
        days = int(hours // 24)
        return f"{days} day" + ("" if days == 1 else "s")
    return f"{hours:g} hours"
