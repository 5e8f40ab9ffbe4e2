"""Serializer fields the API's serializers share."""

import re
from decimal import Decimal

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from crossmkt_site.bounds import MONEY_COLUMN_MAX, event_time_window, money_problem, out_of_window_message
from crossmkt_site.errors import ApplicationError


class RelatedSlugsField(serializers.ListField):
    """Show a many-to-many relation as a list of one text attribute of the related rows (prefetch it)."""

    def __init__(self, *, attribute: str, **kwargs):
        self.attribute = attribute
        super().__init__(child=serializers.CharField(), read_only=True, **kwargs)

    def to_representation(self, manager):
        return [getattr(row, self.attribute) for row in manager.all()]


MONEY_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,2})?$"


@extend_schema_field(
    {
        "type": "string",
        "pattern": MONEY_PATTERN,
        "example": "199.00",
        "description": (
            "CNY as a decimal string with at most two decimals, not negative, with a decimal point "
            "(no comma) and at most the largest amount accepted (CROSSMKT_MAX_AMOUNT, 1000000.00 by default)."
        ),
    }
)
class MoneyInputField(serializers.Field):
    """Read an amount of CNY sent as a decimal string ("199.00"), within ``crossmkt_site.bounds``' rules.

    Numbers are refused, so no float ever carries money.
    """

    default_error_messages = {
        "invalid": 'send an amount in CNY as a string with at most two decimals and no sign, e.g. "199.00"',
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        # Say what is wrong (a comma, a sign) and how to write it.
        problem = money_problem(data, ceiling=MONEY_COLUMN_MAX)
        if problem is not None:
            raise serializers.ValidationError(problem, code="invalid")
        if not re.fullmatch(MONEY_PATTERN, data):
            self.fail("invalid")
        # Well-formed (the schema's pattern) but above the business ceiling: a 422, like a time out of its window.
        problem = money_problem(data)
        if problem is not None:
            raise ApplicationError(problem, field=self.field_name, status=422)
        return Decimal(data)

    def to_representation(self, value):
        return str(value)


class StrictCharField(serializers.CharField):
    """A string that must arrive as a JSON string: a number or a boolean is refused, not turned into text."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class EventTimeField(serializers.DateTimeField):
    """An ISO 8601 time of something that happened (read in TIME_ZONE without an offset).

    A time so far off that it cannot even be converted to UTC (years 1 or 9999 with an offset) is
    refused like any other time outside the window of plausible times, with the window named (422);
    the service checks the window for every other time.
    """

    def enforce_timezone(self, value):
        try:
            return super().enforce_timezone(value)
        except serializers.ValidationError as error:
            if error.get_codes() != ["overflow"]:
                raise
            earliest, latest = event_time_window(timezone.now())
            message = out_of_window_message(value.isoformat(), earliest, latest, future=value.year > earliest.year)
            raise ApplicationError(f"{self.field_name} is {message}", field=self.field_name, status=422) from None
